"""Fully connected layers and flattening."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..shapes import Shape
from .base import INFERRED, Args, ArgSpec, LayerKind, TorchCall, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops


@register
class FC(LayerKind):
    """Fully connected layer (nn.Linear).

    Args: out, bias=true.
    Shape: N -> out; the input must be flat (insert `flatten` after images).
    Example: `FC(10)`.
    """

    name = "FC"
    aliases = ("Linear", "Dense")
    family = "linear"
    fresh_output = True
    input_rank = "flat"
    np_supported = True
    signature = (ArgSpec("out", "int", minimum=1, keywords=("out_features",)), ArgSpec("bias", "bool", True))
    spelling_signatures = {
        "Linear": (
            ArgSpec("in_features", "int", INFERRED, minimum=1, role="input"),
            ArgSpec("out_features", "int", minimum=1, target="out"),
            ArgSpec("bias", "bool", True),
        )
    }

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((args["out"],))

    def param_count(self, args: Args, shape: Shape) -> int:
        return shape[0] * args["out"] + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return shape[0] * args["out"]

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.Linear", (in_shape[0], args["out"]), () if args["bias"] else (("bias", False),))

    def describe(self, args: Args) -> str:
        return f"FC {args['out']}" + ("" if args["bias"] else " no bias")

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        # PyTorch's nn.Linear default, drawn as it draws it: U(+-1/sqrt(in_features)) for weight, then bias.
        weight_bound = ops.default_weight_bound(shape[0])
        tensors = {"weight": rng.uniform(-weight_bound, weight_bound, (args["out"], shape[0]), dtype)}
        if args["bias"]:
            bias_bound = ops.default_bias_bound(shape[0])
            tensors["bias"] = rng.uniform(-bias_bound, bias_bound, args["out"], dtype)
        return tensors

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        y = x @ params["weight"].T
        if "bias" in params:
            y += params["bias"]
        ctx.save(x=x)
        return y

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        grads = {"weight": dy.T @ ctx.saved["x"]}
        if "bias" in params:
            grads["bias"] = dy.sum(axis=0)
        return (dy @ params["weight"] if ctx.need_dx else None), grads


@register
class PointwiseFC(LayerKind):
    """A fully connected layer over the channels at every position (nn.Linear on channels-last), as ConvNeXt's blocks.

    Args: out, bias=true.
    Shape: C x H x W -> out x H x W. The same function as Conv(out, 1), but the weight is
    nn.Linear's, (out, C), as torchvision's ConvNeXt stores it (a 1x1 Conv's is (out, C, 1, 1)).
    Example: `DWConv(7, pad=3), LayerNorm(eps=1e-6), PointwiseFC(384), GELU, PointwiseFC(96)`.
    """

    name = "PointwiseFC"
    aliases = ("PointwiseLinear",)
    family = "linear"
    input_rank = "image"
    np_supported = True
    signature = (ArgSpec("out", "int", minimum=1, keywords=("out_features",)), ArgSpec("bias", "bool", True))

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((args["out"], *shape[1:]))

    def param_count(self, args: Args, shape: Shape) -> int:
        return shape.channels * args["out"] + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return out.numel * shape.channels

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # cnndsl.torch_modules.PointwiseLinear: nn.Linear's parameters, applied channels-last.
        return TorchCall("PointwiseLinear", (in_shape.channels, args["out"]), () if args["bias"] else (("bias", False),))

    def describe(self, args: Args) -> str:
        return f"PointwiseFC {args['out']}" + ("" if args["bias"] else " no bias")

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return FC().np_init(args, Shape((shape.channels,)), rng, dtype)  # nn.Linear's draws, in its order

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        # One GEMM over every position, channels-last as nn.Linear computes it: (N*P, C) @ (C, out). A GEMM per
        # sample on the channels-first layout is twice as slow (short, wide operands). The output is a
        # channels-first view of the channels-last result, as PyTorch's `movedim` gives.
        rows = _channels_last(x)
        y = rows @ params["weight"].T
        if "bias" in params:
            y += params["bias"]
        ctx.save(rows=rows, shape=x.shape)
        return _channels_first(y, x.shape[0], x.shape[2:])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        rows, shape = ctx.saved["rows"], ctx.saved["shape"]
        dy_rows = _channels_last(dy)
        grads = {"weight": dy_rows.T @ rows}
        if "bias" in params:
            grads["bias"] = dy_rows.sum(axis=0)
        dx = _channels_first(dy_rows @ params["weight"], shape[0], shape[2:]) if ctx.need_dx else None
        return dx, grads


def _channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) as (N * positions, C): a copy unless `x` is a channels-last view already."""
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1).reshape(-1, x.shape[1])


def _channels_first(rows: np.ndarray, batch: int, spatial: tuple[int, ...]) -> np.ndarray:
    """(N * positions, C) as an (N, C, *spatial) view."""
    return rows.reshape(batch, -1, rows.shape[1]).transpose(0, 2, 1).reshape(batch, rows.shape[1], *spatial)


@register
class Flatten(LayerKind):
    """Flatten an image to a vector (nn.Flatten); a flat input passes unchanged.

    Shape: C x H x W -> C*H*W.
    Example: `GlobalAvgPool, flatten, FC(10)`.
    """

    name = "Flatten"
    family = "reshape"
    is_view = True
    np_supported = True
    # nn.Flatten's arguments, accepted with the values that keep the batch and flatten the rest.
    signature = (ArgSpec("start_dim", "int", 1, role="fixed"), ArgSpec("end_dim", "int", -1, role="fixed"))

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((shape.numel,))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.Flatten")  # start_dim=1 keeps the batch; a flat input passes unchanged

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        ctx.save(shape=x.shape)
        return x.reshape(x.shape[0], -1)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return dy.reshape(ctx.saved["shape"]), {}
