"""Receptive field and effective stride against PyTorch's autograd, through layers that shrink and grow the map.

The summary's figures are the widest input span any output pixel depends on, and the input
pixels per output pixel. Here they are measured: the gradient of one output pixel with respect
to the input is nonzero exactly where that pixel reads (positive weights, no ReLU, so nothing
cancels), for every output row and column, away from the borders.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest

import cnndsl

torch = pytest.importorskip("torch")

from tests.torch_checks import one_torch_thread  # noqa: E402,F401  (fixture)

SIDE = 48


def measured(network: cnndsl.Network, middle_only: bool = False) -> list[tuple[int, list[tuple[int, int, int]]]]:
    """Per axis (height, width): the widest interior span and (pixel, first, last) for every interior output pixel."""
    torch.manual_seed(0)
    module = network.to_torch().double().eval()
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            tensor.copy_(torch.rand_like(tensor) + 0.5 if "weight" in name else torch.zeros_like(tensor))
    x = torch.rand(1, *network.input_shape, dtype=torch.double, requires_grad=True)
    y = module(x)
    _, _, out_h, out_w = y.shape
    axes = []
    for axis, count in ((0, out_h), (1, out_w)):
        spans = []
        for o in range(count // 3, 2 * count // 3) if middle_only else range(count):
            # A whole row (column) of outputs shares one height (width) span: their sum reaches it,
            # even where single pixels depend on nothing (between a transposed conv's taps).
            line = y[0, :, o, :] if axis == 0 else y[0, :, :, o]
            (grad,) = torch.autograd.grad(line.sum(), x, retain_graph=True)
            reached = (grad[0].abs().sum(dim=0).sum(dim=1 - axis) > 0).nonzero().flatten().tolist()
            if (
                reached and reached[0] > 0 and reached[-1] < network.input_shape[1 + axis] - 1
            ):  # a span clipped by a border says nothing
                spans.append((o, reached[0], reached[-1]))
        axes.append((max(last - first + 1 for _, first, last in spans), spans))
    return axes


def assert_figures_match(source: str) -> None:
    network = cnndsl.parse(source)
    for axis, (widest, spans) in enumerate(measured(network)):
        assert network.receptive_field[axis] == widest, source
        # The spans move by the effective stride per output pixel: over many pixels, the drift from it is
        # below one span (a stride off by even 1/8 drifts further than that across the map).
        stride = network.effective_stride[axis]
        (o1, first1, _), (o2, first2, _) = spans[0], spans[-1]
        assert o2 - o1 >= 8, source
        assert abs((first2 - first1) - stride * (o2 - o1)) < widest, (source, stride)


FIXED = [
    # The figures the summary shows, each measured.
    "Conv(2, 3, pad=1), Conv(2, 3, stride=2, pad=1), Conv(2, 3, pad=1)",
    "Conv(2, 3, stride=2, pad=1), Upsample(2), Conv(2, 2)",
    "Upsample(2), Conv(2, 2)",
    "Upsample(3, mode=bilinear), Conv(2, 3)",
    "Conv(2, 3, stride=2), Upsample(2, mode=bilinear, align_corners=true), Conv(2, 3, pad=1)",
    "Conv(2, 3, stride=2, pad=1), ConvTranspose(2, 4, stride=2, pad=1)",
    "ConvTranspose(2, 3, stride=2, dilation=2), Conv(2, 3)",
    "AvgPool(2), Conv(2, 3, pad=1), ConvTranspose(2, 2, stride=2), Conv(2, 3, pad=1)",
    "Conv(8, 3, pad=1), PixelShuffle(2), Conv(2, 3)",
    "PixelUnshuffle(2), Conv(2, 3, pad=1)",
    "Conv(2, 3, stride=3), Upsample(size=(40, 40), mode=bilinear), Conv(2, 2)",
    "Conv(2, 3, stride=2, pad=1), ConvTranspose(2, 3, stride=3, pad=1, output_pad=1), Conv(2, 3)",
    # U-Net's shape: a skip concatenated with the upsampled path (the union, offsets included).
    "e: Conv(2, 3, pad=1), AvgPool(2), Conv(2, 3, pad=1), Concat[@e | ConvTranspose(2, 2, stride=2)], Conv(2, 3, pad=1)",
]


@pytest.mark.parametrize("body", FIXED)
def test_the_summary_figures_are_the_measured_ones(body: str) -> None:
    assert_figures_match(f"input 1x{SIDE}x{SIDE}\n{body}")


def random_body(rng: random.Random) -> str:
    """A few layers that shrink and grow the map by small factors, the map kept between 6 and 96 pixels."""
    layers, size = [], SIDE
    for _ in range(rng.randint(2, 5)):
        choices = ["conv", "avgpool", "transposed", "upsample", "shuffle"]
        kind = rng.choice([c for c in choices if not (size > 48 and c in ("transposed", "upsample", "shuffle"))])
        if kind == "conv" or size < 12:
            k, s, d = rng.randint(1, 4), rng.randint(1, 2), rng.randint(1, 2)
            p = rng.randint(0, (d * (k - 1)) // 2)
            layers.append(f"Conv(2, {k}, stride={s}, pad={p}, dilation={d})")
            size = (size + 2 * p - d * (k - 1) - 1) // s + 1
        elif kind == "avgpool":
            layers.append("AvgPool(2)")
            size //= 2
        elif kind == "transposed":
            k, s, d = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 2)
            p = rng.randint(0, (d * (k - 1)) // 2)
            op = rng.randint(0, max(s, d) - 1)
            layers.append(f"ConvTranspose(2, {k}, stride={s}, pad={p}, output_pad={op}, dilation={d})")
            size = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        elif kind == "upsample":
            mode = rng.choice(["nearest", "bilinear", "bicubic"])
            if rng.random() < 0.5:
                scale = rng.randint(2, 3)
                layers.append(f"Upsample({scale}, mode={mode})")
                size *= scale
            else:
                new = rng.randint(size + 1, 2 * size + 3)
                layers.append(f"Upsample(size=({new}, {new}), mode={mode})")
                size = new
        else:
            layers.append("Conv(8, 1), PixelShuffle(2)")
            size *= 2
    return ", ".join(layers)


@pytest.mark.parametrize("seed", range(12))
def test_random_networks_that_shrink_and_grow_the_map(seed: int) -> None:
    rng = random.Random(seed)
    while True:  # draw again until enough output pixels see no border to measure on
        source = f"input 1x{SIDE}x{SIDE}\n{random_body(rng)}"
        network = cnndsl.parse(source)
        if min(network.output_shape[1:]) >= 24 and max(network.receptive_field) <= SIDE // 3:
            break
    assert_figures_match(source)


def test_a_fractional_stride_is_written_as_a_fraction() -> None:
    network = cnndsl.parse("input 3x16x16\nConv(4, 3, pad=1), Upsample(2)")
    assert network.effective_stride == (Fraction(1, 2), Fraction(1, 2))
    assert "Receptive field:      3x3 (effective stride 1/2x1/2)" in network.summary()
    report = network.to_json()
    assert report["effective_stride"] == ["1/2", "1/2"] and report["layers"][0]["effective_stride"] == [1, 1]


def test_unet_returns_to_stride_one_with_the_field_of_its_skeleton() -> None:
    # Four poolings down to stride 16 and four stride-2 transposed convolutions back to 1; the field
    # is measured on U-Net's skeleton (one channel, its geometry only: AvgPool reads MaxPool's window).
    network = cnndsl.load(Path(__file__).resolve().parent.parent / "architectures" / "unet.cnn")
    assert network.effective_stride == (1, 1) and network.receptive_field == (204, 204)
    skeleton = cnndsl.parse(
        "input 1x320x320\nblock D(c) = [Conv(c, 3, pad=1), Conv(c, 3, pad=1)]\n"
        "e1: D(1), e2: [AvgPool(2), D(1)], e3: [AvgPool(2), D(1)], e4: [AvgPool(2), D(1)], AvgPool(2), D(1)\n"
        + "".join(f"Concat[@e{level} | ConvTranspose(1, 2, stride=2)], D(1)\n" for level in (4, 3, 2, 1))
        + "Conv(1, 1)"
    )
    assert skeleton.receptive_field == (204, 204) and skeleton.effective_stride == (1, 1)
    assert [widest for widest, _ in measured(skeleton, middle_only=True)] == [204, 204]


@pytest.mark.parametrize("seed", range(20))
def test_the_closed_form_window_rule_equals_the_table_rule(seed: int) -> None:
    # AxisField.window answers whole-stride, period-1 fields in closed form; `then` builds the
    # table every other field needs. Both must agree wherever the closed form applies.
    from cnndsl.receptive import AxisField

    rng = random.Random(seed)
    axis = AxisField(Fraction(1), ((0, 0),))
    for _ in range(6):
        span, stride, pad = rng.randint(1, 7), rng.randint(1, 3), rng.randint(0, 3)
        closed = axis.window(span, stride, pad)
        table = axis.then(lambda o, s=stride, p=pad, k=span: (o * s - p, o * s - p + k - 1), 1, Fraction(stride))
        assert (closed.stride, closed.spans) == (table.stride, table.spans)
        axis = closed
