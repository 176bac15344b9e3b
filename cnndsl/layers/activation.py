"""Element-wise activations (PReLU with a learnable slope), Softmax and LogSoftmax."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..shapes import Shape
from .base import Args, ArgSpec, LayerError, LayerKind, TorchCall, register, unsupported

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops


class Activation(LayerKind):
    """An element-wise function: the shape is unchanged and there are no parameters."""

    family = "activation"
    np_supported = True  # np_forward and np_backward here, in terms of each activation's np_apply and np_derivative
    np_keep: ClassVar[Literal["x", "y"]] = "x"
    """Which array the NumPy derivative reads: the input or the output (saved for backward)."""

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The function, written into `out` when given (`out` is `x` for in-place calls)."""
        raise unsupported(self.name, "numpy")

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        """dL/dx from dL/dy and the saved input or output (whichever `np_keep` names)."""
        raise unsupported(self.name, "numpy")

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        y = self.np_apply(args, x, x if ctx.inplace else None)
        ctx.save(**{self.np_keep: y if self.np_keep == "y" else x})
        return y

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return self.np_derivative(args, ctx.saved.get("x"), ctx.saved.get("y"), dy), {}

    torch_inplace: ClassVar[bool] = False
    """True where nn.<name> takes `inplace=` and computing in place is worth it (ReLU, ReLU6)."""

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # Every argument-free activation has an nn class of the same name.
        return TorchCall(f"nn.{self.name}", (), (("inplace", True),) if inplace and self.torch_inplace else ())


INPLACE_SIGNATURE = (ArgSpec("inplace", "bool", False, role="ignored"),)
"""PyTorch's `inplace=` on the activations that take it: accepted, and without effect on the
network (the backends decide where computing in place is safe)."""


def _activation(name: str, doc: str, **members: Any) -> type[Activation]:
    """Define and register an argument-free activation; `members` are its backends' methods."""
    namespace = {"name": name, "__doc__": f"{doc}\n\nShape: unchanged.\nExample: `Conv(64, 3), {name}`.\n", **members}
    cls = type(name, (Activation,), namespace)
    return register(cls)  # type: ignore[return-value]


# NumPy kernels: np_apply(self, args, x, out) and np_derivative(self, args, x, y, dy), side by side.
# The derivatives follow PyTorch's at the kinks (ReLU6 and Hardsigmoid pass no gradient at
# the clip points, Hardswish uses x/3 + 1/2 on the closed interval [-3, 3]).


def _silu(self: Activation, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.multiply(x, ops.sigmoid(x), out=out)


def _silu_derivative(self: Activation, args: Args, x: np.ndarray, y: None, dy: np.ndarray) -> np.ndarray:
    s = ops.sigmoid(x)
    return dy * s * (1.0 + x * (1.0 - s))


def _hardswish(self: Activation, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.multiply(x, np.clip(x + 3.0, 0.0, 6.0) * (1 / 6), out=out)


def _hardswish_derivative(self: Activation, args: Args, x: np.ndarray, y: None, dy: np.ndarray) -> np.ndarray:
    slope = np.where(x < -3.0, 0.0, np.where(x <= 3.0, x * (1 / 3) + 0.5, 1.0)).astype(dy.dtype, copy=False)
    return dy * slope


ReLU = _activation(
    "ReLU",
    "max(0, x) (nn.ReLU).",
    torch_inplace=True,
    signature=INPLACE_SIGNATURE,
    np_keep="y",
    np_apply=lambda self, args, x, out: np.maximum(x, 0, out=out),
    np_derivative=lambda self, args, x, y, dy: dy * (y > 0),
)
ReLU6 = _activation(
    "ReLU6",
    "min(max(0, x), 6) (nn.ReLU6).",
    torch_inplace=True,
    signature=INPLACE_SIGNATURE,
    np_keep="y",
    np_apply=lambda self, args, x, out: np.clip(x, 0, 6, out=out),
    np_derivative=lambda self, args, x, y, dy: dy * ((y > 0) & (y < 6)),
)
Sigmoid = _activation(
    "Sigmoid",
    "1 / (1 + exp(-x)) (nn.Sigmoid).",
    outputs_probabilities=True,
    np_keep="y",
    np_apply=lambda self, args, x, out: ops.sigmoid(x, out),
    np_derivative=lambda self, args, x, y, dy: dy * y * (1.0 - y),
)
Tanh = _activation(
    "Tanh",
    "tanh(x) (nn.Tanh).",
    np_keep="y",
    np_apply=lambda self, args, x, out: np.tanh(x, out=out),
    np_derivative=lambda self, args, x, y, dy: dy * (1.0 - y * y),
)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715  # nn.GELU(approximate="tanh")'s coefficient


@register
class GELU(Activation):
    """x * Phi(x) (nn.GELU): the exact erf form, or the tanh approximation with `approximate=tanh`.

    Args: approximate=none (or tanh: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), as BERT and GPT-2).
    Shape: unchanged.
    Example: `GELU(approximate=tanh)`.
    """

    name = "GELU"
    signature = (ArgSpec("approximate", "choice", "none", choices=("none", "tanh")),)

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if args["approximate"] == "tanh":
            # 0.5 x (1 + tanh(x (c + c k x^2))), evaluated in place in one temporary.
            inner = np.multiply(x, x)
            inner *= _GELU_CUBIC * _SQRT_2_OVER_PI
            inner += _SQRT_2_OVER_PI
            inner *= x
            np.tanh(inner, out=inner)
            inner += 1.0
            inner *= 0.5
            return np.multiply(inner, x, out=out)
        return np.multiply(x * 0.5, 1.0 + ops.erf(x * (1 / math.sqrt(2))), out=out)

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert x is not None  # np_keep is "x"
        if args["approximate"] == "tanh":
            inner = np.tanh((x + _GELU_CUBIC * x * x * x) * _SQRT_2_OVER_PI)
            slope = _SQRT_2_OVER_PI * (1.0 + 3 * _GELU_CUBIC * x * x)
            return dy * (0.5 * (1.0 + inner) + 0.5 * x * (1.0 - inner * inner) * slope)
        cdf = 0.5 * (1.0 + ops.erf(x * (1 / math.sqrt(2))))
        pdf = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return dy * (cdf + x * pdf)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.GELU", (), (("approximate", "tanh"),) if args["approximate"] == "tanh" else ())

    def describe(self, args: Args) -> str:
        return "GELU tanh" if args["approximate"] == "tanh" else "GELU"


SiLU = _activation(
    "SiLU",
    "x * ops.sigmoid(x), also called swish (nn.SiLU).",
    signature=INPLACE_SIGNATURE,
    np_apply=_silu,
    np_derivative=_silu_derivative,
)
Hardswish = _activation(
    "Hardswish",
    "x * relu6(x + 3) / 6 (nn.Hardswish).",
    signature=INPLACE_SIGNATURE,
    np_apply=_hardswish,
    np_derivative=_hardswish_derivative,
)
Hardsigmoid = _activation(
    "Hardsigmoid",
    "relu6(x + 3) / 6 (nn.Hardsigmoid).",
    signature=INPLACE_SIGNATURE,
    np_apply=lambda self, args, x, out: np.multiply(np.clip(x + 3.0, 0.0, 6.0), 1 / 6, out=out),
    np_derivative=lambda self, args, x, y, dy: dy * (((x > -3.0) & (x < 3.0)) * (1 / 6)),
)


@register
class LeakyReLU(Activation):
    """max(0, x) + slope * min(0, x) (nn.LeakyReLU).

    Args: slope=0.01.
    Shape: unchanged.
    Example: `LeakyReLU(0.2)`.
    """

    name = "LeakyReLU"
    signature = (ArgSpec("slope", "float", 0.01, keywords=("negative_slope",)), ArgSpec("inplace", "bool", False, role="ignored"))

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return np.multiply(x, np.where(x > 0, 1.0, args["slope"]).astype(x.dtype, copy=False), out=out)

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert x is not None  # np_keep is "x"
        return np.where(x > 0, dy, dy * args["slope"])

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.LeakyReLU", (), () if args["slope"] == 0.01 else (("negative_slope", args["slope"]),))

    def describe(self, args: Args) -> str:
        return f"LeakyReLU {args['slope']:g}"


@register
class Softmax(Activation):
    """Softmax over channels (images) or features (flat input): nn.Softmax(dim=1).

    Shape: unchanged.
    Example: `FC(10), Softmax`.
    """

    name = "Softmax"
    np_keep = "y"
    outputs_probabilities = True
    signature = (ArgSpec("dim", "int", 1, role="fixed"),)  # nn.Softmax(dim=1): over channels or features

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.Softmax", (), (("dim", 1),))

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        # Shift by the maximum so exp never overflows.
        shifted = np.subtract(x, x.max(axis=1, keepdims=True), out=out)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=1, keepdims=True)
        return shifted

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert y is not None
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))


@register
class ELU(Activation):
    """x for x > 0, alpha * (exp(x) - 1) otherwise (nn.ELU).

    Args: alpha=1.0.
    Shape: unchanged.
    Example: `ELU(alpha=0.5)`.
    """

    name = "ELU"
    np_keep = "y"
    torch_inplace = True
    signature = (ArgSpec("alpha", "float", 1.0), ArgSpec("inplace", "bool", False, role="ignored"))

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        # max(x, 0) + alpha * expm1(min(x, 0)): a few whole-array passes, no np.where temporaries.
        negative = np.minimum(x, 0.0)
        np.expm1(negative, out=negative)
        if args["alpha"] != 1.0:
            negative *= args["alpha"]
        result = np.maximum(x, 0.0, out=out)
        result += negative
        return result

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert y is not None
        # d/dx alpha * (exp(x) - 1) = y + alpha; PyTorch passes the gradient 1 for x > 0 only (read off y).
        return np.where(y > 0, dy, dy * (y + args["alpha"]))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, object], ...] = () if args["alpha"] == 1.0 else (("alpha", args["alpha"]),)
        return TorchCall("nn.ELU", (), kwargs + ((("inplace", True),) if inplace else ()))

    def describe(self, args: Args) -> str:
        return "ELU" if args["alpha"] == 1.0 else f"ELU {args['alpha']:g}"


def _into(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """`result`, copied into `out` when given (np.where takes no `out`)."""
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


@register
class Mish(Activation):
    """x * tanh(softplus(x)) (nn.Mish), as YOLOv4 uses.

    Shape: unchanged.
    Example: `Conv(32, 3, pad=1), Mish`.
    """

    name = "Mish"
    signature = INPLACE_SIGNATURE

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return np.multiply(x, np.tanh(_softplus(x)), out=out)

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert x is not None
        t = np.tanh(_softplus(x))
        return dy * (t + x * ops.sigmoid(x) * (1.0 - t * t))


@register
class Softplus(Activation):
    """log(1 + exp(beta * x)) / beta, and x where beta * x > threshold (nn.Softplus).

    Args: beta=1, threshold=20.
    Shape: unchanged.
    Example: `Softplus(beta=2)`.
    """

    name = "Softplus"
    signature = (ArgSpec("beta", "float", 1.0), ArgSpec("threshold", "float", 20.0))

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        if args["beta"] == 0:
            raise LayerError(
                "Softplus: beta must not be 0; got 0", "beta scales x inside the logarithm and divides it", arg="beta"
            )
        return args

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        # max(z, 0) + log1p(exp(-|z|)) in place on one temporary (no overflow, log1p's accuracy
        # for large |z|); the threshold's mask only where some z exceeds it (rare), as torch: x itself.
        beta, threshold = args["beta"], args["threshold"]
        z = x if beta == 1 else np.multiply(x, beta)
        tail = np.abs(z)
        np.negative(tail, out=tail)
        np.exp(tail, out=tail)
        np.log1p(tail, out=tail)
        y = np.maximum(z, 0.0)
        y += tail
        if beta != 1:
            y /= beta
        if z.size and z.max() > threshold:
            np.copyto(y, x, where=z > threshold)
        return _into(y, out)

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert x is not None
        threshold = args["threshold"]
        z = np.multiply(x, args["beta"])
        above = z > threshold if z.size and z.max() > threshold else None
        slope = ops.sigmoid(z, out=z)
        if above is not None:
            np.copyto(slope, 1.0, where=above)  # torch's identity beyond the threshold: dy itself
        slope *= dy
        return slope

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, object], ...] = ()
        if args["beta"] != 1.0:
            kwargs += (("beta", args["beta"]),)
        if args["threshold"] != 20.0:
            kwargs += (("threshold", args["threshold"]),)
        return TorchCall("nn.Softplus", (), kwargs)

    def describe(self, args: Args) -> str:
        return "Softplus" if args["beta"] == 1.0 else f"Softplus {args['beta']:g}"


@register
class LogSoftmax(Activation):
    """log(softmax(x)) over channels (images) or features (flat input): nn.LogSoftmax(dim=1).

    A network ending in it gives log-probabilities; `train` keeps it, since cross-entropy on
    log-probabilities is the negative log-likelihood of the same distribution (nn.NLLLoss).
    Shape: unchanged.
    Example: `FC(10), LogSoftmax`.
    """

    name = "LogSoftmax"
    np_keep = "y"
    signature = (ArgSpec("dim", "int", 1, role="fixed"),)  # nn.LogSoftmax(dim=1): over channels or features

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.LogSoftmax", (), (("dim", 1),))

    def np_apply(self, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        shifted = np.subtract(x, x.max(axis=1, keepdims=True), out=out)
        shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return shifted

    def np_derivative(self, args: Args, x: np.ndarray | None, y: np.ndarray | None, dy: np.ndarray) -> np.ndarray:
        assert y is not None
        return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)


@register
class PReLU(LayerKind):
    """max(0, x) + a * min(0, x) with a learnable slope `a` (nn.PReLU): one for all channels, or one per channel.

    Args: num_parameters=1 (1, or the input's channels/features), init=0.25.
    Shape: unchanged; num_parameters parameters.
    Example: `Conv(64, 3, pad=1), PReLU(64)`.
    """

    name = "PReLU"
    family = "activation"
    np_supported = True
    signature = (ArgSpec("num_parameters", "int", 1, minimum=1, keywords=("channels",)), ArgSpec("init", "float", 0.25))

    def infer(self, args: Args, shape: Shape) -> Shape:
        count = args["num_parameters"]
        if count not in (1, shape.channels):
            noun = "channels" if shape.is_image else "features"
            raise LayerError(
                f"PReLU: num_parameters must be 1 or the input's {noun} ({shape.channels}); got {count}",
                "one slope for all, or one per channel (nn.PReLU refuses any other count)",
                arg="num_parameters",
                recovered=shape,
            )
        return shape

    def param_count(self, args: Args, shape: Shape) -> int:
        return int(args["num_parameters"])

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: tuple[tuple[str, object], ...] = ()
        if args["num_parameters"] != 1:
            kwargs += (("num_parameters", args["num_parameters"]),)
        if args["init"] != 0.25:
            kwargs += (("init", args["init"]),)
        return TorchCall("nn.PReLU", (), kwargs)

    def describe(self, args: Args) -> str:
        return "PReLU" if args["num_parameters"] == 1 else f"PReLU {args['num_parameters']}"

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        return {"weight": np.full(args["num_parameters"], args["init"], dtype=dtype)}

    @staticmethod
    def _slope(weight: np.ndarray, ndim: int) -> np.ndarray:
        """The weight broadcast over (N, C, ...): per channel along axis 1."""
        return weight.reshape(1, -1, *([1] * (ndim - 2))) if weight.size > 1 else weight.reshape(())

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        ctx.save(x=x)
        weight = params["weight"]
        y = np.multiply(x, self._slope(weight, x.ndim))
        # Slopes at most 1 (the usual case): max(x, a x) is PReLU; at least 1: min(x, a x). Two passes either way.
        if (weight <= 1).all():
            return np.maximum(y, x, out=y)
        if (weight >= 1).all():
            return np.minimum(y, x, out=y)
        return np.where(x > 0, x, y)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        x = ctx.saved["x"]
        weight = params["weight"]
        negative = x <= 0
        per_position = np.where(negative, dy * x, 0.0)
        if weight.size > 1:
            axes = (0, *range(2, x.ndim))
            dw = per_position.sum(axis=axes)
        else:
            dw = np.asarray(per_position.sum()).reshape(1)
        dx = np.where(negative, dy * self._slope(weight, x.ndim), dy) if ctx.need_dx else None
        return dx, {"weight": dw.astype(weight.dtype, copy=False)}
