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
    kernel = args["kernel"]
    ones, zeros = (1,) * len(kernel), (0,) * len(kernel)
    return Window(
        kernel,
        args["stride"],
        args["pad"],
        args.get("dilation", ones),
        args.get("ceil", False),
        args.get("pad_extra", zeros),
    )


PAD_MODES = ("zeros", "reflect", "replicate", "circular")
"""nn.ConvNd's `padding_mode` values; cnndsl's `pad_mode`."""


def resolve_window_args(kind: str, args: Args, shape: Shape | None, asymmetric_same: bool = False) -> Args:
    """One entry per spatial axis for kernel/stride/pad/dilation (an int means the same on
    every axis), and `pad=same` as the padding it means.

    An odd span pads both sides equally, at any stride (the output is ceil(input / stride)).
    An even span at stride 1 pads one more on the far side (bottom/right), as
    nn.Conv2d(padding="same") does: `pad` holds the near side and `pad_extra` the one more
    (only convolutions, `asymmetric_same`; PyTorch's pools take no `same`). An even span at a
    larger stride is refused, as PyTorch refuses `same` for every strided convolution.
    """
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
            if not asymmetric_same:
                raise LayerError(
                    f"{kind}: pad=same needs an odd kernel (after dilation) to pad both sides equally; "
                    f"got kernel {pair_text(out['kernel'])}",
                    "use an odd kernel or give pad explicitly",
                    arg="pad",
                )
            if any(s != 1 for s in out["stride"]):
                raise LayerError(
                    f"{kind}: pad=same with an even kernel (after dilation) needs stride 1; got kernel "
                    f"{pair_text(out['kernel'])} and stride {pair_text(out['stride'])}",
                    "PyTorch refuses it too (\"padding='same' is not supported for strided convolutions\"); "
                    "give pad explicitly or use an odd kernel",
                    arg="pad",
                )
            out["pad_extra"] = tuple(span % 2 for span in spans)
        out["pad"] = tuple(span // 2 for span in spans)
    else:
        out["pad"] = spatial_tuple(kind, "pad", out["pad"], rank)
    return out


def check_pad_mode(kind: str, args: Args, shape: Shape) -> None:
    """PyTorch's limits on non-zero padding: reflect needs pad < input size, circular pad <= input size."""
    mode = args.get("pad_mode", "zeros")
    if mode not in ("reflect", "circular"):
        return
    pad = args["pad"]
    extra = args.get("pad_extra", (0,) * len(pad))
    for axis, size in enumerate(shape.spatial):
        widest = pad[axis] + extra[axis]
        if widest >= size if mode == "reflect" else widest > size:
            rule = "smaller than" if mode == "reflect" else "at most"
            raise LayerError(
                f"{kind}: pad_mode={mode} needs a padding {rule} the input size; got pad {widest} on an input of {size}",
                "PyTorch refuses it too; use pad_mode=replicate or zeros, less padding, or apply it where the map is larger",
                arg="pad",
            )


def torch_pair(value: Sizes) -> int | Sizes:
    """A square (cubic) window as one int, the way people write PyTorch."""
    return value[0] if len(set(value)) == 1 else value


def torch_module(name: str, rank: int) -> str:
    """torch's module for `rank` spatial axes: `nn.Conv1d`, `nn.Conv2d`, `nn.Conv3d`."""
    return f"nn.{name}{rank}d"


def differs(value: Any, default: Any) -> bool:
    """Whether an argument is written: where it differs from PyTorch's default, or where a parameter
    reaches it. Code generation passes such numbers traced (they carry their `term`, see
    cnndsl.codegen_torch._Traced): written at any value, the generated code holds for every value."""
    return hasattr(value, "term") or value != default


def torch_window_kwargs(args: Args) -> tuple[tuple[str, int | Sizes | str], ...]:
    """stride, padding and dilation for nn.ConvNd, each only where it differs from PyTorch's default
    (see `differs`); `padding="same"` where the padding is one-sided (an even kernel)."""
    kwargs: list[tuple[str, int | Sizes | str]] = []
    for name, torch_name, default in (("stride", "stride", 1), ("pad", "padding", 0), ("dilation", "dilation", 1)):
        if name == "pad" and any(args.get("pad_extra", ())):
            kwargs.append(("padding", "same"))
        elif name in args and any(differs(v, default) for v in args[name]):
            kwargs.append((torch_name, torch_pair(args[name])))
    return tuple(kwargs)


def torch_conv_tail(args: Args) -> tuple[tuple[str, bool | str], ...]:
    """nn.Conv2d's bias and padding_mode, each only where it differs from PyTorch's default."""
    kwargs: tuple[tuple[str, bool | str], ...] = () if args["bias"] else (("bias", False),)
    if args["pad_mode"] != "zeros":
        kwargs += (("padding_mode", args["pad_mode"]),)
    return kwargs


def np_geometry(args: Args, x: np.ndarray, groups: int) -> ops.ConvGeometry:
    """The NumPy kernels' view of a windowed layer applied to a batch `x` (N, C, *spatial)."""
    window = conv_window(args)
    in_size = tuple(x.shape[2:])
    out_size = tuple(window.output_size(size, axis) for axis, size in enumerate(in_size))
    return ops.ConvGeometry(in_size, out_size, window.kernel, window.stride, window.pad, window.dilation, groups)


def np_conv_forward(args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, groups: int) -> np.ndarray:
    """nn.ConvNd's forward; a padding mode other than zeros, or a one-sided `same`, pads the input
    first (as PyTorch does) and convolves it unpadded."""
    pad = args["pad"]
    zeros = (0,) * len(pad)
    extra = args.get("pad_extra", zeros)
    mode = args["pad_mode"]
    if mode == "zeros" and not any(extra):
        return ops.conv_forward(x, params["weight"], params.get("bias"), np_geometry(args, x, groups), ctx)
    pads = tuple((p, p + e) for p, e in zip(pad, extra, strict=True))
    ctx.save(pads=pads, in_size=tuple(x.shape[2:]))
    xp = ops.pad_borders(x, pads, mode)
    return ops.conv_forward(
        xp, params["weight"], params.get("bias"), np_geometry({**args, "pad": zeros, "pad_extra": zeros}, xp, groups), ctx
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
    parts.append("x".join(str(k) for k in args["kernel"]))
    if any(s != 1 for s in args["stride"]):
        parts.append("/" + pair_text(args["stride"]))
    if any(args.get("pad_extra", ())):
        parts.append("pad same")
    elif any(args["pad"]):
        parts.append("pad " + pair_text(args["pad"]))
    if any(d != 1 for d in args.get("dilation", ())):
        parts.append("dil " + pair_text(args["dilation"]))
    return " ".join(parts)


def describe_pad_mode(args: Args) -> str:
    return "" if args["pad_mode"] == "zeros" else f" {args['pad_mode']}"


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
        one_sided = args.get("pad_extra", (0,) * len(kernel))
        if not any(pad) and not args.get("ceil") and not any(one_sided):
            return 0
        extra = kernel if args.get("ceil") else one_sided
        padded = math.prod(size + 2 * p + e for size, p, e in zip(shape.spatial, pad, extra, strict=True))
        return shape.channels * padded * batch * itemsize


@register
class Conv(WindowedKind):
    """Convolution over 1, 2 or 3 spatial axes (nn.Conv1d/2d/3d, by the input).

    Args: out channels, kernel, stride=1, pad=0 (int, tuple per axis or `same`), dilation=1,
    groups=1, bias=true, pad_mode=zeros (reflect, replicate or circular: nn.Conv2d's padding_mode).
    Shape: C x H x W -> out x H' x W', H' = floor((H + 2P - D(F-1) - 1)/S) + 1 (per axis;
    C x L and C x D x H x W alike); `same` keeps H at stride 1 (an even kernel pads one more
    on the bottom/right, as PyTorch).
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
        ArgSpec("pad_mode", "choice", "zeros", keywords=("padding_mode",), choices=PAD_MODES),
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
            ArgSpec("padding_mode", "choice", "zeros", target="pad_mode", choices=PAD_MODES),
        )
        for spelling in ("Conv2d", "Conv1d", "Conv3d")
    }

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return resolve_window_args(self.name, args, shape, asymmetric_same=True)

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
        if differs(args["groups"], 1):
            kwargs += (("groups", args["groups"]),)
        return TorchCall(
            torch_module("Conv", in_shape.spatial_rank), (in_shape.channels, args["out"]), kwargs + torch_conv_tail(args)
        )

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return np_conv_init((args["out"], shape.channels // args["groups"], *args["kernel"]), args["bias"], rng, dtype)

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
        ArgSpec("pad_mode", "choice", "zeros", keywords=("padding_mode",), choices=PAD_MODES),
    )

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        return resolve_window_args(self.name, args, shape, asymmetric_same=True)

    def infer(self, args: Args, shape: Shape) -> Shape:
        out = windowed_shape(self.name, self.window(args), shape, shape.channels * args["multiplier"])
        check_pad_mode(self.name, args, shape)
        return out

    def param_count(self, args: Args, shape: Shape) -> int:
        out = shape.channels * args["multiplier"]
        return out * math.prod(args["kernel"]) + (out if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return out.numel * math.prod(args["kernel"])

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        channels = in_shape.channels
        kwargs = (("kernel_size", torch_pair(args["kernel"])), *torch_window_kwargs(args), ("groups", channels))
        return TorchCall(
            torch_module("Conv", in_shape.spatial_rank), (channels, channels * args["multiplier"]), kwargs + torch_conv_tail(args)
        )

    # As nn.Conv2d(C, C*multiplier, groups=C): weight (C*multiplier, 1, kh, kw) (one kernel size per axis).
    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return np_conv_init((shape.channels * args["multiplier"], 1, *args["kernel"]), args["bias"], rng, dtype)

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return np_conv_forward(args, params, x, ctx, x.shape[1])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return np_conv_backward(args, params, ctx, dy)

    def describe(self, args: Args) -> str:
        mult = f" x{args['multiplier']}" if args["multiplier"] != 1 else ""
        return describe_window("DWConv", args) + mult + describe_pad_mode(args)
