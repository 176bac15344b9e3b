"""Convolutions: Conv and the depthwise DWConv."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..limits import COLUMN_BYTES
from ..shapes import Shape, Sizes, Window
from .base import INFERRED, Args, ArgSpec, LayerError, LayerKind, TorchCall, pair_text, register, spatial_tuple

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops


def windowed_shape(kind: str, window: Window, shape: Shape, channels: int) -> Shape:
    """Output shape of a sliding-window layer on a signal, image or volume; errors when the kernel does not fit."""
    dims = []
    for axis, size in enumerate(shape.spatial):
        padded = size + 2 * window.pad[axis]
        span = window.span(axis)
        if span > padded:
            what = "dilated kernel" if window.dilation[axis] > 1 else "kernel"
            raise LayerError(
                f"{kind}: the {what} ({span}) is larger than the padded input ({size} + 2*{window.pad[axis]} = {padded})",
                "use a smaller kernel, more padding, or apply it earlier, where the map is larger",
                arg="kernel",
            )
        dims.append(window.output_size(size, axis))
    return Shape((channels, *dims))


def conv_window(args: Args) -> Window:
    kernel = args["kernel"]
    return Window(kernel, args["stride"], args["pad"], args.get("dilation", (1,) * len(kernel)), args.get("ceil", False))


def resolve_window_args(kind: str, args: Args, shape: Shape | None) -> Args:
    """One entry per spatial axis for kernel/stride/pad/dilation (an int means the same on
    every axis), and `pad=same` as the symmetric padding it means."""
    out = dict(args)
    if shape is None or not shape.has_space:
        # A flat input, which the input-rank check reports next: any consistent window will do.
        rank = 2
        for name in ("kernel", "stride", "pad", "dilation"):
            if isinstance(out.get(name), tuple):
                out[name] = out[name][0]
    else:
        rank = shape.spatial_rank
    for name in ("kernel", "stride", "dilation"):
        if name in out:
            out[name] = spatial_tuple(kind, name, out[name], rank)
    if out.get("pad") == "same":
        dilation = out.get("dilation", (1,) * rank)
        spans = [dilation[a] * (out["kernel"][a] - 1) for a in range(rank)]
        if any(s % 2 for s in spans):
            raise LayerError(
                f"{kind}: pad=same needs an odd kernel (after dilation) to pad both sides equally; got kernel {pair_text(out['kernel'])}",
                "use an odd kernel or give pad explicitly",
                arg="pad",
            )
        out["pad"] = tuple(span // 2 for span in spans)
    else:
        out["pad"] = spatial_tuple(kind, "pad", out["pad"], rank)
    return out


def torch_pair(value: Sizes) -> int | Sizes:
    """A square (cubic) window as one int, the way people write PyTorch."""
    return value[0] if len(set(value)) == 1 else value


def torch_module(name: str, rank: int) -> str:
    """torch's module for `rank` spatial axes: `nn.Conv1d`, `nn.Conv2d`, `nn.Conv3d`."""
    return f"nn.{name}{rank}d"


def torch_window_kwargs(args: Args) -> tuple[tuple[str, int | Sizes], ...]:
    """stride, padding and dilation for nn.ConvNd, each only where it differs from PyTorch's default."""
    kwargs: list[tuple[str, int | Sizes]] = []
    for name, torch_name, default in (("stride", "stride", 1), ("pad", "padding", 0), ("dilation", "dilation", 1)):
        if name in args and any(v != default for v in args[name]):
            kwargs.append((torch_name, torch_pair(args[name])))
    return tuple(kwargs)


def np_geometry(args: Args, x: np.ndarray, groups: int) -> ops.ConvGeometry:
    """The NumPy kernels' view of a windowed layer applied to a batch `x` (N, C, *spatial)."""
    window = conv_window(args)
    in_size = tuple(x.shape[2:])
    out_size = tuple(window.output_size(size, axis) for axis, size in enumerate(in_size))
    return ops.ConvGeometry(in_size, out_size, window.kernel, window.stride, window.pad, window.dilation, groups)


def np_conv_init(weight_shape: tuple[int, ...], bias: bool, rng: TorchRandom, dtype: Any) -> Tensors:
    """PyTorch's default, drawn as nn.Conv2d draws it: kaiming_uniform(a=sqrt(5)) weights, i.e. U(+-1/sqrt(fan_in)), then the bias."""
    fan_in = math.prod(weight_shape[1:])
    weight_bound = ops.default_weight_bound(fan_in)
    tensors = {"weight": rng.uniform(-weight_bound, weight_bound, weight_shape, dtype)}
    if bias:
        bias_bound = ops.default_bias_bound(fan_in)
        tensors["bias"] = rng.uniform(-bias_bound, bias_bound, weight_shape[0], dtype)
    return tensors


def describe_window(name: str, args: Args, prefix: str = "") -> str:
    parts = [name]
    if prefix:
        parts.append(prefix)
    parts.append("x".join(str(k) for k in args["kernel"]))
    if any(s != 1 for s in args["stride"]):
        parts.append("/" + pair_text(args["stride"]))
    if any(args["pad"]):
        parts.append("pad " + pair_text(args["pad"]))
    if any(d != 1 for d in args.get("dilation", ())):
        parts.append("dil " + pair_text(args["dilation"]))
    return " ".join(parts)


class WindowedKind(LayerKind):
    """A kind that slides a window over a signal, image or volume: Conv, DWConv and the windowed pools."""

    input_rank = "spatial"

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return resolve_window_args(self.name, args, shape)

    def window(self, args: Args) -> Window:
        return conv_window(args)

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        # The kernels copy the input padded by `pad` (ceil-mode pools: up to a kernel more).
        # Dilation widens the window, not the copy, but it is why a huge `pad` can still give
        # a small output: the padded copy is what costs.
        pad, kernel = args["pad"], args["kernel"]
        if not any(pad) and not args.get("ceil"):
            return 0
        extra = kernel if args.get("ceil") else (0,) * len(kernel)
        padded = math.prod(size + 2 * p + e for size, p, e in zip(shape.spatial, pad, extra, strict=True))
        return shape.channels * padded * batch * itemsize


@register
class Conv(WindowedKind):
    """Convolution over 1, 2 or 3 spatial axes (nn.Conv1d/2d/3d, by the input).

    Args: out channels, kernel, stride=1, pad=0 (int, tuple per axis or `same`), dilation=1,
    groups=1, bias=true.
    Shape: C x H x W -> out x H' x W', H' = floor((H + 2P - D(F-1) - 1)/S) + 1 (per axis;
    C x L and C x D x H x W alike).
    Example: `Conv(64, 3, stride=2, pad=1)`.
    """

    name = "Conv"
    np_supported = True
    aliases = ("Conv2d", "Conv1d", "Conv3d")
    spelling_ranks = {"Conv1d": (1,), "Conv2d": (2,), "Conv3d": (3,)}
    family = "conv"
    fresh_output = True
    signature = (
        ArgSpec("out", "int", minimum=1, keywords=("out_channels",)),
        ArgSpec("kernel", "pair", minimum=1, keywords=("kernel_size",)),
        ArgSpec("stride", "pair", 1, minimum=1),
        ArgSpec("pad", "pad", 0, minimum=0, keywords=("padding",)),
        ArgSpec("dilation", "pair", 1, minimum=1),
        ArgSpec("groups", "int", 1, minimum=1),
        ArgSpec("bias", "bool", True),
    )
    spelling_signatures = {
        spelling: (
            ArgSpec("in_channels", "int", INFERRED, minimum=1, role="input"),
            ArgSpec("out_channels", "int", minimum=1, target="out"),
            ArgSpec("kernel_size", "pair", minimum=1, target="kernel"),
            ArgSpec("stride", "pair", 1, minimum=1),
            ArgSpec("padding", "pad", 0, minimum=0, target="pad"),
            ArgSpec("dilation", "pair", 1, minimum=1),
            ArgSpec("groups", "int", 1, minimum=1),
            ArgSpec("bias", "bool", True),
        )
        for spelling in ("Conv2d", "Conv1d", "Conv3d")
    }

    def infer(self, args: Args, shape: Shape) -> Shape:
        out = windowed_shape(self.name, self.window(args), shape, args["out"])
        groups = args["groups"]
        if shape.channels % groups:
            raise LayerError(
                f"Conv: groups={groups} must divide the input channels; got {shape.channels} input channels",
                f"choose groups among the divisors of {shape.channels}",
                arg="groups",
                recovered=out,
            )
        if args["out"] % groups:
            raise LayerError(
                f"Conv: groups={groups} must divide the output channels; got out={args['out']}",
                "make out a multiple of groups",
                arg="groups",
                recovered=out,
            )
        return out

    def param_count(self, args: Args, shape: Shape) -> int:
        taps = math.prod(args["kernel"])
        return args["out"] * (shape.channels // args["groups"]) * taps + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return out.numel * (shape.channels // args["groups"]) * math.prod(args["kernel"])

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        # Besides the padded copy, a convolution that is not depthwise builds im2col columns of
        # C*kh*kw x OH*OW per sample (every axis alike), in batch slices of at most COLUMN_BYTES (at least one sample).
        padded = super().np_workspace_bytes(args, shape, out, batch, itemsize)
        if args["groups"] == shape.channels > 1:  # depthwise: a multiply-add per kernel offset, no columns
            return padded
        per_sample = shape.channels * math.prod(args["kernel"]) * math.prod(out.spatial) * itemsize
        return padded + per_sample * max(1, min(batch, COLUMN_BYTES // max(1, per_sample)))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs = (("kernel_size", torch_pair(args["kernel"])), *torch_window_kwargs(args))
        if args["groups"] != 1:
            kwargs += (("groups", args["groups"]),)
        if not args["bias"]:
            kwargs += (("bias", False),)
        return TorchCall(torch_module("Conv", in_shape.spatial_rank), (in_shape.channels, args["out"]), kwargs)

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return np_conv_init((args["out"], shape.channels // args["groups"], *args["kernel"]), args["bias"], rng, dtype)

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return ops.conv_forward(x, params["weight"], params.get("bias"), np_geometry(args, x, args["groups"]), ctx)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return ops.conv_backward(params["weight"], args["bias"], ctx, dy)

    def describe(self, args: Args) -> str:
        text = describe_window("Conv", args, str(args["out"]))
        if args["groups"] != 1:
            text += f" g{args['groups']}"
        return text


@register
class DWConv(WindowedKind):
    """Depthwise convolution: one filter (times `multiplier`) per input channel.

    Args: kernel, stride=1, pad=0, multiplier=1, bias=true.
    Shape: C x H x W -> C*multiplier x H' x W' (nn.Conv2d with groups=C; C x L and
    C x D x H x W alike, nn.Conv1d/3d).
    Example: `DWConv(3, stride=2, pad=1, bias=false)`.
    """

    name = "DWConv"
    np_supported = True
    family = "conv"
    fresh_output = True
    signature = (
        ArgSpec("kernel", "pair", minimum=1, keywords=("kernel_size",)),
        ArgSpec("stride", "pair", 1, minimum=1),
        ArgSpec("pad", "pad", 0, minimum=0, keywords=("padding",)),
        ArgSpec("multiplier", "int", 1, minimum=1),
        ArgSpec("bias", "bool", True),
    )

    def infer(self, args: Args, shape: Shape) -> Shape:
        return windowed_shape(self.name, self.window(args), shape, shape.channels * args["multiplier"])

    def param_count(self, args: Args, shape: Shape) -> int:
        out = shape.channels * args["multiplier"]
        return out * math.prod(args["kernel"]) + (out if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return out.numel * math.prod(args["kernel"])

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        channels = in_shape.channels
        kwargs = (("kernel_size", torch_pair(args["kernel"])), *torch_window_kwargs(args), ("groups", channels))
        if not args["bias"]:
            kwargs += (("bias", False),)
        return TorchCall(torch_module("Conv", in_shape.spatial_rank), (channels, channels * args["multiplier"]), kwargs)

    # As nn.Conv2d(C, C*multiplier, groups=C): weight (C*multiplier, 1, kh, kw) (one kernel size per axis).
    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return np_conv_init((shape.channels * args["multiplier"], 1, *args["kernel"]), args["bias"], rng, dtype)

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return ops.conv_forward(x, params["weight"], params.get("bias"), np_geometry(args, x, x.shape[1]), ctx)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return ops.conv_backward(params["weight"], args["bias"], ctx, dy)

    def describe(self, args: Args) -> str:
        mult = f" x{args['multiplier']}" if args["multiplier"] != 1 else ""
        return describe_window("DWConv", args) + mult
