"""Convolutions: Conv and the depthwise DWConv."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..limits import COLUMN_BYTES
from ..shapes import Pair, Shape, Window
from .base import INFERRED, Args, ArgSpec, LayerError, LayerKind, TorchCall, as_pair, pair_text, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops


def windowed_shape(kind: str, window: Window, shape: Shape, channels: int) -> Shape:
    """Output shape of a sliding-window layer on an image; errors when the kernel does not fit."""
    dims = []
    for axis, size in enumerate(shape.spatial):
        padded = size + 2 * window.pad[axis] + window.pad_extra[axis]
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
    return Window(
        args["kernel"],
        args["stride"],
        args["pad"],
        args.get("dilation", (1, 1)),
        args.get("ceil", False),
        args.get("pad_extra", (0, 0)),
    )


PAD_MODES = ("zeros", "reflect", "replicate", "circular")
"""nn.Conv2d's `padding_mode` values; cnndsl's `pad_mode`."""


def resolve_window_args(kind: str, args: Args, asymmetric_same: bool = False) -> Args:
    """Pairs for kernel/stride/dilation, and `pad=same` as the padding it means.

    An odd span pads both sides equally, at any stride (the output is ceil(input / stride)).
    An even span at stride 1 pads one more on the bottom/right, as nn.Conv2d(padding="same")
    does: `pad` holds the top/left side and `pad_extra` the one more (only convolutions,
    `asymmetric_same`; PyTorch's pools take no `same`). An even span at a larger stride is
    refused, as PyTorch refuses `same` for every strided convolution.
    """
    out = dict(args)
    for name in ("kernel", "stride", "dilation"):
        if name in out:
            out[name] = as_pair(out[name])
    if out.get("pad") == "same":
        dilation = out.get("dilation", (1, 1))
        spans = [dilation[a] * (out["kernel"][a] - 1) for a in (0, 1)]
        if any(s % 2 for s in spans):
            if not asymmetric_same:
                raise LayerError(
                    f"{kind}: pad=same needs an odd kernel (after dilation) to pad both sides equally; "
                    f"got kernel {pair_text(out['kernel'])}",
                    "use an odd kernel or give pad explicitly",
                    arg="pad",
                )
            if out["stride"] != (1, 1):
                raise LayerError(
                    f"{kind}: pad=same with an even kernel (after dilation) needs stride 1; got kernel "
                    f"{pair_text(out['kernel'])} and stride {pair_text(out['stride'])}",
                    "PyTorch refuses it too (\"padding='same' is not supported for strided convolutions\"); "
                    "give pad explicitly or use an odd kernel",
                    arg="pad",
                )
            out["pad_extra"] = (spans[0] % 2, spans[1] % 2)
        out["pad"] = (spans[0] // 2, spans[1] // 2)
    else:
        out["pad"] = as_pair(out["pad"])
    return out


def check_pad_mode(kind: str, args: Args, shape: Shape) -> None:
    """PyTorch's limits on non-zero padding: reflect needs pad < input size, circular pad <= input size."""
    mode = args.get("pad_mode", "zeros")
    if mode not in ("reflect", "circular"):
        return
    pad, extra = args["pad"], args.get("pad_extra", (0, 0))
    for axis, size in enumerate(shape.spatial):
        widest = pad[axis] + extra[axis]
        if widest >= size if mode == "reflect" else widest > size:
            rule = "smaller than" if mode == "reflect" else "at most"
            raise LayerError(
                f"{kind}: pad_mode={mode} needs a padding {rule} the input size; got pad {widest} on an input of {size}",
                "PyTorch refuses it too; use pad_mode=replicate or zeros, less padding, or apply it where the map is larger",
                arg="pad",
            )


def torch_pair(value: Pair) -> int | Pair:
    """A square window as one int, the way people write PyTorch."""
    return value[0] if value[0] == value[1] else value


def torch_window_kwargs(args: Args) -> tuple[tuple[str, int | Pair | str], ...]:
    """stride, padding and dilation for nn.Conv2d, each only where it differs from PyTorch's default;
    `padding="same"` where the padding is one-sided (an even kernel)."""
    kwargs: list[tuple[str, int | Pair | str]] = []
    for name, torch_name, default in (("stride", "stride", (1, 1)), ("pad", "padding", (0, 0)), ("dilation", "dilation", (1, 1))):
        if name == "pad" and args.get("pad_extra", (0, 0)) != (0, 0):
            kwargs.append(("padding", "same"))
        elif name in args and args[name] != default:
            kwargs.append((torch_name, torch_pair(args[name])))
    return tuple(kwargs)


def torch_conv_tail(args: Args) -> tuple[tuple[str, bool | str], ...]:
    """nn.Conv2d's bias and padding_mode, each only where it differs from PyTorch's default."""
    kwargs: tuple[tuple[str, bool | str], ...] = () if args["bias"] else (("bias", False),)
    if args["pad_mode"] != "zeros":
        kwargs += (("padding_mode", args["pad_mode"]),)
    return kwargs


def np_geometry(args: Args, x: np.ndarray, groups: int) -> ops.ConvGeometry:
    """The NumPy kernels' view of a windowed layer applied to a batch `x`."""
    window = conv_window(args)
    in_hw = (x.shape[2], x.shape[3])
    out_hw = (window.output_size(in_hw[0], 0), window.output_size(in_hw[1], 1))
    return ops.ConvGeometry(in_hw, out_hw, window.kernel, window.stride, window.pad, window.dilation, groups)


def np_conv_forward(args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, groups: int) -> np.ndarray:
    """nn.Conv2d's forward; a padding mode other than zeros, or a one-sided `same`, pads the input
    first (as PyTorch does) and convolves it unpadded."""
    extra = args.get("pad_extra", (0, 0))
    mode = args["pad_mode"]
    if mode == "zeros" and extra == (0, 0):
        return ops.conv_forward(x, params["weight"], params.get("bias"), np_geometry(args, x, groups), ctx)
    (ph, pw), size = args["pad"], (x.shape[2], x.shape[3])
    pads = (ph, ph + extra[0], pw, pw + extra[1])
    ctx.save(pads=pads, in_size=size)
    xp = ops.pad_borders(x, pads, mode)
    return ops.conv_forward(
        xp, params["weight"], params.get("bias"), np_geometry({**args, "pad": (0, 0), "pad_extra": (0, 0)}, xp, groups), ctx
    )


def np_conv_backward(args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
    dx, grads = ops.conv_backward(params["weight"], args["bias"], ctx, dy)
    if dx is not None and "pads" in ctx.saved:
        dx = ops.fold_borders(dx, ctx.saved["pads"], args["pad_mode"], ctx.saved["in_size"])
    return dx, grads


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
    parts.append(f"{args['kernel'][0]}x{args['kernel'][1]}")
    if args["stride"] != (1, 1):
        parts.append("/" + pair_text(args["stride"]))
    if args.get("pad_extra", (0, 0)) != (0, 0):
        parts.append("pad same")
    elif args["pad"] != (0, 0):
        parts.append("pad " + pair_text(args["pad"]))
    if args.get("dilation", (1, 1)) != (1, 1):
        parts.append("dil " + pair_text(args["dilation"]))
    return " ".join(parts)


def describe_pad_mode(args: Args) -> str:
    return "" if args["pad_mode"] == "zeros" else f" {args['pad_mode']}"


class WindowedKind(LayerKind):
    """A kind that slides a window over an image: Conv, DWConv and the windowed pools."""

    input_rank = "image"

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return resolve_window_args(self.name, args)

    def window(self, args: Args) -> Window:
        return conv_window(args)

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        # The kernels copy the input padded by `pad` (ceil-mode pools: up to a kernel more).
        # Dilation widens the window, not the copy, but it is why a huge `pad` can still give
        # a small output: the padded copy is what costs.
        (ph, pw), (kh, kw) = args["pad"], args["kernel"]
        one_sided = args.get("pad_extra", (0, 0))
        if ph == pw == 0 and not args.get("ceil") and one_sided == (0, 0):
            return 0
        extra = (kh, kw) if args.get("ceil") else one_sided
        channels, height, width = shape
        return channels * (height + 2 * ph + extra[0]) * (width + 2 * pw + extra[1]) * batch * itemsize


@register
class Conv(WindowedKind):
    """2-D convolution.

    Args: out channels, kernel, stride=1, pad=0 (int, pair or `same`), dilation=1,
    groups=1, bias=true, pad_mode=zeros (reflect, replicate or circular: nn.Conv2d's padding_mode).
    Shape: C x H x W -> out x H' x W', H' = floor((H + 2P - D(F-1) - 1)/S) + 1; `same` keeps
    H at stride 1 (an even kernel pads one more on the bottom/right, as PyTorch).
    Example: `Conv(64, 3, stride=2, pad=1)`.
    """

    name = "Conv"
    np_supported = True
    aliases = ("Conv2d",)
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
        ArgSpec("pad_mode", "choice", "zeros", keywords=("padding_mode",), choices=PAD_MODES),
    )
    spelling_signatures = {
        "Conv2d": (
            ArgSpec("in_channels", "int", INFERRED, minimum=1, role="input"),
            ArgSpec("out_channels", "int", minimum=1, target="out"),
            ArgSpec("kernel_size", "pair", minimum=1, target="kernel"),
            ArgSpec("stride", "pair", 1, minimum=1),
            ArgSpec("padding", "pad", 0, minimum=0, target="pad"),
            ArgSpec("dilation", "pair", 1, minimum=1),
            ArgSpec("groups", "int", 1, minimum=1),
            ArgSpec("bias", "bool", True),
            ArgSpec("padding_mode", "choice", "zeros", target="pad_mode", choices=PAD_MODES),
        )
    }

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return resolve_window_args(self.name, args, asymmetric_same=True)

    def infer(self, args: Args, shape: Shape) -> Shape:
        out = windowed_shape(self.name, self.window(args), shape, args["out"])
        check_pad_mode(self.name, args, shape)
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
        kh, kw = args["kernel"]
        return args["out"] * (shape.channels // args["groups"]) * kh * kw + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        kh, kw = args["kernel"]
        return out.numel * (shape.channels // args["groups"]) * kh * kw

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        # Besides the padded copy, a convolution that is not depthwise builds im2col columns of
        # C*kh*kw x OH*OW per sample, in batch slices of at most COLUMN_BYTES (at least one sample).
        padded = super().np_workspace_bytes(args, shape, out, batch, itemsize)
        if args["groups"] == shape.channels > 1:  # depthwise: a multiply-add per kernel offset, no columns
            return padded
        kh, kw = args["kernel"]
        per_sample = shape.channels * kh * kw * out[1] * out[2] * itemsize
        return padded + per_sample * max(1, min(batch, COLUMN_BYTES // max(1, per_sample)))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs = (("kernel_size", torch_pair(args["kernel"])), *torch_window_kwargs(args))
        if args["groups"] != 1:
            kwargs += (("groups", args["groups"]),)
        return TorchCall("nn.Conv2d", (in_shape.channels, args["out"]), kwargs + torch_conv_tail(args))

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        kh, kw = args["kernel"]
        return np_conv_init((args["out"], shape.channels // args["groups"], kh, kw), args["bias"], rng, dtype)

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return np_conv_forward(args, params, x, ctx, args["groups"])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return np_conv_backward(args, params, ctx, dy)

    def describe(self, args: Args) -> str:
        text = describe_window("Conv", args, str(args["out"]))
        if args["groups"] != 1:
            text += f" g{args['groups']}"
        return text + describe_pad_mode(args)


@register
class DWConv(WindowedKind):
    """Depthwise convolution: one filter (times `multiplier`) per input channel.

    Args: kernel, stride=1, pad=0, multiplier=1, bias=true, pad_mode=zeros.
    Shape: C x H x W -> C*multiplier x H' x W' (nn.Conv2d with groups=C).
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
        ArgSpec("pad_mode", "choice", "zeros", keywords=("padding_mode",), choices=PAD_MODES),
    )

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return resolve_window_args(self.name, args, asymmetric_same=True)

    def infer(self, args: Args, shape: Shape) -> Shape:
        out = windowed_shape(self.name, self.window(args), shape, shape.channels * args["multiplier"])
        check_pad_mode(self.name, args, shape)
        return out

    def param_count(self, args: Args, shape: Shape) -> int:
        kh, kw = args["kernel"]
        out = shape.channels * args["multiplier"]
        return out * kh * kw + (out if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        kh, kw = args["kernel"]
        return out.numel * kh * kw

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        channels = in_shape.channels
        kwargs = (("kernel_size", torch_pair(args["kernel"])), *torch_window_kwargs(args), ("groups", channels))
        return TorchCall("nn.Conv2d", (channels, channels * args["multiplier"]), kwargs + torch_conv_tail(args))

    # As nn.Conv2d(C, C*multiplier, groups=C): weight (C*multiplier, 1, kh, kw).
    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        kh, kw = args["kernel"]
        return np_conv_init((shape.channels * args["multiplier"], 1, kh, kw), args["bias"], rng, dtype)

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return np_conv_forward(args, params, x, ctx, x.shape[1])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return np_conv_backward(args, params, ctx, dy)

    def describe(self, args: Args) -> str:
        mult = f" x{args['multiplier']}" if args["multiplier"] != 1 else ""
        return describe_window("DWConv", args) + mult + describe_pad_mode(args)
