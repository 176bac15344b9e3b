"""Channel plumbing: Identity, ChannelShuffle, Chunk (ShuffleNet's channel split), PixelShuffle and PixelUnshuffle."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

from ..receptive import Field
from ..shapes import Shape
from .base import Args, ArgSpec, LayerError, LayerKind, TorchCall, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from ..numpy_ops import Backward, NpContext, Tensors
else:
    from ..lazy import numpy as np


@register
class Identity(LayerKind):
    """Passes its input through (nn.Identity); an empty branch means the same.

    Example: `Add[ Conv(64, 3, pad=1) | Identity ]`.
    """

    name = "Identity"
    family = "identity"
    is_view = True
    np_supported = True

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.Identity")

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return x

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return dy, {}


@register
class ChannelShuffle(LayerKind):
    """Interleaves channels across `groups` (nn.ChannelShuffle), as ShuffleNet does.

    Args: groups.
    Shape: unchanged; channels must divide by groups.
    Example: `ChannelShuffle(2)`.
    """

    name = "ChannelShuffle"
    family = "reshape"
    input_rank = "spatial"
    np_supported = True
    signature = (ArgSpec("groups", "int", minimum=1),)

    def infer(self, args: Args, shape: Shape) -> Shape:
        if shape.channels % args["groups"]:
            raise LayerError(
                f"ChannelShuffle: groups={args['groups']} must divide the channels; got {shape.channels}",
                arg="groups",
            )
        return shape

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # cnndsl.torch_modules.ChannelShuffle: unflatten/transpose/flatten as torchvision's
        # ShuffleNet does, which torch.compile, torch.export and channels_last all handle.
        return TorchCall("ChannelShuffle", (args["groups"],))

    def describe(self, args: Args) -> str:
        return f"ChannelShuffle {args['groups']}"

    # (N, g, C/g, H, W) -> (N, C/g, g, H, W), as nn.ChannelShuffle; backward is the inverse.
    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        n, c = x.shape[:2]
        g = args["groups"]
        return x.reshape(n, g, c // g, *x.shape[2:]).transpose(0, 2, 1, *range(3, x.ndim + 1)).reshape(x.shape)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        n, c = dy.shape[:2]
        g = args["groups"]
        return dy.reshape(n, c // g, g, *dy.shape[2:]).transpose(0, 2, 1, *range(3, dy.ndim + 1)).reshape(dy.shape), {}


@register
class Chunk(LayerKind):
    """Selects one of `chunks` equal slices of the channels (x.chunk(chunks, dim=1)[index]).

    With Concat it expresses ShuffleNetV2's channel split:
    `Concat[ Chunk(2, 0) | Chunk(2, 1), Conv(c, 1), ... ]`.

    Args: chunks, index (0-based, below chunks).
    Shape: C x H x W -> C/chunks x H x W (N -> N/chunks for flat input).
    Example: `Chunk(2, 1)`.
    """

    name = "Chunk"
    family = "reshape"
    is_view = True
    np_supported = True
    signature = (ArgSpec("chunks", "int", minimum=1), ArgSpec("index", "int", minimum=0))

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        if args["index"] >= args["chunks"]:
            raise LayerError(
                f"Chunk: index must be below chunks ({args['chunks']}); got {args['index']}",
                "indices count from 0",
                arg="index",
            )
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        if shape.channels % args["chunks"]:
            raise LayerError(
                f"Chunk: {args['chunks']} chunks must divide the channels; got {shape.channels}",
                arg="chunks",
            )
        return Shape((shape.channels // args["chunks"], *shape[1:]))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("Chunk", (args["chunks"], args["index"]))

    def describe(self, args: Args) -> str:
        return f"Chunk {args['index']}/{args['chunks']}"

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        size = x.shape[1] // args["chunks"]
        ctx.save(shape=x.shape)
        return x[:, args["index"] * size : (args["index"] + 1) * size]

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        shape = ctx.saved["shape"]
        size = shape[1] // args["chunks"]
        dx = np.zeros(shape, dtype=dy.dtype)
        dx[:, args["index"] * size : (args["index"] + 1) * size] = dy
        return dx, {}


def _shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """(N, C*r*r, H, W) -> (N, C, H*r, W*r), as nn.PixelShuffle: channel c*r*r + i*r + j goes to pixel (h*r + i, w*r + j)."""
    n, c, h, w = x.shape
    out = c // (r * r)
    return x.reshape(n, out, r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, out, h * r, w * r)


def _unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    """_shuffle's inverse (nn.PixelUnshuffle): (N, C, H*r, W*r) -> (N, C*r*r, H, W)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


@register
class PixelShuffle(LayerKind):
    """Rearranges channels into space (nn.PixelShuffle), the sub-pixel upsampling of ESPCN.

    Args: factor r (PyTorch's upscale_factor).
    Shape: C*r*r x H x W -> C x H*r x W*r; the channels must divide by r*r.
    Example: `Conv(9, 3, pad=1), PixelShuffle(3)`.
    """

    name = "PixelShuffle"
    family = "reshape"
    input_rank = "image"
    np_supported = True
    signature = (ArgSpec("factor", "int", minimum=1, keywords=("upscale_factor",)),)

    def infer(self, args: Args, shape: Shape) -> Shape:
        r = args["factor"]
        channels, height, width = shape
        if channels % (r * r):
            raise LayerError(
                f"PixelShuffle: the channels must divide by {r * r} (the factor {r}, squared); got {channels}",
                f"give it {r * r} times the channels wanted out (the layer before it sets them)",
                arg="factor",
                recovered=Shape((max(1, channels // (r * r)), height * r, width * r)),
            )
        return Shape((channels // (r * r), height * r, width * r))

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        # Output pixel o takes its value from input pixel floor(o / r): a nearest resize by r.
        return tuple(axis.resample(Fraction(1, args["factor"]), "nearest", False) for axis in field)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.PixelShuffle", (args["factor"],))

    def describe(self, args: Args) -> str:
        return f"PixelShuffle x{args['factor']}"

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return _shuffle(x, args["factor"])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return _unshuffle(dy, args["factor"]), {}


@register
class PixelUnshuffle(LayerKind):
    """Rearranges space into channels (nn.PixelUnshuffle), PixelShuffle's inverse.

    Args: factor r (PyTorch's downscale_factor).
    Shape: C x H x W -> C*r*r x H/r x W/r; H and W must divide by r.
    Example: `PixelUnshuffle(2)`.
    """

    name = "PixelUnshuffle"
    family = "reshape"
    input_rank = "image"
    np_supported = True
    signature = (ArgSpec("factor", "int", minimum=1, keywords=("downscale_factor",)),)

    def infer(self, args: Args, shape: Shape) -> Shape:
        r = args["factor"]
        channels, height, width = shape
        out = Shape((channels * r * r, max(1, height // r), max(1, width // r)))
        if height % r or width % r:
            raise LayerError(
                f"PixelUnshuffle: the height and width must divide by factor {r}; got {height}x{width}",
                f"resize or pad the map to a multiple of {r} first",
                arg="factor",
                recovered=out,
            )
        return out

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        # An output pixel gathers an r x r block: a window of r at stride r.
        r = args["factor"]
        return tuple(axis.window(r, r, 0) for axis in field)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.PixelUnshuffle", (args["factor"],))

    def describe(self, args: Args) -> str:
        return f"PixelUnshuffle /{args['factor']}"

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return _unshuffle(x, args["factor"])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return _shuffle(dy, args["factor"]), {}
