"""Element-wise activations and Softmax."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..shapes import Shape
from .base import Args, ArgSpec, LayerKind, TorchCall, register, unsupported

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors
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


def _gelu(self: Activation, args: Args, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.multiply(x * 0.5, 1.0 + ops.erf(x * (1 / math.sqrt(2))), out=out)


def _gelu_derivative(self: Activation, args: Args, x: np.ndarray, y: None, dy: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1.0 + ops.erf(x * (1 / math.sqrt(2))))
    pdf = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return dy * (cdf + x * pdf)


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
GELU = _activation("GELU", "x * Phi(x), the exact (ops.erf) form (nn.GELU).", np_apply=_gelu, np_derivative=_gelu_derivative)
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
