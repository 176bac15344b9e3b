"""Fully connected layers and flattening."""

from __future__ import annotations

from ..shapes import Shape
from .base import ArgSpec, Args, LayerKind, register, require_flat


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
    input_rank = "flat"
    signature = (ArgSpec("out", "int", minimum=1), ArgSpec("bias", "bool", True))

    def infer(self, args: Args, shape: Shape) -> Shape:
        require_flat(self.name, shape)
        return Shape((args["out"],))

    def param_count(self, args: Args, shape: Shape) -> int:
        return shape[0] * args["out"] + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return shape[0] * args["out"]

    def describe(self, args: Args) -> str:
        return f"FC {args['out']}" + ("" if args["bias"] else " no bias")


@register
class Flatten(LayerKind):
    """Flatten an image to a vector (nn.Flatten); a flat input passes unchanged.

    Shape: C x H x W -> C*H*W.
    Example: `GlobalAvgPool, flatten, FC(10)`.
    """

    name = "Flatten"
    family = "reshape"
    is_view = True

    def infer(self, args: Args, shape: Shape) -> Shape:
        return Shape((shape.numel,))

    def global_window(self, args: Args, shape: Shape) -> bool:
        return shape.is_image
