"""Pooling: windowed max/average pooling and adaptive/global average and max pooling."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..receptive import Field
from ..shapes import Shape, Sizes
from .base import KINDS, Args, ArgSpec, LayerError, LayerKind, SameAs, TorchCall, pair_text, register, spatial_tuple
from .conv import WindowedKind, describe_window, np_geometry, torch_module, torch_pair, windowed_shape

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops

_POOL_SIGNATURE = (
    ArgSpec("kernel", "pair", 2, minimum=1, keywords=("kernel_size",)),
    ArgSpec("stride", "pair", SameAs("kernel"), minimum=1),
    ArgSpec("pad", "pad", 0, minimum=0, keywords=("padding",)),
    ArgSpec("ceil", "bool", False, keywords=("ceil_mode",)),
)
_TORCH_MAXPOOL_SIGNATURE = (
    ArgSpec("kernel_size", "pair", minimum=1, target="kernel"),
    ArgSpec("stride", "pair", SameAs("kernel_size"), minimum=1),
    ArgSpec("padding", "pad", 0, minimum=0, target="pad"),
    ArgSpec("dilation", "pair", 1, minimum=1, role="fixed"),
    ArgSpec("return_indices", "bool", False, role="fixed"),
    ArgSpec("ceil_mode", "bool", False, target="ceil"),
)
_TORCH_AVGPOOL_SIGNATURE = (
    ArgSpec("kernel_size", "pair", minimum=1, target="kernel"),
    ArgSpec("stride", "pair", SameAs("kernel_size"), minimum=1),
    ArgSpec("padding", "pad", 0, minimum=0, target="pad"),
    ArgSpec("ceil_mode", "bool", False, target="ceil"),
    ArgSpec("count_include_pad", "bool", True, role="fixed"),
)


class WindowPool(WindowedKind):
    family = "pool"
    signature = _POOL_SIGNATURE

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        out = super().resolve(args, shape)
        for axis in range(len(out["kernel"])):
            if out["pad"][axis] * 2 > out["kernel"][axis]:
                raise LayerError(
                    f"{self.name}: pad should be at most half the kernel; got pad {out['pad'][axis]} with kernel {out['kernel'][axis]}",
                    "PyTorch refuses larger padding for pooling",
                    arg="pad",
                )
        return out

    def infer(self, args: Args, shape: Shape) -> Shape:
        return windowed_shape(self.name, self.window(args), shape, shape.channels)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, object], ...] = ()
        if args["stride"] != args["kernel"]:  # PyTorch's stride defaults to the kernel too
            kwargs += (("stride", torch_pair(args["stride"])),)
        if any(args["pad"]):
            kwargs += (("padding", torch_pair(args["pad"])),)
        if args["ceil"]:
            kwargs += (("ceil_mode", True),)
        return TorchCall(torch_module(self.name, in_shape.spatial_rank), (torch_pair(args["kernel"]),), kwargs)

    def describe(self, args: Args) -> str:
        text = describe_window(self.name, args)
        return text + " ceil" if args["ceil"] else text


@register
class MaxPool(WindowPool):
    """Max pooling (nn.MaxPool1d/2d/3d, by the input); padding counts as -inf.

    Args: kernel=2, stride=kernel, pad=0, ceil=false.
    Shape: C x H x W -> C x H' x W' (C x L and C x D x H x W alike).
    Example: `MaxPool(3, stride=2, pad=1)`.
    """

    name = "MaxPool"
    np_supported = True
    aliases = ("Pool", "MaxPool2d", "MaxPool1d", "MaxPool3d")
    spelling_signatures = {spelling: _TORCH_MAXPOOL_SIGNATURE for spelling in ("MaxPool2d", "MaxPool1d", "MaxPool3d")}
    spelling_ranks = {"MaxPool1d": (1,), "MaxPool2d": (2,), "MaxPool3d": (3,)}

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        out_hw = np_geometry(args, x, 1).out_hw
        ctx.save(in_hw=x.shape[2:])
        return ops.maxpool_forward(x, args["kernel"], args["stride"], args["pad"], out_hw, ctx)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return ops.maxpool_backward(ctx, args["kernel"], args["stride"], args["pad"], ctx.saved["in_hw"], dy), {}


@register
class AvgPool(WindowPool):
    """Average pooling (nn.AvgPool1d/2d/3d, by the input); padding counts as zeros in the average.

    Args: kernel=2, stride=kernel, pad=0, ceil=false.
    Shape: C x H x W -> C x H' x W' (C x L and C x D x H x W alike).
    Example: `AvgPool(2)`.
    """

    name = "AvgPool"
    np_supported = True
    aliases = ("AvgPool2d", "AvgPool1d", "AvgPool3d")
    spelling_signatures = {spelling: _TORCH_AVGPOOL_SIGNATURE for spelling in ("AvgPool2d", "AvgPool1d", "AvgPool3d")}
    spelling_ranks = {"AvgPool1d": (1,), "AvgPool2d": (2,), "AvgPool3d": (3,)}

    def infer(self, args: Args, shape: Shape) -> Shape:
        out = super().infer(args, shape)
        # nn.AvgPool3d (unlike 1d/2d and the max pools) refuses a volume smaller than the kernel
        # before padding: "input image (T: 2 H: 9 W: 9) smaller than kernel size".
        if shape.spatial_rank == 3 and any(size < k for size, k in zip(shape.spatial, args["kernel"], strict=True)):
            raise LayerError(
                f"AvgPool: PyTorch's AvgPool3d needs the unpadded volume at least as large as the kernel; "
                f"got kernel {pair_text(args['kernel'])} on {shape.describe()}",
                "use a smaller kernel on the short axes, e.g. (1, 3, 3)",
                arg="kernel",
                recovered=out,
            )
        return out

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        out_hw = np_geometry(args, x, 1).out_hw
        ctx.save(in_hw=x.shape[2:])
        return ops.avgpool_forward(x, args["kernel"], args["stride"], args["pad"], out_hw, ctx)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return ops.avgpool_backward(ctx, args["kernel"], args["stride"], args["pad"], ctx.saved["in_hw"], dy), {}


@register
class GlobalAvgPool(LayerKind):
    """Average over the whole map (nn.AdaptiveAvgPool1d/2d/3d(1), by the input).

    Shape: C x H x W -> C x 1 x 1 (C x L -> C x 1, C x D x H x W -> C x 1 x 1 x 1).
    Example: `GlobalAvgPool, flatten, FC(10)`.
    """

    name = "GlobalAvgPool"
    attribute_stem = "avgpool"  # torchvision's ResNet: avgpool = nn.AdaptiveAvgPool2d((1, 1))
    aliases = ("GAP",)
    family = "pool"
    input_rank = "spatial"
    np_supported = True

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((shape.channels, *(1,) * shape.spatial_rank))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall(torch_module("AdaptiveAvgPool", in_shape.spatial_rank), (1,))

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        ctx.save(shape=x.shape)
        return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        shape = ctx.saved["shape"]
        dx = np.empty(shape, dtype=dy.dtype)
        dx[...] = dy * (1 / math.prod(shape[2:]))
        return dx, {}


@register
class AdaptiveAvgPool(LayerKind):
    """Average pooling to a fixed output size (nn.AdaptiveAvgPool1d/2d/3d, by the input).

    Args: size (an int or a tuple, one entry per spatial axis).
    Shape: C x H x W -> C x size_h x size_w (C x L and C x D x H x W alike).
    Example: `AdaptiveAvgPool(7)`.
    """

    name = "AdaptiveAvgPool"
    attribute_stem = "avgpool"
    aliases = ("AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool3d")
    family = "pool"
    input_rank = "spatial"
    np_supported = True
    signature = (ArgSpec("size", "pair", minimum=1, keywords=("output_size",)),)
    spelling_signatures = {
        spelling: (ArgSpec("output_size", "pair", minimum=1, target="size"),)
        for spelling in ("AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool3d")
    }
    spelling_ranks = {"AdaptiveAvgPool1d": (1,), "AdaptiveAvgPool2d": (2,), "AdaptiveAvgPool3d": (3,)}

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        size = args["size"]
        if shape is None or not shape.has_space:  # a flat input, which the input-rank check reports next
            return {"size": size if isinstance(size, tuple) else (size, size)}
        return {"size": spatial_tuple(self.name, "size", size, shape.spatial_rank)}

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((shape.channels, *args["size"]))

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        # Each bin spans at most ceil(size / out) inputs and bins start floor(size / out) apart.
        # A single bin is global pooling, which keeps the field of the last spatial layer.
        if all(s == 1 for s in args["size"]) or len(field) != len(args["size"]):
            return field
        sizes = shape.spatial
        return tuple(
            axis.window(-(-sizes[a] // args["size"][a]), max(1, sizes[a] // args["size"][a]), 0) for a, axis in enumerate(field)
        )

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall(torch_module("AdaptiveAvgPool", in_shape.spatial_rank), (torch_pair(args["size"]),))

    def describe(self, args: Args) -> str:
        return f"AdaptiveAvgPool {pair_text(args['size'])}"

    # Separable: one (out, in) averaging matrix per spatial axis, one BLAS product each.
    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        matrices = [ops.adaptive_matrix(x.shape[2 + a], size, x.dtype) for a, size in enumerate(args["size"])]
        ctx.save(matrices=matrices)
        return ops.separable_apply(x, matrices)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return ops.separable_apply(dy, [m.T for m in ctx.saved["matrices"]]), {}


_SHORT_BIN = 32
"""Bins up to this long are reduced entry by entry (one element-wise maximum per entry: fast, but a
Python step per entry); longer ones (global-like pooling of a long signal) by one NumPy reduction."""


def _bin_table(size: int, out: int) -> np.ndarray:
    """The (out, longest bin) input indices of nn.AdaptiveMaxPool's bins along an axis of `size` (a short
    bin repeats its last index, which leaves its maximum and the first position of it unchanged)."""
    if size % out == 0:
        k = size // out
        return np.arange(out)[:, None] * k + np.arange(k)[None, :]
    return ops.adaptive_bins(size, out)


def _bin_entries(x: np.ndarray, axis: int, table: np.ndarray) -> list[np.ndarray]:
    """For each j below the longest bin's length, the j-th entry of every bin along `axis` (an array with
    the bins on `axis`): strided views when the bins divide the axis evenly, else one gather each."""
    out, longest = table.shape
    if x.shape[axis] == out * longest:
        return [x[(slice(None),) * axis + (slice(j, None, longest),)] for j in range(longest)]
    return [np.take(x, table[:, j], axis=axis) for j in range(longest)]


def _bin_windows(x: np.ndarray, axis: int, table: np.ndarray) -> np.ndarray:
    """`x` with `axis` split into (bins, entries): a view when the bins divide the axis evenly, else a gather."""
    out, longest = table.shape
    if x.shape[axis] == out * longest:
        return x.reshape(*x.shape[:axis], out, longest, *x.shape[axis + 1 :])
    return np.take(x, table, axis=axis)


def _reduce_long_bins(
    y: np.ndarray, source: np.ndarray | None, axis: int, table: np.ndarray, stride: int, record: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """One axis of adaptive_max_forward for long bins: a max over each window, then the smallest flat
    position among the entries equal to it (the row-major first; a NaN counts as equal, as it wins)."""
    windows = _bin_windows(y, axis, table)
    if not record:
        return windows.max(axis=axis + 1), None
    along = (*table.shape, *(1,) * (y.ndim - 1 - axis))
    if source is None:
        # The first axis reduced: argmax's first maximum (or first NaN) is the row-major first.
        entry = np.expand_dims(windows.argmax(axis=axis + 1), axis + 1)
        best = np.take_along_axis(windows, entry, axis=axis + 1).squeeze(axis + 1)
        return best, (table[:, :1].reshape(table.shape[0], 1, *along[2:]) + entry).squeeze(axis + 1) * stride
    best = windows.max(axis=axis + 1)
    candidates = table.reshape(along) * stride + _bin_windows(source, axis, table)
    equal = windows == np.expand_dims(best, axis + 1)
    equal |= np.isnan(windows)
    return best, np.where(equal, candidates, np.iinfo(np.int64).max).min(axis=axis + 1)


def adaptive_max_forward(x: np.ndarray, sizes: Sizes, ctx: NpContext) -> np.ndarray:
    """nn.AdaptiveMaxPool1d/2d/3d of (N, C, *spatial): the maximum of each bin, separably, one axis
    at a time (the first first: its entries are whole contiguous rows), one element-wise maximum per
    entry of a bin (a loop over the bin length, never over pixels; long bins: `_reduce_long_bins`).

    With backward, the position of PyTorch's choice among equal maxima, the first in row-major
    order, is carried along as a flat index within the sample's channel map (`source`): along one
    axis a later entry wins only when greater, or equal and from an earlier row of the axes already
    reduced (a smaller source), which orders the candidates row-major.
    """
    y = x
    source: np.ndarray | None = None
    for a, out in enumerate(sizes):
        axis = 2 + a
        table = _bin_table(x.shape[axis], out)
        stride = math.prod(x.shape[axis + 1 :])
        if table.shape[1] > _SHORT_BIN:
            y, source = _reduce_long_bins(y, source, axis, table, stride, ctx.record)
            continue
        entries = _bin_entries(y, axis, table)
        y = entries[0].copy()
        if not ctx.record:
            for values in entries[1:]:
                np.maximum(y, values, out=y)
            continue
        # Branch-free updates (masked assignment is several times slower on random masks): j only
        # grows, so the winning entry's j is the maximum of wins * j.
        index = np.min_scalar_type(len(entries)).type
        best = np.zeros(y.shape, index)
        step = np.empty(y.shape, index)
        sources = _bin_entries(source, axis, table) if source is not None else None
        best_source = sources[0].copy() if sources is not None else None
        for j, values in enumerate(entries[1:], start=1):
            wins = values > y
            if sources is not None and best_source is not None:
                wins |= (values == y) & (sources[j] < best_source)
                best_source += (sources[j] - best_source) * wins
            np.maximum(best, np.multiply(wins, index(j), out=step), out=best)
            np.maximum(y, values, out=y)  # a NaN propagates, as in PyTorch
        coordinate = table[:, 0].reshape(-1, *(1,) * (x.ndim - 1 - axis)) + best
        flat = coordinate * stride
        source = flat if best_source is None else flat + best_source
    ctx.save(source=source, shape=x.shape)
    return y


def adaptive_max_backward(ctx: NpContext, dy: np.ndarray) -> np.ndarray:
    """Each output's gradient to its bin's maximum, summed where bins overlap (np.add.at, fast since NumPy 2)."""
    source, shape = ctx.saved["source"], ctx.saved["shape"]
    planes = shape[0] * shape[1]
    positions = math.prod(shape[2:])
    flat = source.reshape(planes, -1) + (np.arange(planes) * positions)[:, None]
    dx = np.zeros(planes * positions, dy.dtype)
    np.add.at(dx, flat.ravel(), dy.ravel())
    return dx.reshape(shape)


@register
class GlobalMaxPool(LayerKind):
    """Maximum over the whole map (nn.AdaptiveMaxPool1d/2d/3d(1), by the input).

    Shape: C x H x W -> C x 1 x 1 (C x L -> C x 1, C x D x H x W -> C x 1 x 1 x 1).
    Example: `GlobalMaxPool, flatten, FC(10)`.
    """

    name = "GlobalMaxPool"
    attribute_stem = "maxpool"
    aliases = ("GMP",)
    family = "pool"
    input_rank = "spatial"
    np_supported = True

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((shape.channels, *(1,) * shape.spatial_rank))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall(torch_module("AdaptiveMaxPool", in_shape.spatial_rank), (1,))

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        flat = x.reshape(*x.shape[:2], -1)
        out_shape = (*x.shape[:2], *(1,) * (x.ndim - 2))
        if not ctx.record:
            return flat.max(axis=2).reshape(out_shape)
        best = flat.argmax(axis=2)
        ctx.save(best=best, shape=x.shape)
        return np.take_along_axis(flat, best[..., None], axis=2).reshape(out_shape)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        shape = ctx.saved["shape"]
        dx = np.zeros((*shape[:2], math.prod(shape[2:])), dtype=dy.dtype)
        np.put_along_axis(dx, ctx.saved["best"][..., None], dy.reshape(*shape[:2], 1), axis=2)
        return dx.reshape(shape), {}


@register
class AdaptiveMaxPool(LayerKind):
    """Max pooling to a fixed output size (nn.AdaptiveMaxPool1d/2d/3d, by the input).

    Args: size (an int or a tuple, one entry per spatial axis).
    Shape: C x H x W -> C x size_h x size_w (C x L and C x D x H x W alike); bin i spans
    floor(i*H/size) to ceil((i+1)*H/size).
    Example: `AdaptiveMaxPool(7)`.
    """

    name = "AdaptiveMaxPool"
    attribute_stem = "maxpool"
    aliases = ("AdaptiveMaxPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool3d")
    family = "pool"
    input_rank = "spatial"
    np_supported = True
    signature = (ArgSpec("size", "pair", minimum=1, keywords=("output_size",)),)
    spelling_signatures = {
        spelling: (
            ArgSpec("output_size", "pair", minimum=1, target="size"),
            ArgSpec("return_indices", "bool", False, role="fixed"),
        )
        for spelling in ("AdaptiveMaxPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool3d")
    }
    spelling_ranks = {"AdaptiveMaxPool1d": (1,), "AdaptiveMaxPool2d": (2,), "AdaptiveMaxPool3d": (3,)}

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return KINDS["AdaptiveAvgPool"].resolve(args, shape)  # the same size argument

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((shape.channels, *args["size"]))

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        return KINDS["AdaptiveAvgPool"].receptive(args, shape, field)  # the same bins

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall(torch_module("AdaptiveMaxPool", in_shape.spatial_rank), (torch_pair(args["size"]),))

    def describe(self, args: Args) -> str:
        return f"AdaptiveMaxPool {pair_text(args['size'])}"

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return adaptive_max_forward(x, args["size"], ctx)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return adaptive_max_backward(ctx, dy), {}
