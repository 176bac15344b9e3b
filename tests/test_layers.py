"""Per layer kind: shape rule, parameters, buffers, MACs and bad arguments, over the registry.

Every registered kind must have a row in LAYER_CASES, so adding a kind without its test fails.
"""

from __future__ import annotations

import pytest

import cnndsl
from cnndsl import CnnDslError
from cnndsl.layers import KINDS, MergeKind
from cnndsl.layers.activation import Activation
from cnndsl.layers.base import LayerKind

# kind -> [(call, input shape, output shape, params, buffers, macs)]
LAYER_CASES: dict[str, list[tuple[str, str, tuple[int, ...], int, int, int]]] = {
    "Conv": [
        ("Conv(8, 3)", "3x10x10", (8, 8, 8), 8 * 3 * 9 + 8, 0, 8 * 8 * 8 * 3 * 9),
        ("Conv(8, (3, 1), stride=(2, 1), pad=(1, 0), bias=false)", "4x9x9", (8, 5, 9), 8 * 4 * 3, 0, 8 * 5 * 9 * 4 * 3),
        ("Conv(8, 3, dilation=2, pad=2)", "2x7x7", (8, 7, 7), 8 * 2 * 9 + 8, 0, 8 * 49 * 2 * 9),
        ("Conv(8, 3, groups=4, pad=same)", "4x6x6", (8, 6, 6), 8 * 1 * 9 + 8, 0, 8 * 36 * 1 * 9),
        ("Conv(8, 4, pad=same, pad_mode=reflect)", "2x7x6", (8, 7, 6), 8 * 2 * 16 + 8, 0, 8 * 42 * 2 * 16),
        ("Conv2d(2, 8, 3, 1, 1, 1, 1, False, circular)", "2x5x5", (8, 5, 5), 8 * 2 * 9, 0, 8 * 25 * 2 * 9),
    ],
    "DWConv": [
        ("DWConv(3, stride=2, pad=1)", "6x8x8", (6, 4, 4), 6 * 9 + 6, 0, 6 * 16 * 9),
        ("DWConv(5, multiplier=2, bias=false)", "3x9x9", (6, 5, 5), 6 * 25, 0, 6 * 25 * 25),
        ("DWConv((2, 3), pad=same, pad_mode=replicate)", "3x5x5", (3, 5, 5), 3 * 6 + 3, 0, 3 * 25 * 6),
    ],
    "MaxPool": [("MaxPool(2)", "3x9x9", (3, 4, 4), 0, 0, 0), ("Pool(3, stride=2, pad=1)", "3x8x8", (3, 4, 4), 0, 0, 0)],
    "AvgPool": [("AvgPool(2, ceil=true)", "3x9x9", (3, 5, 5), 0, 0, 0), ("AvgPool(3, 1, 1)", "2x5x5", (2, 5, 5), 0, 0, 0)],
    "GlobalAvgPool": [("GlobalAvgPool", "16x7x5", (16, 1, 1), 0, 0, 0)],
    "AdaptiveAvgPool": [
        ("AdaptiveAvgPool(7)", "8x13x13", (8, 7, 7), 0, 0, 0),
        ("AdaptiveAvgPool((2, 3))", "8x4x4", (8, 2, 3), 0, 0, 0),
    ],
    "GlobalMaxPool": [
        ("GlobalMaxPool", "16x7x5", (16, 1, 1), 0, 0, 0),
        ("GMP", "2x3x3", (2, 1, 1), 0, 0, 0),
        ("GlobalMaxPool", "4x9", (4, 1), 0, 0, 0),
        ("GMP", "3x2x5x6", (3, 1, 1, 1), 0, 0, 0),
    ],
    "AdaptiveMaxPool": [
        ("AdaptiveMaxPool(7)", "8x13x13", (8, 7, 7), 0, 0, 0),
        ("AdaptiveMaxPool2d((2, 3))", "8x4x4", (8, 2, 3), 0, 0, 0),
        ("AdaptiveMaxPool(5)", "4x12", (4, 5), 0, 0, 0),
        ("AdaptiveMaxPool1d(output_size=3, return_indices=false)", "4x12", (4, 3), 0, 0, 0),
        ("AdaptiveMaxPool((1, 2, 3))", "2x4x5x6", (2, 1, 2, 3), 0, 0, 0),
        ("AdaptiveMaxPool3d(2)", "2x4x5x6", (2, 2, 2, 2), 0, 0, 0),
    ],
    "PixelShuffle": [
        ("PixelShuffle(3)", "18x4x5", (2, 12, 15), 0, 0, 0),
        ("PixelShuffle(upscale_factor=2)", "4x1x1", (1, 2, 2), 0, 0, 0),
    ],
    "PixelUnshuffle": [("PixelUnshuffle(2)", "3x4x6", (12, 2, 3), 0, 0, 0)],
    "FC": [
        ("FC(10)", "100", (10,), 1010, 0, 1000),
        ("Linear(100, 10, bias=false)", "100", (10,), 1000, 0, 1000),
        ("Dense(1)", "5", (1,), 6, 0, 5),
    ],
    "PointwiseFC": [
        ("PointwiseFC(8)", "4x3x5", (8, 3, 5), 4 * 8 + 8, 0, 8 * 15 * 4),
        ("PointwiseLinear(out_features=2, bias=false)", "6x1x1", (2, 1, 1), 12, 0, 12),
    ],
    "Flatten": [("flatten", "3x4x5", (60,), 0, 0, 0), ("Flatten", "7", (7,), 0, 0, 0)],
    "BatchNorm": [("BN", "16x4x4", (16, 4, 4), 32, 33, 0), ("BatchNorm(eps=0.001, momentum=0.01)", "10", (10,), 20, 21, 0)],
    "Dropout": [("Dropout", "3x4x4", (3, 4, 4), 0, 0, 0), ("Dropout(0.2)", "10", (10,), 0, 0, 0)],
    "LayerNorm": [
        ("LayerNorm", "16x4x4", (16, 4, 4), 32, 0, 0),
        ("LayerNorm(10, eps=1e-6, elementwise_affine=false)", "10", (10,), 0, 0, 0),
    ],
    "GroupNorm": [
        ("GroupNorm(4)", "16x4x4", (16, 4, 4), 32, 0, 0),
        ("GroupNorm(num_groups=2, num_channels=6, affine=false)", "6x3x3", (6, 3, 3), 0, 0, 0),
        ("GroupNorm(2)", "6x10", (6, 10), 12, 0, 0),
        ("GroupNorm(3, eps=1e-3)", "6x2x3x3", (6, 2, 3, 3), 12, 0, 0),
    ],
    "InstanceNorm": [
        ("InstanceNorm", "8x4x4", (8, 4, 4), 0, 0, 0),
        ("InstanceNorm(affine=true, track_running_stats=true)", "8x4x4", (8, 4, 4), 16, 17, 0),
        ("InstanceNorm2d(8, affine=true)", "8x2x1", (8, 2, 1), 16, 0, 0),
        ("InstanceNorm", "4x9", (4, 9), 0, 0, 0),
        ("InstanceNorm1d(4, 1e-3, 0.2, True, True)", "4x9", (4, 9), 8, 9, 0),
        ("InstanceNorm3d(num_features=4, affine=true)", "4x2x3x3", (4, 2, 3, 3), 8, 0, 0),
    ],
    "LocalResponseNorm": [
        ("LocalResponseNorm(5)", "16x4x4", (16, 4, 4), 0, 0, 0),
        ("LRN(5, alpha=5e-4, beta=0.75, k=2)", "3x2x2", (3, 2, 2), 0, 0, 0),
        ("LRN(3)", "6x10", (6, 10), 0, 0, 0),
        ("LocalResponseNorm(2, k=2)", "6x2x3x3", (6, 2, 3, 3), 0, 0, 0),
    ],
    "Scale": [
        ("Scale", "8x4x4", (8, 4, 4), 8, 0, 0),
        ("Scale(init=0.5)", "3x1x1", (3, 1, 1), 3, 0, 0),
        ("Scale", "8x5", (8, 5), 8, 0, 0),
        ("Scale(1e-5)", "3x2x2x2", (3, 2, 2, 2), 3, 0, 0),
    ],
    "Dropout2d": [
        ("Dropout2d", "3x4x4", (3, 4, 4), 0, 0, 0),
        ("Dropout2d(0.2, inplace=true)", "3x4x4", (3, 4, 4), 0, 0, 0),
        ("Dropout1d(0.3)", "3x9", (3, 9), 0, 0, 0),
        ("Dropout3d(p=0.1, inplace=false)", "3x2x4x4", (3, 2, 4, 4), 0, 0, 0),
    ],
    "StochasticDepth": [
        ("StochasticDepth(0.1)", "3x4x4", (3, 4, 4), 0, 0, 0),
        ("StochasticDepth(0.2, mode=batch)", "10", (10,), 0, 0, 0),
    ],
    "ReLU": [("ReLU", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "ReLU6": [("ReLU6", "5", (5,), 0, 0, 0)],
    "Sigmoid": [("Sigmoid", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Tanh": [("Tanh", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "GELU": [("GELU", "3x4x4", (3, 4, 4), 0, 0, 0), ("GELU(approximate=tanh)", "5", (5,), 0, 0, 0)],
    "ELU": [("ELU", "3x4x4", (3, 4, 4), 0, 0, 0), ("ELU(0.5, inplace=true)", "5", (5,), 0, 0, 0)],
    "Mish": [("Mish", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Softplus": [("Softplus(beta=2, threshold=10)", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "PReLU": [
        ("PReLU", "3x4x4", (3, 4, 4), 1, 0, 0),
        ("PReLU(3, init=0.1)", "3x4x4", (3, 4, 4), 3, 0, 0),
        ("PReLU(7)", "7", (7,), 7, 0, 0),
    ],
    "LogSoftmax": [("LogSoftmax", "10", (10,), 0, 0, 0), ("LogSoftmax(dim=1)", "4x2x2", (4, 2, 2), 0, 0, 0)],
    "SiLU": [("SiLU", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Hardswish": [("Hardswish", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Hardsigmoid": [("Hardsigmoid", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "LeakyReLU": [("LeakyReLU(0.2)", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Softmax": [("Softmax", "10", (10,), 0, 0, 0)],
    "ChannelShuffle": [("ChannelShuffle(2)", "8x4x4", (8, 4, 4), 0, 0, 0)],
    "Chunk": [("Chunk(2, 1)", "8x4x4", (4, 4, 4), 0, 0, 0), ("Chunk(4, 0)", "8", (2,), 0, 0, 0)],
    "Identity": [("Identity", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "ConvTranspose": [
        # (N - 1)·S - 2P + D·(K - 1) + output_pad + 1; weight (in, out/groups, kh, kw); MACs: each input pixel scatters a kernel
        ("ConvTranspose(8, 4, stride=2, pad=1)", "3x5x5", (8, 10, 10), 3 * 8 * 16 + 8, 0, 3 * 25 * 8 * 16),
        ("ConvTranspose(512, 4, bias=false)", "100x1x1", (512, 4, 4), 100 * 512 * 16, 0, 100 * 512 * 16),
        (
            "ConvTranspose(6, (3, 2), stride=(2, 1), pad=(1, 0), output_pad=(1, 0), groups=3)",
            "3x4x4",
            (6, 8, 5),
            3 * 2 * 6 + 6,
            0,
            48 * 2 * 6,
        ),
        ("ConvTranspose2d(4, 2, 3, 2, 1, 1, 1, False, 2)", "4x3x3", (2, 8, 8), 4 * 2 * 9, 0, 36 * 2 * 9),
        # 1-D and 3-D: the formula per axis, nn.ConvTranspose1d/3d (their spellings take PyTorch's signature).
        ("ConvTranspose(4, 3, stride=2, pad=1, output_pad=1)", "2x7", (4, 14), 2 * 4 * 3 + 4, 0, 2 * 7 * 4 * 3),
        ("ConvTranspose1d(4, 6, 5, 3, 2, 1, groups=2, bias=False)", "4x5", (6, 14), 4 * 3 * 5, 0, 4 * 5 * 3 * 5),
        (
            "ConvTranspose(2, (2, 3, 3), stride=(1, 2, 2), pad=(0, 1, 1))",
            "3x2x4x4",
            (2, 3, 7, 7),
            3 * 2 * 18 + 2,
            0,
            3 * 32 * 2 * 18,
        ),
        ("ConvTranspose3d(2, 4, 2, stride=2, bias=False)", "2x2x3x3", (4, 4, 6, 6), 2 * 4 * 8, 0, 2 * 18 * 4 * 8),
    ],
    "Upsample": [
        ("Upsample(2)", "3x4x5", (3, 8, 10), 0, 0, 0),
        ("Upsample(scale_factor=1.5, mode=bilinear, align_corners=true)", "2x4x5", (2, 6, 7), 0, 0, 0),
        ("Upsample(size=(7, 3), mode=bilinear)", "2x4x5", (2, 7, 3), 0, 0, 0),
        ("Upsample(size=9, mode=bicubic)", "2x4x5", (2, 9, 9), 0, 0, 0),
        ("MaxPool(2), Upsample(like=@input, mode=bilinear)", "2x4x5", (2, 4, 5), 0, 0, 0),
        ("Upsample(2)", "3x7", (3, 14), 0, 0, 0),
        ("Upsample(scale_factor=2.5, mode=linear, align_corners=true)", "3x4", (3, 10), 0, 0, 0),
        ("MaxPool(2), Upsample(like=@input, mode=linear)", "3x9", (3, 9), 0, 0, 0),
        ("Upsample(size=(3, 8, 8), mode=trilinear)", "2x2x4x4", (2, 3, 8, 8), 0, 0, 0),
        ("Upsample(2)", "2x2x3x4", (2, 4, 6, 8), 0, 0, 0),
        ("Upsample(scale_factor=(2, 1), mode=bilinear)", "2x4x5", (2, 8, 5), 0, 0, 0),
        ("Upsample((1, 2, 1.5))", "2x2x3x4", (2, 2, 6, 6), 0, 0, 0),
    ],
    "Reshape": [
        ("Reshape(4, 2, 3)", "24", (4, 2, 3), 0, 0, 0),
        ("Reshape(c=2, h=3, w=4)", "24", (2, 3, 4), 0, 0, 0),
        ("Unflatten(3, 2, 4)", "24", (3, 2, 4), 0, 0, 0),
        # PyTorch's spelling, nn.Unflatten(dim, unflattened_size); 2 and 4 entries give a signal and a volume.
        ("Unflatten(1, (3, 2, 4))", "24", (3, 2, 4), 0, 0, 0),
        ("Unflatten(dim=1, unflattened_size=(3, 2, 4))", "24", (3, 2, 4), 0, 0, 0),
        ("Unflatten(1, (6, 4))", "24", (6, 4), 0, 0, 0),
        ("Unflatten(1, (3, 2, 2, 2))", "24", (3, 2, 2, 2), 0, 0, 0),
    ],
    "Add": [("Add[ Conv(4, 1) | Identity ]", "4x4x4", (4, 4, 4), 20, 0, 4 * 16 * 4)],
    "Concat": [("Concat[ Conv(2, 1) | Identity ]", "4x4x4", (6, 4, 4), 10, 0, 2 * 16 * 4)],
    "Mul": [("Mul[ Identity | GlobalAvgPool ]", "4x4x4", (4, 4, 4), 0, 0, 0)],
}

# kind -> a call with a bad argument and a fragment of the expected message
BAD_ARGUMENTS: dict[str, tuple[str, str, str]] = {
    "Conv": ("Conv(8, 0)", "3x8x8", "`kernel` must be a positive integer"),
    "DWConv": ("DWConv(3, multiplier=0)", "3x8x8", "`multiplier` must be a positive integer"),
    "MaxPool": ("MaxPool(2, ceil=1)", "3x8x8", "`ceil` must be true or false"),
    "AvgPool": ("AvgPool(2, pad=-1)", "3x8x8", "`pad` must be a non-negative integer"),
    "AdaptiveAvgPool": ("AdaptiveAvgPool(0)", "3x8x8", "`size` must be a positive integer"),
    "FC": ("FC(out=2.5)", "10", "`out` must be a positive integer; got 2.5"),
    "PointwiseFC": ("PointwiseFC(0)", "3x8x8", "`out` must be a positive integer; got 0"),
    "BatchNorm": ("BN(eps=0)", "3x8x8", "eps must be positive"),
    "Dropout": ("Dropout(1.5)", "3x8x8", "p must be between 0 and 1"),
    "LayerNorm": ("LayerNorm(eps=-1)", "3x8x8", "LayerNorm: eps must be positive; got -1"),
    "GroupNorm": ("GroupNorm(3)", "8x4x4", "GroupNorm: groups=3 must divide the channels; got 8"),
    "InstanceNorm": ("InstanceNorm(64)", "3x8x8", "InstanceNorm: `affine` must be true or false; got 64"),
    "LocalResponseNorm": ("LRN(5, k=0)", "3x8x8", "LocalResponseNorm: k must be positive; got 0"),
    "Scale": ("Scale(init=true)", "3x8x8", "Scale: `init` must be a number; got true"),
    "Dropout2d": ("Dropout2d(-0.1)", "3x8x8", "Dropout2d: p must be between 0 and 1; got -0.1"),
    "StochasticDepth": ("StochasticDepth(0.1, mode=col)", "3x8x8", "StochasticDepth: `mode` must be one of row, batch; got col"),
    "LeakyReLU": ("LeakyReLU(true)", "3x8x8", "`slope` must be a number"),
    "ChannelShuffle": ("ChannelShuffle(3)", "8x4x4", "groups=3 must divide the channels"),
    "Chunk": ("Chunk(3, 0)", "8x4x4", "3 chunks must divide the channels"),
    "AdaptiveMaxPool": ("AdaptiveMaxPool((2, 0))", "3x8x8", "`size` must be a positive integer or a tuple of them"),
    "PixelShuffle": ("PixelShuffle(2)", "6x4x4", "PixelShuffle: the channels must divide by 4 (the factor 2, squared); got 6"),
    "PixelUnshuffle": ("PixelUnshuffle(3)", "2x6x5", "PixelUnshuffle: the height and width must divide by factor 3; got 6x5"),
    "GELU": ("GELU(approximate=sigmoid)", "3x8x8", "GELU: `approximate` must be one of none, tanh; got sigmoid"),
    "ELU": ("ELU(alpha=false)", "3x8x8", "`alpha` must be a number"),
    "Softplus": ("Softplus(beta=0)", "3x8x8", "Softplus: beta must not be 0"),
    "PReLU": ("PReLU(4)", "3x8x8", "PReLU: num_parameters must be 1 or the input's channels (3); got 4"),
    "LogSoftmax": ("LogSoftmax(dim=0)", "10", "LogSoftmax: cnndsl supports only dim=1; got 0"),
    "ConvTranspose": (
        "ConvTranspose(8, 3, stride=2, output_pad=2)",
        "3x4x4",
        "output_pad must be smaller than the stride or the dilation",
    ),
    "Upsample": ("Upsample(2, size=(8, 8))", "3x4x4", "Upsample: give exactly one of scale and size; got both"),
    "Reshape": ("Reshape(4, 2, 2)", "24", "Reshape: c·h·w = 4·2·2 = 16, but its input has 24 features"),
}

# (input shape, call, a fragment of the expected message): the padding rules PyTorch enforces too.
BAD_PADDING = [
    (
        "3x3x3",
        "Conv(4, 3, pad=3, pad_mode=reflect)",
        "Conv: pad_mode=reflect needs a padding smaller than the input size; got pad 3",
    ),
    (
        "3x3x3",
        "Conv(4, 3, pad=4, pad_mode=circular)",
        "Conv: pad_mode=circular needs a padding at most the input size; got pad 4",
    ),
    (
        "3x2x2",
        "DWConv(4, pad=same, pad_mode=reflect)",
        "DWConv: pad_mode=reflect needs a padding smaller than the input size; got pad 2",
    ),
    ("3x8x8", "Conv(4, 2, stride=2, pad=same)", "padding='same' is not supported for strided convolutions"),
    ("3x8x8", "Conv(4, 3, pad_mode=mirror)", "Conv: `pad_mode` must be one of zeros, reflect, replicate, circular; got mirror"),
    (
        "3x8x8",
        "Conv2d(3, 4, 3, padding_mode=2)",
        "Conv2d: `padding_mode` must be one of zeros, reflect, replicate, circular; got 2",
    ),
    ("3x8x8", "MaxPool(2, pad=same)", "MaxPool: pad=same needs an odd kernel"),
]


@pytest.mark.parametrize(("in_shape", "call", "fragment"), BAD_PADDING, ids=[c for _, c, _ in BAD_PADDING])
def test_bad_padding(in_shape: str, call: str, fragment: str) -> None:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(f"input {in_shape}\n{call}")
    [diagnostic] = info.value.diagnostics
    assert fragment in diagnostic.message + " " + (diagnostic.hint or "")
    assert diagnostic.position.line == 2


def test_even_kernel_same_pads_the_bottom_right_as_pytorch() -> None:
    """pad=same with an even kernel at stride 1 keeps the size (PyTorch pads one more at the bottom/right)."""
    net = cnndsl.parse("input 3x7x6\nConv(4, (2, 4), pad=same, dilation=(1, 1))\nConv(4, 3, dilation=2, pad=same)")
    assert tuple(net.output_shape) == (4, 7, 6)
    assert net.layers[0].args["pad"] == (0, 1) and net.layers[0].args["pad_extra"] == (1, 1)
    assert "pad_extra" not in net.layers[1].args and net.layers[1].args["pad"] == (2, 2)


def check_layer(call: str, in_shape: str, out_shape: tuple[int, ...], params: int, buffers: int, macs: int) -> None:
    """Keras's run_layer_test, statically: one layer (or merge) on an input shape."""
    net = cnndsl.parse(f"input {in_shape}\n{call}")
    assert tuple(net.output_shape) == out_shape
    assert (net.params, net.buffers, net.macs) == (params, buffers, macs)


def test_every_registered_kind_has_cases() -> None:
    assert set(LAYER_CASES) == set(KINDS)


@pytest.mark.parametrize(
    "case", [(kind, *case) for kind, cases in LAYER_CASES.items() for case in cases], ids=lambda case: case[1]
)
def test_layer(case: tuple) -> None:
    kind, *rest = case
    check_layer(*rest)
    net = cnndsl.parse(f"input {rest[1]}\n{rest[0]}")
    assert net.layers[-1].kind.name == kind


@pytest.mark.parametrize("kind", sorted(BAD_ARGUMENTS))
def test_bad_argument(kind: str) -> None:
    call, in_shape, fragment = BAD_ARGUMENTS[kind]
    with pytest.raises(CnnDslError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        cnndsl.parse(f"input {in_shape}\n{call}")
    assert info.value.diagnostics[0].position.line == 2


@pytest.mark.parametrize("kind", sorted(k for k, v in KINDS.items() if v.signature))
def test_unknown_argument_names_the_signature(kind: str) -> None:
    in_shape = "8" if kind in ("FC",) else "8x4x4"
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(f"input {in_shape}\n{kind}(nonsense=1)")
    diagnostic = info.value.diagnostics[0]
    assert f"{kind} has no argument `nonsense`" in diagnostic.message
    assert KINDS[kind].signature_text() in diagnostic.hint


WRONG_RANK = {"image": "8", "flat": "8x4x4", "spatial": "8"}
"""An input of the other rank, for the kinds that declare one."""


@pytest.mark.parametrize("kind", sorted(k for k, v in KINDS.items() if v.input_rank != "any"))
def test_declared_input_rank_is_enforced(kind: str) -> None:
    """The checker refuses an input of the wrong rank from `input_rank` alone, with one positioned error."""
    call = LAYER_CASES[kind][0][0]
    declared = KINDS[kind].input_rank
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(f"input {WRONG_RANK[declared]}\n{call}")
    [diagnostic] = info.value.diagnostics
    expected = {
        "image": "needs an image input (CxHxW); got a flat vector of 8",
        "flat": "needs a flat input; got an image 8x4x4",
        "spatial": "needs channels with spatial axes (CxL, CxHxW or CxDxHxW); got a flat vector of 8",
    }[declared]
    if kind in KINDS[kind].spelling_ranks:  # the kind's own name is tied to a rank (Dropout2d): it names that rank
        expected = "needs an image (CxHxW); got a flat vector of 8"
    assert diagnostic.message == f"{kind} {expected}"
    assert (diagnostic.position.line, diagnostic.position.column) == (2, 1)
    assert "flatten" in diagnostic.hint


@pytest.mark.parametrize("kind", sorted(k for k, v in KINDS.items() if v.input_rank == "image"))
def test_image_only_kinds_refuse_signals_and_volumes(kind: str) -> None:
    """The 2-D-only kinds (no 1-D or 3-D form) refuse CxL and CxDxHxW in the checker, not in a backend."""
    call = LAYER_CASES[kind][0][0]
    for in_shape, described in (("8x4", "a 1-D signal 8x4 (CxL)"), ("8x2x4x4", "a 3-D volume 8x2x4x4 (CxDxHxW)")):
        with pytest.raises(CnnDslError) as info:
            cnndsl.parse(f"input {in_shape}\n{call}")
        [diagnostic] = info.value.diagnostics
        assert diagnostic.message == f"{kind} needs an image input (CxHxW); got {described}"
        assert diagnostic.hint == f"{kind} has no 1-D or 3-D form; use it on CxHxW maps"


@pytest.mark.parametrize("kind", sorted(k for k, v in KINDS.items() if v.input_rank == "any" and not isinstance(v, MergeKind)))
def test_kinds_declaring_any_rank_take_images_and_vectors(kind: str) -> None:
    call = LAYER_CASES[kind][0][0]
    for in_shape in ("8", "8x4x4", "8x6", "8x2x4x4"):
        assert cnndsl.parse(f"input {in_shape}\n{call}").layers[-1].kind.name == kind


def test_avgpool3d_refuses_a_volume_smaller_than_its_kernel() -> None:
    """nn.AvgPool3d checks the kernel against the unpadded volume (AvgPool1d/2d and MaxPool3d do not)."""
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse("input 2x2x9x9\nAvgPool(3, stride=2, pad=1)")
    [diagnostic] = info.value.diagnostics
    assert (
        "AvgPool3d needs the unpadded volume at least as large as the kernel; got kernel 3 on a 3-D volume" in diagnostic.message
    )
    assert cnndsl.parse("input 2x2x9x9\nAvgPool((1, 3, 3), stride=2, pad=(0, 1, 1))").output_shape == (2, 1, 5, 5)
    assert cnndsl.parse("input 2x2x9x9\nMaxPool(3, stride=2, pad=1)").output_shape == (2, 1, 5, 5)


def test_a_flat_kind_on_an_image_goes_on_with_its_output() -> None:
    """FC on an image still gives `out` features: the mistake after it is reported too."""
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse("input 8x6x6\nFC(10)\nConv(4, 3)")
    assert [d.message for d in info.value.diagnostics] == [
        "FC needs a flat input; got an image 8x6x6",
        "Conv needs channels with spatial axes (CxL, CxHxW or CxDxHxW); got a flat vector of 10",
    ]


def _numpy_kernels(kind: LayerKind) -> tuple[str, ...]:
    """The methods a kind declaring `np_supported` must implement itself."""
    if isinstance(kind, MergeKind):
        return ("np_merge_forward", "np_merge_backward")
    if isinstance(kind, Activation):
        return ("np_apply", "np_derivative")
    return ("np_forward", "np_backward")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_numpy_support_is_declared_truly(kind: str) -> None:
    """`np_supported` is a declaration: it must hold (and be made where the kernels exist)."""
    cls = type(KINDS[kind])
    assert isinstance(cls.np_supported, bool), "a declared attribute, not detected"
    bases = (MergeKind, Activation, LayerKind)
    implemented = [
        name for name in _numpy_kernels(KINDS[kind]) if all(getattr(cls, name) is not getattr(base, name, None) for base in bases)
    ]
    if cls.np_supported:
        assert implemented == list(_numpy_kernels(KINDS[kind])), f"{kind} declares np_supported without its kernels"
    else:
        assert not implemented, f"{kind} has NumPy kernels but does not declare np_supported"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_has_docstring_with_example(kind: str) -> None:
    doc = type(KINDS[kind]).__doc__ or ""
    assert "Example:" in doc, kind


# Layers that grow the map: each refusal names its rule (and the transposed formula, as Conv's errors show the forward one).
GROW_ERRORS = [
    (
        "3x2x2",
        "ConvTranspose(4, 1, pad=1)",
        "ConvTranspose: the output would be 0 wide: (N - 1)·S - 2P + D·(K - 1) + output_pad + 1 = (2 - 1)·1 - 2·1 + 1·(1 - 1) + 0 + 1 = 0",
    ),
    (
        "3x4x4",
        "ConvTranspose(4, 3, stride=2, dilation=3, output_pad=3)",
        "output_pad must be smaller than the stride or the dilation",
    ),
    ("3x4x4", "ConvTranspose(4, 3, groups=2)", "ConvTranspose: groups=2 must divide the input channels; got 3"),
    ("4x4x4", "ConvTranspose2d(3, 4, 3)", "ConvTranspose2d's in_channels is 3 but its input has 4 channels"),
    # 1-D and 3-D: the formula with the numbers of the axis that does not fit, tuples of the input's rank, the spelling's rank.
    (
        "3x2",
        "ConvTranspose(4, 1, pad=1)",
        "ConvTranspose: the output would be 0 wide: (N - 1)·S - 2P + D·(K - 1) + output_pad + 1 = (2 - 1)·1 - 2·1 + 1·(1 - 1) + 0 + 1 = 0",
    ),
    (
        "3x4x4x2",
        "ConvTranspose(4, (1, 1, 1), pad=(0, 0, 1))",
        "ConvTranspose: the output would be 0 wide: (N - 1)·S - 2P + D·(K - 1) + output_pad + 1 = (2 - 1)·1 - 2·1 + 1·(1 - 1) + 0 + 1 = 0",
    ),
    (
        "3x8",
        "ConvTranspose(4, 3, stride=2, output_pad=2)",
        "output_pad must be smaller than the stride or the dilation; got output_pad 2",
    ),
    ("3x4x4x4", "ConvTranspose(4, (2, 2))", "ConvTranspose: `kernel` (2, 2) has 2 entries but the input has 3 spatial axes"),
    ("3x4x4", "ConvTranspose1d(3, 4, 3)", "ConvTranspose1d needs a 1-D input (CxL); got an image 3x4x4"),
    ("3x4x4x4", "ConvTranspose2d(3, 4, 3)", "ConvTranspose2d needs an image (CxHxW); got a 3-D volume 3x4x4x4"),
    ("3x4", "ConvTranspose3d(3, 4, 3)", "ConvTranspose3d needs a 3-D input (CxDxHxW); got a 1-D signal 3x4"),
    ("3x4x4", "Upsample", "Upsample: give exactly one of scale and size; got neither"),
    ("3x4x4", "Upsample(2, align_corners=true)", "Upsample: align_corners applies only to the interpolating modes"),
    ("3x9", "Upsample(2, mode=bilinear)", "Upsample: mode=bilinear is for an image (CxHxW); got a 1-D signal 3x9 (CxL)"),
    ("3x9", "Upsample(2, mode=bilinear)", "on a signal (CxL) write mode=linear (or nearest)"),
    ("3x2x4x4", "Upsample(2, mode=bicubic)", "on a volume (CxDxHxW) write mode=trilinear (or nearest)"),
    ("3x4x4", "Upsample(2, mode=trilinear)", "Upsample: mode=trilinear is for a volume (CxDxHxW); got an image 3x4x4"),
    ("3x4x4", "Upsample(2, mode=linear)", "on an image (CxHxW) write mode=bilinear (or nearest)"),
    ("3x9", "Upsample(size=(4, 4))", "Upsample: `size` (4, 4) has 2 entries but the input has 1 spatial axis (L)"),
    ("3x2x4x4", "Upsample(0.4)", "floor(2·0.4) x floor(4·0.4) x floor(4·0.4) = 0x1x1"),
    (
        "3x9",
        "Reshape(3, 3, 3), Upsample(like=@input)",
        "Upsample: like=@input is a 1-D signal 3x9 (CxL), but the input here is an image",
    ),
    ("3x4x4", "Upsample(0.1)", "Upsample: scale 0.1 leaves no pixels: floor(4·0.1) x floor(4·0.1) = 0x0"),
    ("3x4x4", "Upsample((2, 0.1))", "Upsample: scale (2, 0.1) leaves no pixels: floor(4·2) x floor(4·0.1) = 8x0"),
    ("3x9", "Upsample((2, 2))", "Upsample: `scale` (2, 2) has 2 entries but the input has 1 spatial axis (L)"),
    ("3x4x4", "Upsample((2, true))", "Upsample: `scale` must be a number or a tuple of them"),
    (
        "3x4x4",
        "Upsample(2, mode=area)",
        "Upsample: `mode` must be one of nearest, linear, bilinear, bicubic, trilinear; got area",
    ),
    ("3x4x4", "Upsample(like=@input, size=2)", "Upsample: like=@input sets the size; got size as well"),
    ("3x4x4", "Upsample(like=(2, 2))", "Upsample: `like` must be a reference to an earlier tensor; got `(2, 2)`"),
    ("3x4x4", "m: ReLU x 2, Upsample(like=@m*)", "Upsample: `like` takes one tensor; `@m*` is every iteration of `m`"),
    (
        "3x4x4",
        "f: flatten, Reshape(3, 4, 4), Upsample(like=@f)",
        "Upsample: like=@f is a flat vector of 48; it takes the spatial size",
    ),
    ("3x4x4", "Conv(@input, 1)", "`@input` is a tensor, not a value"),
    ("3x4x4", "Reshape(3, 4, 4)", "Reshape needs a flat input"),
    ("20", "Unflatten(2, 3, 3)", "Reshape: c·h·w = 2·3·3 = 18, but its input has 20 features"),
    ("20", "Unflatten(1, (2, 3, 3))", "Reshape: c·h·w = 2·3·3 = 18, but its input has 20 features"),
    ("18", "Unflatten(2, (2, 3, 3))", "Reshape: Unflatten's dim must be 1 (the features of a flat input); got 2"),
    ("18", "Unflatten(1, (2, 3, 3), 3)", "Reshape: with a size tuple (2, 3, 3) there is no `w`"),
    ("18", "Unflatten(1, (1, 2, 3, 3, 1))", "Reshape: the size (1, 2, 3, 3, 1) has 5 entries; it takes 2 to 4"),
    ("18", "Unflatten(2, 9)", "Reshape: give c, h and w, or PyTorch's `Unflatten(1, (c, h, w))`"),
    ("18", "Reshape(0, 2, 9)", "Reshape: `c` must be a positive integer; got 0"),
]


@pytest.mark.parametrize(("in_shape", "call", "fragment"), GROW_ERRORS, ids=[c for _, c, _ in GROW_ERRORS])
def test_growing_layers_refuse_with_their_rule(in_shape: str, call: str, fragment: str) -> None:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(f"input {in_shape}\n{call}")
    texts = [f"{d.message} {d.hint or ''}" for d in info.value.diagnostics]
    assert any(fragment in text for text in texts), texts
    assert all(d.position.line == 2 for d in info.value.diagnostics)


def test_numpy_backend_refuses_bicubic_upsampling_by_name() -> None:
    """Bicubic is PyTorch's (the torch targets build it); the NumPy backend says so instead of computing another function."""
    from cnndsl.numpy_backend import NumpyModel

    net = cnndsl.parse("input 3x4x4\nConv(3, 1)\nUpsample(2, mode=bicubic)")
    assert tuple(net.output_shape) == (3, 8, 8)
    with pytest.raises(CnnDslError, match=r"Upsample\(mode=bicubic\) is not supported by the numpy backend") as info:
        NumpyModel(net)
    assert info.value.diagnostics[0].position.line == 3


def test_a_transposed_conv_short_of_its_skip_shows_its_formula_and_the_output_pad_that_fits() -> None:
    # U-Net on an odd size: 31 pools to 15, which a stride-2 transposed conv brings back to 30, not 31.
    source = (
        "input 3x31x31\ne: Conv(4, 3, pad=1)\nMaxPool(2), Conv(8, 3, pad=1)\nConcat[@e | ConvTranspose(4, 2, stride=2), ReLU]"
    )
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    [diagnostic] = [d for d in info.value.diagnostics if d.severity == "error"]
    assert (diagnostic.position.line, diagnostic.position.column) == (4, 1)
    assert (
        "`ConvTranspose 4 2x2 x2` at line 4, column 13 turns 8x15x15 into 4x30x30: (15 - 1)·2 - 2·0 + 1·(2 - 1) + 0 + 1 = 30"
        in diagnostic.notes[1]
    )
    assert diagnostic.hint.endswith(": output_pad=1 gives (15 - 1)·2 - 2·0 + 1·(2 - 1) + 1 + 1 = 31")
    assert cnndsl.parse(source.replace("stride=2)", "stride=2, output_pad=1)"), strict=False).output_shape == (8, 31, 31)
    # No output_pad fits (it must stay below the stride): the formula alone.
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source.replace("stride=2)", "stride=1)"))
    [diagnostic] = [d for d in info.value.diagnostics if d.severity == "error"]
    assert "(15 - 1)·1 - 2·0 + 1·(2 - 1) + 0 + 1 = 16" in diagnostic.notes[1] and "output_pad" not in diagnostic.hint


@pytest.mark.parametrize(
    ("in_shape", "mode", "field"),
    [
        ("1x16", "linear", (5,)),
        ("1x16x16", "bilinear", (5, 5)),
        ("1x4x16x16", "trilinear", (5, 5, 5)),
        ("1x16x16", "bicubic", (7, 7)),
    ],
)
def test_upsample_receptive_field_reads_its_modes_neighbours(in_shape: str, mode: str, field: tuple[int, ...]) -> None:
    """Linear interpolation (one axis at a time: linear, bilinear, trilinear) reads two neighbours per axis, bicubic four."""
    net = cnndsl.parse(f"input {in_shape}\nConv(1, 3), Upsample(2, mode={mode}), Conv(1, 3)")
    assert net.layers[-1].receptive_field == field


@pytest.mark.parametrize(
    ("in_shape", "fix"),
    [
        ("3x31", "output_pad=1 gives (15 - 1)·2 - 2·0 + 1·(2 - 1) + 1 + 1 = 31"),
        (
            "3x31x30x31",
            "output_pad=(1, 0, 1) gives (15 - 1)·2 - 2·0 + 1·(2 - 1) + 1 + 1 = 31 and "
            "(15 - 1)·2 - 2·0 + 1·(2 - 1) + 0 + 1 = 30 and (15 - 1)·2 - 2·0 + 1·(2 - 1) + 1 + 1 = 31",
        ),
    ],
)
def test_a_transposed_conv_short_of_its_skip_on_a_signal_or_volume_gets_its_output_pad_per_axis(in_shape: str, fix: str) -> None:
    source = (
        f"input {in_shape}\ne: Conv(4, 3, pad=1)\nMaxPool(2), Conv(8, 3, pad=1)\nConcat[@e | ConvTranspose(4, 2, stride=2), ReLU]"
    )
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    [diagnostic] = [d for d in info.value.diagnostics if d.severity == "error"]
    assert diagnostic.hint.endswith(": " + fix)
    pads = fix.split(" gives")[0].removeprefix("output_pad=")
    assert cnndsl.parse(source.replace("stride=2)", f"stride=2, output_pad={pads})")).output_shape == (
        8,
        *map(int, in_shape.split("x")[1:]),
    )
