"""Normalisation and regularisation: BatchNorm and Dropout."""

from __future__ import annotations

from ..shapes import Shape
from .base import ArgSpec, Args, LayerError, LayerKind, register


@register
class BatchNorm(LayerKind):
    """Batch normalisation: nn.BatchNorm2d on images, nn.BatchNorm1d on flat input.

    Args: eps=1e-5, momentum=0.1.
    Shape: unchanged. Parameters: weight and bias per channel; buffers: running mean
    and variance per channel and num_batches_tracked.
    Example: `Conv(64, 3, bias=false), BN, ReLU`.
    """

    name = "BatchNorm"
    aliases = ("BN", "BatchNorm2d", "BatchNorm1d")
    family = "norm"
    signature = (ArgSpec("eps", "float", 1e-5), ArgSpec("momentum", "float", 0.1))

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        if args["eps"] <= 0:
            raise LayerError(f"BatchNorm: eps must be positive; got {args['eps']}", arg="eps")
        if not 0 <= args["momentum"] <= 1:
            raise LayerError(f"BatchNorm: momentum must be between 0 and 1; got {args['momentum']}", arg="momentum")
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        if len(shape) not in (1, 3):
            raise LayerError(f"BatchNorm needs an image or a flat input; got {shape}")
        return shape

    def param_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels

    def buffer_count(self, args: Args, shape: Shape) -> int:
        return 2 * shape.channels + 1

    def describe(self, args: Args) -> str:
        return "BatchNorm" if args["eps"] == 1e-5 else f"BatchNorm eps {args['eps']:g}"


@register
class Dropout(LayerKind):
    """Dropout (nn.Dropout): zeroes elements with probability p while training.

    Args: p=0.5 (0 <= p <= 1).
    Shape: unchanged.
    Example: `Dropout(0.2)`.
    """

    name = "Dropout"
    family = "regularization"
    signature = (ArgSpec("p", "float", 0.5),)

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        if not 0 <= args["p"] <= 1:
            raise LayerError(f"Dropout: p must be between 0 and 1; got {args['p']}", arg="p")
        return args

    def infer(self, args: Args, shape: Shape) -> Shape:
        return shape

    def describe(self, args: Args) -> str:
        return f"Dropout {args['p']:g}"
