"""Normalisations beside BatchNorm: LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm, and
the learnable per-channel Scale (ConvNeXt's layer scale).

The NumPy kernels of the first three are one computation: standardise each slice of the
input over some axes (channels at every position; a group's channels and positions; one
channel's positions), then scale and shift per channel; backward is BatchNorm's formula
over the same axes. GroupNorm and InstanceNorm compute it as PyTorch's CPU kernel does: the
group statistics from two reading passes, then y = x * scale + shift with one factor pair per
(sample, channel), and backward from two sums per (sample, channel), sum(dy) and sum(dy * x).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..shapes import Shape
from .base import INFERRED, Args, ArgSpec, LayerError, LayerKind, TorchCall, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np


def _check_eps(owner: str, args: Args) -> None:
    if args["eps"] <= 0:
        raise LayerError(f"{owner}: eps must be positive; got {args['eps']:g}", "PyTorch's default is 1e-5", arg="eps")


def _channel_shape(ndim: int) -> tuple[int, ...]:
    """How a per-channel vector broadcasts against an (N, C) or (N, C, H, W) batch."""
    return (1, -1) + (1,) * (ndim - 2)


def _by_channel(a: np.ndarray) -> np.ndarray:
    """An (N, C, ...) array as (N, C, positions): per-channel factors then broadcast as (C, 1)
    over one contiguous run per channel, which NumPy does faster than over (C, 1, 1)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _normalize(x: np.ndarray, axis: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / sqrt(var + eps) over `axis` (the biased variance, as PyTorch's norms), and 1 / sqrt(var + eps)."""
    if axis in (-1, x.ndim - 1):
        # Contiguous runs: einsum's sums are several times faster than NumPy's pairwise
        # reductions here, and the sum of products needs no temporary of squares.
        centred = x - np.einsum("...i->...", x)[..., None] * (1.0 / x.shape[-1])
        squares = np.einsum("...i,...i->...", centred, centred)[..., None] * (1.0 / x.shape[-1])
    else:
        centred = x - x.mean(axis=axis, keepdims=True)
        squares = np.mean(np.square(centred), axis=axis, keepdims=True)
    inv = 1.0 / np.sqrt(squares + eps)
    centred *= inv
    return centred, inv


def _normalize_backward(g: np.ndarray, xhat: np.ndarray, inv: np.ndarray, axis: int) -> np.ndarray:
    """dL/dx of `_normalize` from g = dL/dxhat: inv * (g - mean(g) - xhat * mean(g * xhat)) over `axis`."""
    dx = xhat * np.mean(g * xhat, axis=axis, keepdims=True)
    np.subtract(g, dx, out=dx)
    dx -= g.mean(axis=axis, keepdims=True)
    dx *= inv
    return dx


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum(a * b) over the last axis, per row: one batched dot product (BLAS; einsum's sum of
    products is three times slower, and a product array would be a pass more)."""
    return np.matmul(a[..., None, :], b[..., :, None])[..., 0, 0]


def _scale_rows(rows: np.ndarray, factor: np.ndarray, out: np.ndarray) -> np.ndarray:
    """rows * factor[..., None] into `out` (not `rows`: einsum clears `out` first): einsum's loop
    over a factor per row is faster than NumPy's broadcast multiply, which pays an inner-loop
    call per row."""
    return np.einsum("...p,...->...p", rows, factor, out=out)


def _scratch(ctx: NpContext, slot: str, like: np.ndarray) -> np.ndarray:
    """A temporary shaped like `like` that dies within the call (the model's buffer when it has one)."""
    return ctx.scratch.get(slot, like.shape, like.dtype) if ctx.scratch is not None else np.empty_like(like)


def _times_channels(rows: np.ndarray, factor: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, C, P) `rows` times a factor per channel (C,).

    NumPy's broadcast multiply by a (C, 1) factor pays an inner-loop call per (sample, channel)
    row (about 2.5x the time of a plain product on 2000-element rows); the factor spelt out
    over the positions, (C * P,), leaves one long inner loop per sample. For one sample with
    long rows the few row calls cost less than spelling the factor out.
    """
    n, c, positions = rows.shape
    if n == 1 and positions >= 256:
        return np.multiply(rows, factor[:, None], out=out)
    spelt = np.repeat(factor, positions).reshape(1, c * positions)
    flat_out = None if out is None else out.reshape(n, c * positions)
    return np.multiply(rows.reshape(n, c * positions), spelt, out=flat_out).reshape(rows.shape)


def _group_moments(grouped: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The mean and 1 / sqrt(var + eps) of each row of (N, G, M) `grouped` (the biased variance), as (N, G).

    One reading pass each for the sum and the sum of squares; var = E[x^2] - E[x]^2 loses
    digits when the mean is large against the spread, so such rows are recomputed centred.
    """
    count = grouped.shape[2]
    mean = np.einsum("ngm->ng", grouped) / count
    var = _row_dots(grouped, grouped) / count
    var -= mean * mean
    # The subtraction loses about log2(mean^2 / var) bits of var: up to 6 bits is accepted
    # (float32 sums over a group lose as much); beyond that, or for a constant group, those
    # groups alone take the centred second pass.
    unstable = ~(mean * mean <= 64 * var)
    if unstable.any():
        rows = grouped[unstable]
        centred = rows - mean[unstable][:, None]
        var[unstable] = _row_dots(centred, centred) / count
    return mean, 1.0 / np.sqrt(var + eps)


def _affine_init(channels: int, affine: bool, dtype: Any) -> Tensors:
    """PyTorch's initial affine parameters of a norm: weight ones, bias zeros (no random draws)."""
    return {"weight": np.ones(channels, dtype), "bias": np.zeros(channels, dtype)} if affine else {}


def _affine_forward(xhat: np.ndarray, params: Tensors, record: bool) -> np.ndarray:
    """xhat * weight + bias per channel (a new array when xhat is saved for backward)."""
    if "weight" not in params:
        return xhat
    rows = _by_channel(xhat)
    weight, bias = params["weight"][:, None], params["bias"][:, None]
    y = rows * weight if record else np.multiply(rows, weight, out=rows)
    y += bias
    return y.reshape(xhat.shape)


def _affine_backward(params: Tensors, xhat: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, Tensors]:
    """(dL/dxhat, the weight and bias gradients) of `_affine_forward`."""
    if "weight" not in params:
        return dy, {}
    rows, dy_rows = _by_channel(xhat), _by_channel(dy)
    grads = {"weight": np.einsum("ncp,ncp->c", dy_rows, rows), "bias": dy_rows.sum(axis=(0, 2))}
    return (dy_rows * params["weight"][:, None]).reshape(dy.shape), grads


@register
class LayerNorm(LayerKind):
    """Layer normalisation over the channels at every position (ConvNeXt's LayerNorm2d; of 1-D and 3-D maps alike); over the features of flat input (nn.LayerNorm).

    Args: normalized_shape (PyTorch's; the channels, inferred and checked when given),
    eps=1e-5 (PyTorch's default; ConvNeXt uses `eps=1e-6`), elementwise_affine=true (also
    `affine=`): a learnable weight and bias per channel.
    Shape: unchanged. Parameters: weight and bias of C (state_dict keys `weight`, `bias`,
    as torchvision's LayerNorm2d).
    Example: `DWConv(7, pad=3), LayerNorm(eps=1e-6), Conv(384, 1), GELU`.
    """

    name = "LayerNorm"
    family = "norm"
    np_supported = True
    signature = (
        ArgSpec("normalized_shape", "int", INFERRED, minimum=1, role="input"),
        ArgSpec("eps", "float", 1e-5),
        ArgSpec("elementwise_affine", "bool", True, keywords=("affine",)),
        ArgSpec("bias", "bool", True, role="fixed"),
    )

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        _check_eps("LayerNorm", args)
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def param_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels if args["elementwise_affine"] else 0

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, Any], ...] = ()
        if args["eps"] != 1e-5:
            kwargs += (("eps", args["eps"]),)
        if not args["elementwise_affine"]:
            kwargs += (("elementwise_affine", False),)
        # cnndsl.torch_modules.LayerNorm2d: nn.LayerNorm over channels-last, as torchvision's ConvNeXt.
        return TorchCall("LayerNorm2d" if in_shape.has_space else "nn.LayerNorm", (in_shape.channels,), kwargs)

    def describe(self, args: Args) -> str:
        return "LayerNorm" if args["eps"] == 1e-5 else f"LayerNorm eps {args['eps']:g}"

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return _affine_init(shape.channels, args["elementwise_affine"], dtype)

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        xhat, inv = _normalize(x, 1, args["eps"])
        ctx.save(xhat=xhat, inv=inv)
        return _affine_forward(xhat, params, ctx.record)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        xhat, inv = ctx.saved["xhat"], ctx.saved["inv"]
        g, grads = _affine_backward(params, xhat, dy)
        return (_normalize_backward(g, xhat, inv, 1) if ctx.need_dx else None), grads


class _PerSampleNorm(LayerKind):
    """GroupNorm and InstanceNorm: statistics over groups of channels of one sample, over all positions
    (of a signal, an image or a volume alike)."""

    family = "norm"
    input_rank = "spatial"
    np_supported = True
    np_buffers = ("running_mean", "running_var", "num_batches_tracked")

    def groups(self, args: Args, channels: int) -> int:
        raise NotImplementedError

    def tracks(self, args: Args) -> bool:
        """True when the layer keeps running statistics (InstanceNorm's track_running_stats)."""
        return False

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def param_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels if args["affine"] else 0

    def buffer_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels + 1 if self.tracks(args) else 0

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        tensors = _affine_init(shape.channels, args["affine"], dtype)
        if self.tracks(args):
            tensors["running_mean"] = np.zeros(shape.channels, dtype)
            tensors["running_var"] = np.ones(shape.channels, dtype)
            tensors["num_batches_tracked"] = np.zeros((), np.int64)
        return tensors

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        n, c = x.shape[:2]
        affine = "weight" in params
        if self.tracks(args) and not train:
            # Eval with running statistics: a fixed map x * scale + shift per channel.
            inv = 1.0 / np.sqrt(params["running_var"] + args["eps"])
            if ctx.record:  # backward needs xhat for the weight's gradient
                xhat = (_by_channel(x) - params["running_mean"][:, None]) * inv[:, None]
                ctx.save(xhat=xhat.reshape(x.shape), inv=inv[:, None], running=True)
                return _affine_forward(xhat.reshape(x.shape), params, True)
            scale = inv * params["weight"] if affine else inv
            shift = (params["bias"] if affine else 0.0) - params["running_mean"] * scale
            y = np.multiply(_by_channel(x), scale[:, None], out=_by_channel(x) if ctx.inplace else None)
            y += shift[:, None]
            return y.reshape(x.shape)
        groups = self.groups(args, c)
        grouped = x.reshape(n, groups, -1)
        if self.tracks(args):
            # PyTorch's instance_norm runs batch_norm on the (1, N*C, H, W) view and averages
            # the N copies of each running statistic: the momentum-weighted mean over the
            # batch of the instance means and unbiased variances. (num_batches_tracked stays
            # 0: nn.InstanceNorm2d has the buffer but never counts.)
            count = grouped.shape[2]
            momentum = args["momentum"]
            params["running_mean"] *= 1 - momentum
            params["running_mean"] += momentum * grouped.mean(axis=2).mean(axis=0)
            params["running_var"] *= 1 - momentum
            params["running_var"] += (momentum * count / (count - 1)) * grouped.var(axis=2).mean(axis=0)
        mean, inv = _group_moments(grouped, args["eps"])
        ctx.save(x=x, mean=mean, inv=inv, running=False)
        # As PyTorch's kernel: y = x * scale + shift, one factor pair per (sample, channel),
        # scale = inv * weight, shift = bias - mean * scale (no centred or normalised copy).
        per_group = c // groups
        scale = np.repeat(inv, per_group, axis=1)
        if affine:
            scale *= params["weight"]
        shift = np.repeat(mean, per_group, axis=1)
        shift *= -scale
        if affine:
            shift += params["bias"]
        rows = _by_channel(x)
        if ctx.inplace:
            y = np.multiply(rows, scale[:, :, None], out=rows)
        else:
            y = _scale_rows(rows, scale, np.empty_like(rows))
        y += shift[:, :, None]
        return y.reshape(x.shape)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        if ctx.saved["running"]:
            xhat, inv = ctx.saved["xhat"], ctx.saved["inv"]
            g, affine_grads = _affine_backward(params, xhat.reshape(dy.shape), dy)
            return ((_by_channel(g) * inv).reshape(dy.shape) if ctx.need_dx else None), affine_grads
        x, mean, inv = ctx.saved["x"], ctx.saved["mean"], ctx.saved["inv"]
        n, c = dy.shape[:2]
        groups = mean.shape[1]
        per_group = c // groups
        rows, dy_rows = _by_channel(x), _by_channel(dy)
        # The two sums per (sample, channel) that everything needs (PyTorch's ds and db):
        # sum(dy * x) and sum(dy) over the positions.
        dy_x = _row_dots(dy_rows, rows)
        dy_sum = np.einsum("ncp->nc", dy_rows)
        mean_c, inv_c = np.repeat(mean, per_group, axis=1), np.repeat(inv, per_group, axis=1)
        grads: Tensors = {}
        if "weight" in params:
            # sum(dy * xhat) = inv * (sum(dy * x) - mean * sum(dy)), per (sample, channel).
            grads = {"weight": ((dy_x - mean_c * dy_sum) * inv_c).sum(axis=0), "bias": dy_sum.sum(axis=0)}
        if not ctx.need_dx:
            return None, grads
        weight = params["weight"] if "weight" in params else np.ones(c, dy.dtype)
        # dx = inv * (g - mean(g) - xhat * mean(g * xhat)) per group, g = dy * weight, written
        # as dx = dy * a + x * b + d with one (a) per channel and (b, d) per group.
        count = per_group * rows.shape[2]
        g_sum = (dy_sum * weight).reshape(n, groups, per_group).sum(axis=2)
        g_x = (dy_x * weight).reshape(n, groups, per_group).sum(axis=2)
        g_xhat_mean = inv * (g_x - mean * g_sum) / count
        b = -inv * inv * g_xhat_mean
        d = -inv * g_sum / count - b * mean
        dx = _scale_rows(dy_rows, inv_c * weight, np.empty_like(dy_rows))
        dx += _scale_rows(rows, np.repeat(b, per_group, axis=1), _scratch(ctx, "norm_dx", rows))
        dx += np.repeat(d, per_group, axis=1)[:, :, None]
        return dx.reshape(dy.shape), grads


@register
class GroupNorm(_PerSampleNorm):
    """Group normalisation (nn.GroupNorm): statistics over each group of channels of a sample, at all positions (of a CxL, CxHxW or CxDxHxW map).

    Args: groups (also `num_groups=`), num_channels (PyTorch's second argument: the
    channels, inferred and checked when given), eps=1e-5, affine=true.
    Shape: unchanged; the channels must divide by groups. Parameters: weight and bias of C
    with `affine`.
    Example: `Conv(64, 3, pad=1, bias=false), GroupNorm(32), ReLU`.
    """

    name = "GroupNorm"
    signature = (
        ArgSpec("groups", "int", minimum=1, keywords=("num_groups",)),
        ArgSpec("num_channels", "int", INFERRED, minimum=1, role="input"),
        ArgSpec("eps", "float", 1e-5),
        ArgSpec("affine", "bool", True),
        ArgSpec("bias", "bool", True, role="fixed"),  # PyTorch's keyword-only bias (2.x)
    )

    def groups(self, args: Args, channels: int) -> int:
        return int(args["groups"])

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        _check_eps("GroupNorm", args)
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        groups, channels = args["groups"], shape.channels
        if channels % groups:
            small = [d for d in range(1, math.isqrt(channels) + 1) if channels % d == 0]  # O(sqrt C), for any C
            divisors = sorted({*small, *(channels // d for d in small)})
            shown = ", ".join(map(str, divisors[-6:]))
            raise LayerError(
                f"GroupNorm: groups={groups} must divide the channels; got {channels}",
                f"the input here is {shape.describe()}: choose a divisor of {channels} ({shown}, ...)"
                if len(divisors) > 6
                else f"the input here is {shape.describe()}: choose a divisor of {channels} ({shown})",
                arg="groups",
            )
        return shape

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, Any], ...] = ()
        if args["eps"] != 1e-5:
            kwargs += (("eps", args["eps"]),)
        if not args["affine"]:
            kwargs += (("affine", False),)
        return TorchCall("nn.GroupNorm", (args["groups"], in_shape.channels), kwargs)

    def describe(self, args: Args) -> str:
        return f"GroupNorm {args['groups']}"


@register
class InstanceNorm(_PerSampleNorm):
    """Instance normalisation (nn.InstanceNorm1d/2d/3d, by the input): statistics over the positions of each channel of each sample.

    Args: affine=false, track_running_stats=false, eps=1e-5, momentum=0.1 (PyTorch's
    defaults). With `affine`, a learnable weight and bias per channel; with
    `track_running_stats`, running statistics (updated in training, used in eval).
    Shape: unchanged; needs more than one position (L, H x W or D x H x W > 1). Parameters: 2C with
    `affine`; buffers 2C + 1 with `track_running_stats`.
    Example: `Conv(64, 9, pad=4), InstanceNorm(affine=true), ReLU` (style transfer).
    """

    name = "InstanceNorm"
    aliases = ("InstanceNorm2d", "InstanceNorm1d", "InstanceNorm3d")
    signature = (
        ArgSpec("affine", "bool", False),
        ArgSpec("track_running_stats", "bool", False),
        ArgSpec("eps", "float", 1e-5),
        ArgSpec("momentum", "float", 0.1),
    )
    spelling_signatures = {
        spelling: (
            ArgSpec("num_features", "int", INFERRED, minimum=1, role="input"),
            ArgSpec("eps", "float", 1e-5),
            ArgSpec("momentum", "float", 0.1),
            ArgSpec("affine", "bool", False),
            ArgSpec("track_running_stats", "bool", False),
            ArgSpec("bias", "bool", True, role="fixed"),  # PyTorch's keyword-only bias (2.x)
        )
        for spelling in ("InstanceNorm2d", "InstanceNorm1d", "InstanceNorm3d")
    }
    spelling_ranks = {"InstanceNorm1d": (1,), "InstanceNorm2d": (2,), "InstanceNorm3d": (3,)}

    def groups(self, args: Args, channels: int) -> int:
        return channels

    def tracks(self, args: Args) -> bool:
        return bool(args["track_running_stats"])

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        _check_eps("InstanceNorm", args)
        if not 0 <= args["momentum"] <= 1:
            raise LayerError(f"InstanceNorm: momentum must be between 0 and 1; got {args['momentum']:g}", arg="momentum")
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        if math.prod(shape.spatial) == 1:
            # PyTorch refuses it too ("Expected more than 1 spatial element"): one value has no spread.
            raise LayerError(
                f"InstanceNorm needs more than one position per channel; got {shape.describe()}",
                "normalise before the map shrinks to a single position (before global pooling), or use LayerNorm or BatchNorm here",
            )
        return shape

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, Any], ...] = ()
        if args["eps"] != 1e-5:
            kwargs += (("eps", args["eps"]),)
        if args["momentum"] != 0.1:
            kwargs += (("momentum", args["momentum"]),)
        if args["affine"]:
            kwargs += (("affine", True),)
        if args["track_running_stats"]:
            kwargs += (("track_running_stats", True),)
        return TorchCall(f"nn.InstanceNorm{in_shape.spatial_rank}d", (in_shape.channels,), kwargs)

    def describe(self, args: Args) -> str:
        return "InstanceNorm affine" if args["affine"] else "InstanceNorm"


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """out[:, c] = sum of a[:, j] for j in [c - before, c + after] within the channels (zeros outside).

    One shifted add per window offset (a few: the LRN size), each over the whole batch.
    """
    channels = a.shape[1]
    out = np.zeros_like(a)
    # Offsets beyond the channels add nothing: a window of any size costs at most 2C - 1 slices.
    for offset in range(max(-before, 1 - channels), min(after, channels - 1) + 1):
        lo, hi = max(0, -offset), min(channels, channels - offset)
        out[:, lo:hi] += a[:, lo + offset : hi + offset]
    return out


@register
class LocalResponseNorm(LayerKind):
    """Local response normalisation across channels (nn.LocalResponseNorm, of a CxL, CxHxW or CxDxHxW map), as in AlexNet and GoogLeNet.

    Args: size (channels in the window), alpha=1e-4, beta=0.75, k=1.0 (PyTorch's
    signature and defaults; AlexNet's paper: `LRN(5, alpha=5e-4, beta=0.75, k=2)`, as
    PyTorch scales alpha by 1/size). y = x / (k + alpha/size * sum of x^2 over the `size`
    channels around) ** beta.
    Shape: unchanged; no parameters.
    Example: `Conv(96, 11, stride=4), ReLU, LRN(5, alpha=5e-4, k=2), MaxPool(3, stride=2)`.
    """

    name = "LocalResponseNorm"
    attribute_stem = "lrn"
    aliases = ("LRN",)
    family = "norm"
    input_rank = "spatial"
    np_supported = True
    signature = (
        ArgSpec("size", "int", minimum=1),
        ArgSpec("alpha", "float", 1e-4),
        ArgSpec("beta", "float", 0.75),
        ArgSpec("k", "float", 1.0),
    )

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        # k > 0 and alpha >= 0 keep the base positive, so any beta gives a finite output.
        if args["alpha"] < 0:
            raise LayerError(f"LocalResponseNorm: alpha must not be negative; got {args['alpha']:g}", arg="alpha")
        if args["k"] <= 0:
            raise LayerError(
                f"LocalResponseNorm: k must be positive; got {args['k']:g}",
                "k is the constant added before the power (1 by default; AlexNet's paper uses 2)",
                arg="k",
            )
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        defaults = {"alpha": 1e-4, "beta": 0.75, "k": 1.0}
        kwargs = tuple((key, args[key]) for key, default in defaults.items() if args[key] != default)
        return TorchCall("nn.LocalResponseNorm", (args["size"],), kwargs)

    def describe(self, args: Args) -> str:
        return f"LRN {args['size']}"

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        size = args["size"]
        # PyTorch pads the channels by size // 2 before and (size - 1) // 2 after and averages.
        total = _channel_window_sum(np.square(x), size // 2, (size - 1) // 2)
        base = total * (args["alpha"] / size) + args["k"]
        denominator = base ** args["beta"]
        ctx.save(x=x, base=base, denominator=denominator)
        return x / denominator

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        if not ctx.need_dx:
            return None, {}
        size, x, base, denominator = args["size"], ctx.saved["x"], ctx.saved["base"], ctx.saved["denominator"]
        # y_c = x_c * base_c^-beta, base_c = k + alpha/size * sum_{j in window(c)} x_j^2:
        # dx_i = dy_i / d_i - 2 alpha beta / size * x_i * sum_{c: i in window(c)} dy_c x_c / (d_c base_c).
        through = dy * x / (denominator * base)
        gathered = _channel_window_sum(through, (size - 1) // 2, size // 2)
        dx = dy / denominator
        dx -= (2 * args["alpha"] * args["beta"] / size) * x * gathered
        return dx, {}


@register
class Scale(LayerKind):
    """A learnable scale per channel (ConvNeXt's layer scale): x * layer_scale.

    Args: init=1e-6 (the initial value of every channel's scale).
    Shape: unchanged (CxL, CxHxW or CxDxHxW). Parameters: C, as the tensor `layer_scale` of
    shape (C, 1, 1) on an image, the name and shape of torchvision's ConvNeXt block parameter
    ((C, 1) on a signal, (C, 1, 1, 1) on a volume: one 1 per spatial axis).
    Example: `Conv(96, 1), Scale(init=1e-6)`.
    """

    name = "Scale"
    family = "norm"
    input_rank = "spatial"
    np_supported = True
    signature = (ArgSpec("init", "float", 1e-6),)

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def param_count(self, args: Args, shape: Shape) -> int:
        return shape.channels

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # cnndsl.torch_modules.Scale; init always written so a network parameter can drive it.
        rank: tuple[tuple[str, int], ...] = (("rank", in_shape.spatial_rank),) if in_shape.spatial_rank != 2 else ()
        return TorchCall("Scale", (in_shape.channels,), (("init", args["init"]), *rank))

    def describe(self, args: Args) -> str:
        return f"Scale {args['init']:g}"

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        # torch.full in float32, then cast: the same value as the torch module's parameter.
        return {"layer_scale": np.full((shape.channels, *(1,) * shape.spatial_rank), args["init"], np.float32).astype(dtype)}

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        ctx.save(x=x)
        rows = _by_channel(x)
        return _times_channels(rows, params["layer_scale"].reshape(-1), rows if ctx.inplace else None).reshape(x.shape)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        scale = params["layer_scale"]
        dy_rows = _by_channel(dy)
        grads = {"layer_scale": _row_dots(dy_rows, _by_channel(ctx.saved["x"])).sum(axis=0).reshape(scale.shape)}
        return (_times_channels(dy_rows, scale.reshape(-1)).reshape(dy.shape) if ctx.need_dx else None), grads
