"""Merges of parallel branches: Add, Concat and Mul."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..shapes import Shape
from .base import Args, LayerError, MergeKind, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import NpContext
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops


def _listing(shapes: list[Shape]) -> str:
    return ", ".join(str(s) for s in shapes)


def _first_disagreeing(shapes: list[Shape], agree: Callable[[Shape, Shape], bool]) -> int | None:
    """The index of the first branch whose shape does not agree with branch 0's."""
    return next((i for i, s in enumerate(shapes) if not agree(shapes[0], s)), None)


def _projection_hint(main: Shape, other: Shape, index: int) -> str:
    """How branch `index` can be made to match branch 0 before an Add: a 1x1 projection, strided
    only where the sizes differ by a whole factor (a stride cannot fix channels, a 1x1 Conv can)."""
    general = "every branch of Add must produce the same shape"
    if not (main.has_space and main.spatial_rank == other.spatial_rank):
        return f"{general}; branch {index} gives {other.describe()}, branch 0 {main.describe()}"
    channels_differ = main.channels != other.channels
    sizes, other_sizes = main.spatial, other.spatial
    one = "x".join("1" * main.spatial_rank)
    if sizes == other_sizes:
        return f"{general}: a {one} projection `Conv({main.channels}, 1)` at the end of branch {index} turns {other} into {main}"
    factors = {o // s if o % s == 0 else 0 for s, o in zip(sizes, other_sizes, strict=True)}
    if len(factors) != 1 or 0 in factors:
        what = "lengths" if main.spatial_rank == 1 else "heights and widths" if main.spatial_rank == 2 else "spatial sizes"
        return f"{general}; branch {index} gives {other}, branch 0 {main}: make their {what} agree first"
    stride = factors.pop()
    if channels_differ:
        return (
            f"{general}: a strided {one} projection `Conv({main.channels}, 1, stride={stride})` at the end of branch {index} "
            f"turns {other} into {main}"
        )
    return f"{general}: `AvgPool({stride})` or `Conv({main.channels}, 1, stride={stride})` at the end of branch {index} turns {other} into {main}"


@register
class Add(MergeKind):
    """Element-wise sum of the branches (residual connections); shapes must agree.

    Example: `Add[ Conv(64, 3, pad=1), BN | Identity ]`.
    """

    name = "Add"
    torch_inplace = True
    np_supported = True

    def merge(self, shapes: list[Shape]) -> Shape:
        odd = _first_disagreeing(shapes, lambda a, b: a == b)
        if odd is not None:
            raise LayerError(
                f"Add: branch shapes disagree: {_listing(shapes)}",
                _projection_hint(shapes[0], shapes[odd], odd),
                recovered=shapes[0],
                branch=odd,
            )
        return shapes[0]

    def np_merge_forward(self, args: Args, xs: list[np.ndarray], ctx: NpContext) -> np.ndarray:
        ctx.save(count=len(xs))
        if len(xs) == 1:
            return xs[0]
        y = xs[0] if ctx.inplace else xs[0] + xs[1]
        for x in xs[1 if ctx.inplace else 2 :]:
            y += x
        return y

    def np_merge_backward(self, args: Args, ctx: NpContext, dy: np.ndarray) -> list[np.ndarray]:
        return [dy] * ctx.saved["count"]


@register
class Concat(MergeKind):
    """Concatenation of the branches along channels (features, for flat input).

    Example: `Concat[ Conv(64, 1) | Conv(64, 3, pad=1) ]`.
    """

    name = "Concat"
    np_supported = True

    def merge(self, shapes: list[Shape]) -> Shape:
        first = shapes[0]
        odd = _first_disagreeing(shapes, lambda a, b: len(a) == len(b) and a[1:] == b[1:])
        if odd is not None:
            same_rank = all(len(s) == len(first) for s in shapes)
            raise LayerError(
                f"Concat: branch shapes disagree outside the channel axis: {_listing(shapes)}",
                "Concat joins along channels; the other dimensions (height and width) must be equal",
                recovered=Shape((sum(s[0] for s in shapes), *first[1:])) if same_rank else None,
                branch=odd,
            )
        return Shape((sum(s[0] for s in shapes), *first[1:]))

    def np_merge_forward(self, args: Args, xs: list[np.ndarray], ctx: NpContext) -> np.ndarray:
        ctx.save(sizes=[x.shape[1] for x in xs])
        return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=1)

    def np_merge_backward(self, args: Args, ctx: NpContext, dy: np.ndarray) -> list[np.ndarray]:
        return np.split(dy, np.cumsum(ctx.saved["sizes"])[:-1], axis=1)


@register
class Mul(MergeKind):
    """Element-wise product of the branches, with broadcasting (squeeze-excitation gates).

    Example: `Mul[ Identity | GlobalAvgPool, Conv(16, 1), ReLU, Conv(64, 1), Sigmoid ]`.
    """

    name = "Mul"
    np_supported = True

    def merge(self, shapes: list[Shape]) -> Shape:
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise LayerError(f"Mul: branches differ in rank: {_listing(shapes)}", "Mul multiplies tensors of the same rank")
        dims = []
        for axis in range(rank):
            sizes = {s[axis] for s in shapes} - {1}
            if len(sizes) > 1:
                raise LayerError(
                    f"Mul: branch shapes do not broadcast: {_listing(shapes)}",
                    "each dimension must be equal or 1 (for example 64x56x56 and 64x1x1)",
                )
            dims.append(sizes.pop() if sizes else 1)
        return Shape(dims)

    def np_merge_forward(self, args: Args, xs: list[np.ndarray], ctx: NpContext) -> np.ndarray:
        ctx.save(xs=xs)
        y = xs[0]
        for index, x in enumerate(xs[1:]):
            in_place = index > 0 or (ctx.inplace and np.broadcast_shapes(y.shape, x.shape) == y.shape)
            y = np.multiply(y, x, out=y if in_place else None)
        return y

    def np_merge_backward(self, args: Args, ctx: NpContext, dy: np.ndarray) -> list[np.ndarray]:
        xs = ctx.saved["xs"]
        grads = []
        for i, x in enumerate(xs):
            grad = dy
            for j, other in enumerate(xs):
                if j != i:
                    grad = grad * other
            grads.append(ops.reduce_to(grad, x.shape))
        return grads
