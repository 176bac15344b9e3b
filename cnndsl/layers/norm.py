"""Normalisation and regularisation: BatchNorm and Dropout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import error
from ..shapes import Shape
from .base import INFERRED, Args, ArgSpec, LayerError, LayerKind, TorchCall, register

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np


def _channel_axes(ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For a batch of `ndim` axes (N, C, *spatial): the axes a per-channel statistic reduces over,
    and the shape a per-channel vector broadcasts as."""
    return (0, *range(2, ndim)), (1, -1, *(1,) * (ndim - 2))


@register
class BatchNorm(LayerKind):
    """Batch normalisation: nn.BatchNorm2d on images, nn.BatchNorm1d on flat input and 1-D signals, nn.BatchNorm3d on volumes.

    Args: eps=1e-5, momentum=0.1.
    Shape: unchanged. Parameters: weight and bias per channel; buffers: running mean
    and variance per channel and num_batches_tracked.
    Example: `Conv(64, 3, bias=false), BN, ReLU`.
    """

    name = "BatchNorm"
    attribute_stem = "bn"  # torchvision's bn1, bn2
    aliases = ("BN", "BatchNorm2d", "BatchNorm1d", "BatchNorm3d")
    spelling_ranks = {"BatchNorm1d": (0, 1), "BatchNorm2d": (2,), "BatchNorm3d": (3,)}
    family = "norm"
    fresh_output = True
    np_supported = True
    signature = (ArgSpec("eps", "float", 1e-5), ArgSpec("momentum", "float", 0.1))
    spelling_signatures = {
        spelling: (
            ArgSpec("num_features", "int", INFERRED, minimum=1, role="input"),
            ArgSpec("eps", "float", 1e-5),
            ArgSpec("momentum", "float", 0.1),
            ArgSpec("affine", "bool", True, role="fixed"),
            ArgSpec("track_running_stats", "bool", True, role="fixed"),
        )
        for spelling in ("BatchNorm2d", "BatchNorm1d", "BatchNorm3d")
    }

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        if args["eps"] <= 0:
            raise LayerError(f"BatchNorm: eps must be positive; got {args['eps']}", arg="eps")
        if not 0 <= args["momentum"] <= 1:
            raise LayerError(f"BatchNorm: momentum must be between 0 and 1; got {args['momentum']}", arg="momentum")
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def param_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels

    def buffer_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels + 1

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, float], ...] = ()
        if args["eps"] != 1e-5:
            kwargs += (("eps", args["eps"]),)
        if args["momentum"] != 0.1:
            kwargs += (("momentum", args["momentum"]),)
        return TorchCall(f"nn.BatchNorm{max(1, in_shape.spatial_rank)}d", (in_shape.channels,), kwargs)

    def describe(self, args: Args) -> str:
        return "BatchNorm" if args["eps"] == 1e-5 else f"BatchNorm eps {args['eps']:g}"

    np_buffers = ("running_mean", "running_var", "num_batches_tracked")

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        c = shape.channels
        return {
            "weight": np.ones(c, dtype),
            "bias": np.zeros(c, dtype),
            "running_mean": np.zeros(c, dtype),
            "running_var": np.ones(c, dtype),
            "num_batches_tracked": np.zeros((), np.int64),
        }

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        axes, bshape = _channel_axes(x.ndim)
        weight, bias = params["weight"], params["bias"]
        if not train:
            inv = 1.0 / np.sqrt(params["running_var"] + args["eps"])
            scale = weight * inv
            shift = bias - params["running_mean"] * scale
            ctx.save(train=False, x=x, inv=inv)
            y = np.multiply(x, scale.reshape(bshape), out=x if ctx.inplace else None)
            y += shift.reshape(bshape)
            return y
        count = x.size // x.shape[1]
        if count < 2:
            # PyTorch refuses train-mode batch statistics over a single value per channel; so do we, in words.
            raise error(
                f"BatchNorm in train mode needs more than one value per channel; got input {'x'.join(map(str, x.shape))}",
                "use a batch of at least 2, or eval mode",
            )
        # Statistics in float64, as PyTorch accumulates them on the CPU: with few values per
        # channel the output is sensitive to their rounding, and then it matches torch's.
        # The variance about the float64 mean, from float32 deviations about its rounding:
        # E[(x - m32)^2] - (m64 - m32)^2, with float64 sums and no float64 copy of x. Over many
        # values NumPy's pairwise float32 sums are as good and several times faster.
        wide = np.float64 if count <= 4096 else None
        mean = x.mean(axis=axes, dtype=np.float64) if wide else x.mean(axis=axes).astype(np.float64)
        mean32 = mean.astype(x.dtype)
        xhat = x - mean32.reshape(bshape)
        var = np.square(xhat).mean(axis=axes, dtype=wide).astype(np.float64) - np.square(mean - mean32)
        inv = (1.0 / np.sqrt(var + args["eps"])).astype(x.dtype)
        xhat *= inv.reshape(bshape)
        # PyTorch's running statistics: momentum-weighted, the variance unbiased.
        momentum = args["momentum"]
        params["running_mean"] *= 1 - momentum
        params["running_mean"] += (momentum * mean).astype(x.dtype)
        params["running_var"] *= 1 - momentum
        params["running_var"] += ((momentum * count / (count - 1)) * var).astype(x.dtype)
        params["num_batches_tracked"] += 1
        ctx.save(train=True, xhat=xhat, inv=inv)
        y = xhat * weight.reshape(bshape) if ctx.record else np.multiply(xhat, weight.reshape(bshape), out=xhat)
        y += bias.reshape(bshape)
        return y

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        axes, bshape = _channel_axes(dy.ndim)
        inv = ctx.saved["inv"]
        if ctx.saved["train"]:
            xhat = ctx.saved["xhat"]
        else:
            xhat = (ctx.saved["x"] - params["running_mean"].reshape(bshape)) * inv.reshape(bshape)
        # Sums in float64 as PyTorch's CPU kernel does (see np_forward).
        dbias = dy.sum(axis=axes, dtype=np.float64).astype(dy.dtype)
        dweight = np.sum(dy * xhat, axis=axes, dtype=np.float64).astype(dy.dtype)
        grads = {"weight": dweight, "bias": dbias}
        if not ctx.need_dx:
            return None, grads
        scale = (params["weight"] * inv).reshape(bshape)
        if not ctx.saved["train"]:
            return dy * scale, grads
        # Batch statistics depend on every input: dx = w/sigma * (dy - mean(dy) - xhat * mean(dy * xhat)).
        count = dy.size // dy.shape[1]
        dx = xhat * (dweight / count).reshape(bshape)
        np.subtract(dy, dx, out=dx)
        dx -= (dbias / count).reshape(bshape)
        dx *= scale
        return dx, grads


@register
class Dropout(LayerKind):
    """Dropout (nn.Dropout): zeroes elements with probability p while training.

    Args: p=0.5 (0 <= p <= 1).
    Shape: unchanged.
    Example: `Dropout(0.2)`.
    """

    name = "Dropout"
    family = "regularization"
    np_supported = True
    signature = (ArgSpec("p", "float", 0.5), ArgSpec("inplace", "bool", False, role="ignored"))

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        if not 0 <= args["p"] <= 1:
            raise LayerError(f"Dropout: p must be between 0 and 1; got {args['p']}", arg="p")
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # p always written (as torchvision does), so a network parameter can drive it in generated code.
        return TorchCall("nn.Dropout", (), (("p", args["p"]),))

    def describe(self, args: Args) -> str:
        return f"Dropout {args['p']:g}"

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        p = args["p"]
        if not train or p == 0:
            ctx.save(mask=None)
            return x
        # As PyTorch: keep with probability 1 - p and scale kept values by 1 / (1 - p).
        keep = ctx.rng.random(x.shape, dtype=np.float32) >= p
        mask = keep * np.asarray(1 / (1 - p) if p < 1 else 0.0, x.dtype)
        ctx.save(mask=mask)
        return np.multiply(x, mask, out=x if ctx.inplace else None)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        mask = ctx.saved["mask"]
        return (dy if mask is None else dy * mask), {}
