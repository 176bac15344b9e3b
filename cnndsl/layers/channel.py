"""Channel plumbing: Identity, ChannelShuffle and Chunk (ShuffleNet's channel split)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
