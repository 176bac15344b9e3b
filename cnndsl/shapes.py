"""Tensor shapes (batch dimension excluded) and the sliding-window arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass

Pair = tuple[int, int]


class Shape(tuple[int, ...]):
    """An immutable tensor shape without the batch dimension: (C, H, W) or (N,)."""

    __slots__ = ()

    def __new__(cls, dims: tuple[int, ...] | list[int]) -> Shape:
        return super().__new__(cls, tuple(int(d) for d in dims))

    @property
    def is_image(self) -> bool:
        return len(self) == 3

    @property
    def is_flat(self) -> bool:
        return len(self) == 1

    @property
    def channels(self) -> int:
        """Channels of an image, or the length of a flat vector."""
        return self[0]

    @property
    def spatial(self) -> Pair:
        return (self[1], self[2]) if self.is_image else (1, 1)

    @property
    def numel(self) -> int:
        return math.prod(self)

    def __str__(self) -> str:
        return "x".join(str(d) for d in self)

    def describe(self) -> str:
        """Words for messages: `an image 64x56x56` or `a flat vector of 784`."""
        return f"an image {self}" if self.is_image else f"a flat vector of {self[0]}" if self.is_flat else str(self)

    @classmethod
    def parse(cls, text: str) -> Shape:
        """Parse `3x224x224` or `784`; raises ValueError with a readable message."""
        parts = text.lower().replace("×", "x").replace(",", "x").strip().split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected CxHxW or N, such as 3x224x224; got {text!r}") from None
        if len(dims) not in (1, 3) or any(d < 1 for d in dims):
            raise ValueError(f"expected CxHxW or N with positive sizes, such as 3x224x224; got {text!r}")
        return cls(dims)


@dataclass(frozen=True)
class Window:
    """A sliding window along both spatial axes, as Conv2d and the pools use."""

    kernel: Pair
    stride: Pair
    pad: Pair
    dilation: Pair = (1, 1)
    ceil: bool = False
    pad_extra: Pair = (0, 0)
    """One more padding on the bottom/right: PyTorch's `padding="same"` with an even kernel (stride 1 only)."""

    def span(self, axis: int) -> int:
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def output_size(self, size: int, axis: int) -> int:
        """PyTorch's output size along one axis (may be < 1: the caller reports that)."""
        span, stride, pad = self.span(axis), self.stride[axis], self.pad[axis]
        numerator = size + 2 * pad + self.pad_extra[axis] - span
        if numerator < 0:
            return 0
        if not self.ceil:
            return numerator // stride + 1
        out = -(-numerator // stride) + 1
        # PyTorch drops a last window that would start inside the right padding.
        if (out - 1) * stride >= size + pad:
            out -= 1
        return out

    def dropped_pixels(self, size: int, axis: int) -> int:
        """Real (non-padding) input pixels after the last window, beyond the gap strides leave anyway."""
        out = self.output_size(size, axis)
        if out < 1:
            return 0
        span, stride, pad = self.span(axis), self.stride[axis], self.pad[axis]
        last_covered = (out - 1) * stride + span - 1
        dropped = max(0, pad + size - 1 - last_covered)
        return dropped if dropped > max(0, stride - span) else 0

    def arithmetic(self, size: int, axis: int) -> str:
        """The lecture's formula with numbers: `(7 - 3)/3 + 1 = 2.33`."""
        kernel = self.span(axis)
        stride, pad = self.stride[axis], self.pad[axis]
        pad_text = f" + 2*{pad}" if pad else ""
        value = (size - kernel + 2 * pad) / stride + 1
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        return f"({size} - {kernel}{pad_text})/{stride} + 1 = {text}"
