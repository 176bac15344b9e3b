"""Receptive fields and effective strides, exact through layers that shrink and that grow the map.

The lecture's rule, field' = field + (kernel span - 1)·stride_eff and stride_eff' = stride_eff·S,
holds while every map pixel reads a window of the one before. Layers that grow the map break
it: after `Upsample(2)` the effective stride is 1/2 (two map pixels per input pixel), and
which input pixels a later window reaches depends on where the window starts: a 2-tap window
reads one or two source pixels. So each spatial axis is tracked exactly, as the span of input
pixels (first, last) that every map pixel `o` depends on. That span is periodic:
span(o + period) = span(o) + stride_eff·period, so a table over one period describes it all
(a network without such layers keeps a period of 1: the lecture's numbers). The receptive
field is the widest span over the period; the effective stride a fraction, 1/2 after a
2x upsampling of the input (`Fraction`; the summary writes it `1/2`).

Borders are left out, as in the lecture's rule: the field is that of a pixel inside the map
(ResNet-18's 435x435 at any input size). A pixel can depend on no input at all (the
zero-weight taps between a transposed convolution's strided taps); it counts for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

MAX_PERIOD = 4096
"""The longest period tracked exactly; beyond it (chains of resizes by ratios such as 13/7) the
table keeps its first MAX_PERIOD pixels, so checking stays fast and small on any input."""

Span = tuple[int, int] | None
"""First and last input pixel one map pixel depends on; None for none."""

Reads = Callable[[int], Span]
"""Map pixel o of the layer's output -> the first and last pixel of its input map that it reads."""


@dataclass(frozen=True)
class AxisField:
    """The input span of every map pixel along one spatial axis: `spans[o % period]`, shifted."""

    stride: Fraction
    """Input pixels per map pixel (the effective stride): 2 after a stride-2 conv, 1/2 after Upsample(2)."""
    spans: tuple[Span, ...]

    @property
    def period(self) -> int:
        return len(self.spans)

    def at(self, o: int) -> Span:
        turns, index = divmod(o, self.period)
        span = self.spans[index]
        if span is None:
            return None
        shift = math.floor(turns * self.period * self.stride)  # a whole number while the period is exact
        return span[0] + shift, span[1] + shift

    @cached_property
    def size(self) -> int:
        """The widest span (the receptive field along this axis), in input pixels."""
        return max((last - first + 1 for first, last in (s for s in self.spans if s is not None)), default=0)

    def then(self, reads: Reads, reads_period: int, ratio: Fraction) -> AxisField:
        """After a layer whose output pixel o reads `reads(o)` of this map, where reads(o + reads_period)
        is reads(o) moved by ratio·reads_period pixels (ratio: this map's pixels per output pixel)."""
        step = ratio * reads_period  # whole: the layer's own period moves its reads by whole pixels
        period = reads_period * (self.period // math.gcd(self.period, int(step)) if step else 1)
        spans = tuple(self._union(reads(o)) for o in range(min(period, MAX_PERIOD)))
        return _shortest(AxisField(self.stride * ratio, spans))

    def _union(self, read: Span) -> Span:
        """The input span of map pixels read[0]..read[1]: the spans grow with o, so the first
        and the last pixel that depend on any input give it."""
        if read is None:
            return None
        first = next((s for s in map(self.at, range(read[0], read[1] + 1)) if s is not None), None)
        if first is None:
            return None
        last = next(s for s in map(self.at, range(read[1], read[0] - 1, -1)) if s is not None)
        return first[0], last[1]

    # ------------------------------------------------------------ the layers' rules

    def window(self, span: int, stride: int, pad: int) -> AxisField:
        """A sliding window (Conv, pools): output o reads o·S - P .. o·S - P + span - 1."""
        if self.period == 1 and self.stride.denominator == 1 and self.spans[0] is not None:
            # The lecture's case (every pixel's span one whole stride after the last): the new
            # span in closed form, field' = field + (span - 1)·stride_eff, without a table.
            step = self.stride.numerator
            first, last = self.spans[0]
            return AxisField(self.stride * stride, ((first - pad * step, last + (span - 1 - pad) * step),))
        return self.then(lambda o: (o * stride - pad, o * stride - pad + span - 1), 1, Fraction(stride))

    def transposed(self, kernel: int, stride: int, pad: int, dilation: int) -> AxisField:
        """ConvTranspose: input i adds into output o = i·S - P + j·D for each tap j, so output o
        reads the inputs i = (o + P - j·D)/S that are whole."""

        def reads(o: int) -> Span:
            sources = [(o + pad - j * dilation) // stride for j in range(kernel) if (o + pad - j * dilation) % stride == 0]
            return (min(sources), max(sources)) if sources else None

        return self.then(reads, stride, Fraction(1, stride))

    def resample(self, ratio: Fraction, mode: str, align_corners: bool) -> AxisField:
        """Upsample (and PixelShuffle, a nearest resize by channels): output o reads around
        source position (o + 1/2)·ratio - 1/2 (o·ratio with align_corners; floor(o·ratio) for
        nearest), ratio being input pixels per output pixel. Linear (bilinear, trilinear: one
        axis at a time) reads the two neighbours and bicubic four, except at a whole position,
        where the others' weights are 0."""

        def reads(o: int) -> Span:
            if mode == "nearest":
                source = math.floor(o * ratio)
                return source, source
            position = o * ratio if align_corners else (o + Fraction(1, 2)) * ratio - Fraction(1, 2)
            low = math.floor(position)
            if position == low:
                return low, low
            return (low - 1, low + 2) if mode == "bicubic" else (low, low + 1)

        return self.then(reads, ratio.denominator, ratio)


def _shortest(field: AxisField) -> AxisField:
    """The same field over its shortest period (a U-Net's decoder returns to a period of 1)."""
    period = field.period
    if period >= MAX_PERIOD:
        return field
    for candidate in range(1, period):
        if period % candidate or (field.stride * candidate).denominator != 1:
            continue
        shorter = AxisField(field.stride, field.spans[:candidate])
        if all(shorter.at(o) == field.spans[o] for o in range(candidate, period)):
            return shorter
    return field


Field = tuple[AxisField, ...]
"""One AxisField per spatial axis of the network's input (two for a flat input, as ever)."""


def identity(rank: int) -> Field:
    """The input itself: each pixel depends on itself."""
    return (AxisField(Fraction(1), ((0, 0),)),) * rank


def sizes(field: Field) -> tuple[int, ...]:
    return tuple(axis.size for axis in field)


def strides(field: Field) -> tuple[Fraction, ...]:
    return tuple(axis.stride for axis in field)


def union(fields: Sequence[Field]) -> Field:
    """The field of a merge: each output pixel depends on the same pixel of every branch.

    Branches at the same effective stride are united pixel by pixel (a skip connection and the
    path beside it, offsets included). Branches of the same map size at different strides
    (rare: a resize beside a stride) keep the widest branch's field.
    """
    merged = []
    for axes in zip(*fields, strict=True):
        if len({axis.stride for axis in axes}) > 1:
            merged.append(max(axes, key=lambda axis: (axis.size, axis.stride)))
            continue
        if all(axis.period == 1 and axis.spans[0] is not None for axis in axes):
            # The common merge (a residual block): one span per branch, united directly.
            spans_of = [axis.spans[0] for axis in axes]
            merged.append(AxisField(axes[0].stride, ((min(s[0] for s in spans_of), max(s[1] for s in spans_of)),)))
            continue
        period = min(math.lcm(*(axis.period for axis in axes)), MAX_PERIOD)
        spans = []
        for o in range(period):
            parts = [s for s in (axis.at(o) for axis in axes) if s is not None]
            spans.append((min(p[0] for p in parts), max(p[1] for p in parts)) if parts else None)
        merged.append(_shortest(AxisField(axes[0].stride, tuple(spans))))
    return tuple(merged)


def stride_text(stride: Fraction) -> str:
    """`2`, or `1/2` for a stride below one input pixel (the summary's and the drawing's spelling)."""
    return str(stride)


def stride_json(stride: Fraction) -> int | str:
    """A whole stride as a number (as ever), a fractional one as its exact text: `"1/2"`."""
    return int(stride) if stride.denominator == 1 else str(stride)
