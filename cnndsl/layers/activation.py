"""Element-wise activations and Softmax."""

from __future__ import annotations

from ..shapes import Shape
from .base import ArgSpec, Args, LayerKind, register


class Activation(LayerKind):
    """An element-wise function: the shape is unchanged and there are no parameters."""

    family = "activation"

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape


def _activation(name: str, doc: str) -> type[Activation]:
    cls = type(name, (Activation,), {"name": name, "__doc__": f"{doc}\n\nShape: unchanged.\nExample: `Conv(64, 3), {name}`.\n"})
    return register(cls)  # type: ignore[return-value]


ReLU = _activation("ReLU", "max(0, x) (nn.ReLU).")
ReLU6 = _activation("ReLU6", "min(max(0, x), 6) (nn.ReLU6).")
Sigmoid = _activation("Sigmoid", "1 / (1 + exp(-x)) (nn.Sigmoid).")
Tanh = _activation("Tanh", "tanh(x) (nn.Tanh).")
GELU = _activation("GELU", "x * Phi(x), the exact (erf) form (nn.GELU).")
SiLU = _activation("SiLU", "x * sigmoid(x), also called swish (nn.SiLU).")
Hardswish = _activation("Hardswish", "x * relu6(x + 3) / 6 (nn.Hardswish).")
Hardsigmoid = _activation("Hardsigmoid", "relu6(x + 3) / 6 (nn.Hardsigmoid).")


@register
class LeakyReLU(Activation):
    """max(0, x) + slope * min(0, x) (nn.LeakyReLU).

    Args: slope=0.01.
    Shape: unchanged.
    Example: `LeakyReLU(0.2)`.
    """

    name = "LeakyReLU"
    signature = (ArgSpec("slope", "float", 0.01),)

    def describe(self, args: Args) -> str:
        return f"LeakyReLU {args['slope']:g}"


@register
class Softmax(Activation):
    """Softmax over channels (images) or features (flat input): nn.Softmax(dim=1).

    Shape: unchanged.
    Example: `FC(10), Softmax`.
    """

    name = "Softmax"
