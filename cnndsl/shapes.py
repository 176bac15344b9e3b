"""Tensor shapes (batch dimension excluded) and the sliding-window arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass

Pair = tuple[int, int]
Sizes = tuple[int, ...]
"""One value per spatial axis: (L,), (H, W) or (D, H, W); kernels, strides, paddings, receptive fields."""

SPATIAL_AXES = {1: "L", 2: "HxW", 3: "DxHxW"}
"""The spatial axes by their number, as `input` lines spell them after the channels."""


class Shape(tuple[int, ...]):
    """An immutable tensor shape without the batch dimension: (N,) a flat vector, or C and 1, 2
    or 3 spatial axes: (C, L) a signal, (C, H, W) an image, (C, D, H, W) a volume."""

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
    def spatial_rank(self) -> int:
        """The number of spatial axes: 0 for a flat vector, 1 for a signal, 2 an image, 3 a volume."""
        return len(self) - 1

    @property
    def has_space(self) -> bool:
        """True for a signal, an image or a volume: channels followed by spatial axes."""
        return len(self) > 1

    @property
    def channels(self) -> int:
        """Channels of an image, or the length of a flat vector."""
        return self[0]

    @property
    def spatial(self) -> Sizes:
        """The spatial sizes ((L,), (H, W) or (D, H, W)); () for a flat vector."""
        return tuple(self[1:])

    @property
    def numel(self) -> int:
        return math.prod(self)

    def __str__(self) -> str:
        return "x".join(str(d) for d in self)

    def describe(self) -> str:
        """Words for messages: `an image 64x56x56`, `a flat vector of 784`, `a 1-D signal 32x8000 (CxL)`."""
        if self.is_flat:
            return f"a flat vector of {self[0]}"
        if self.is_image:
            return f"an image {self}"
        return f"a {self.spatial_rank}-D {'signal' if self.spatial_rank == 1 else 'volume'} {self} (Cx{SPATIAL_AXES[self.spatial_rank]})"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """Parse `3x224x224`, `784`, `1x8000` or `3x16x112x112`; raises ValueError with a readable message."""
        parts = text.lower().replace("×", "x").replace(",", "x").strip().split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected CxHxW, CxL, CxDxHxW or N, such as 3x224x224; got {text!r}") from None
        if len(dims) not in (1, 2, 3, 4) or any(d < 1 for d in dims):
            raise ValueError(f"expected CxHxW, CxL, CxDxHxW or N with positive sizes, such as 3x224x224; got {text!r}")
        return cls(dims)


@dataclass(frozen=True)
class Window:
    """A sliding window along every spatial axis, as Conv1d/2d/3d and the pools use (one entry per axis)."""

    kernel: Sizes
    stride: Sizes
    pad: Sizes
    dilation: Sizes = (1, 1)
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
