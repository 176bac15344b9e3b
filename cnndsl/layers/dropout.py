"""Dropout of whole parts, beside Dropout (norm.py): Dropout1d/2d/3d (whole channels) and StochasticDepth (whole samples or batches).

Both are the identity in eval; in training they multiply the input by a mask that is
constant over some axes, drawn from the context's generator (NumPy) or torch's, with the
kept values scaled by 1 / (1 - p) so that the expectation is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..shapes import Shape
from .base import Args, ArgSpec, LayerError, LayerKind, TorchCall, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from ..numpy_ops import Backward, NpContext, Tensors
else:
    from ..lazy import numpy as np


def _check_probability(owner: str, args: Args) -> None:
    if not 0 <= args["p"] <= 1:
        raise LayerError(
            f"{owner}: p must be between 0 and 1; got {args['p']:g}",
            "p is the probability of dropping (0: never, 1: always)",
            arg="p",
        )


class _MaskedDropout(LayerKind):
    """x * mask in training, the mask constant over the axes `mask_shape` leaves at 1."""

    family = "regularization"
    np_supported = True

    def mask_shape(self, args: Args, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        p = args["p"]
        if not train or p == 0:
            ctx.save(mask=None)
            return x
        # Kept with probability 1 - p (as Dropout's draw), the kept scaled by 1 / (1 - p).
        keep = ctx.rng.random(self.mask_shape(args, x.shape), dtype=np.float32) >= p
        mask = keep * np.asarray(1 / (1 - p) if p < 1 else 0.0, x.dtype)
        ctx.save(mask=mask)
        # As (N, C or 1, positions): one factor per contiguous run, faster than broadcasting (N, C, 1, 1).
        rows = x.reshape(mask.shape[0], mask.shape[1], -1)
        return np.multiply(rows, mask.reshape(mask.shape[0], mask.shape[1], 1), out=rows if ctx.inplace else None).reshape(
            x.shape
        )

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        mask = ctx.saved["mask"]
        if mask is None:
            return dy, {}
        rows = dy.reshape(mask.shape[0], mask.shape[1], -1)
        return (rows * mask.reshape(mask.shape[0], mask.shape[1], 1)).reshape(dy.shape), {}


@register
class Dropout2d(_MaskedDropout):
    """Channel dropout (nn.Dropout2d; Dropout1d on a signal, Dropout3d on a volume): zeroes whole channels of each sample with probability p while training.

    Args: p=0.5 (0 <= p <= 1).
    Shape: unchanged. Each spelling is for its rank, as in PyTorch: `Dropout1d` for CxL,
    `Dropout2d` for CxHxW, `Dropout3d` for CxDxHxW.
    Example: `Conv(64, 3, pad=1), ReLU, Dropout2d(0.1)`.
    """

    name = "Dropout2d"
    attribute_stem = "dropout"
    aliases = ("Dropout1d", "Dropout3d")
    spelling_ranks = {"Dropout1d": (1,), "Dropout2d": (2,), "Dropout3d": (3,)}
    input_rank = "spatial"
    signature = (ArgSpec("p", "float", 0.5), ArgSpec("inplace", "bool", False, role="ignored"))

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        _check_probability("Dropout2d", args)
        if shape is not None and shape.has_space:  # for `describe`, which sees only the arguments: Dropout1d on a signal
            return {**args, "rank": shape.spatial_rank}
        return args

    def mask_shape(self, args: Args, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], shape[1], *(1,) * (len(shape) - 2))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # p always written, so a network parameter can drive it in generated code.
        return TorchCall(f"nn.Dropout{in_shape.spatial_rank}d", (), (("p", args["p"]),))

    def describe(self, args: Args) -> str:
        return f"Dropout{args.get('rank', 2)}d {args['p']:g}"


@register
class StochasticDepth(_MaskedDropout):
    """Stochastic depth (torchvision.ops.StochasticDepth): drops the whole input of each sample (`row`) or of the batch (`batch`) with probability p while training.

    Args: p (0 <= p <= 1; any expression, so a rate rising block by block can be
    written), mode=row (`row` or `batch`). The kept values are scaled by 1 / (1 - p); the
    identity in eval. Put it at the end of a residual branch: `Add[ ..., StochasticDepth(p) | ]`.
    Shape: unchanged.
    Example: `Add[ Conv(64, 3, pad=1), BN, StochasticDepth(0.1) | Identity ]`.
    """

    name = "StochasticDepth"
    attribute_stem = "stochastic_depth"  # torchvision's
    signature = (ArgSpec("p", "float"), ArgSpec("mode", "choice", "row", choices=("row", "batch")))

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        _check_probability("StochasticDepth", args)
        return args

    def mask_shape(self, args: Args, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] if args["mode"] == "row" else 1,) + (1,) * (len(shape) - 1)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # cnndsl.torch_modules.StochasticDepth: torchvision.ops.StochasticDepth's computation, without torchvision.
        return TorchCall("StochasticDepth", (args["p"],), (("mode", args["mode"]),))

    def describe(self, args: Args) -> str:
        return f"StochasticDepth {args['p']:g}" + (" batch" if args["mode"] == "batch" else "")
