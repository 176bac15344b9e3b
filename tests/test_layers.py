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
    ],
    "DWConv": [
        ("DWConv(3, stride=2, pad=1)", "6x8x8", (6, 4, 4), 6 * 9 + 6, 0, 6 * 16 * 9),
        ("DWConv(5, multiplier=2, bias=false)", "3x9x9", (6, 5, 5), 6 * 25, 0, 6 * 25 * 25),
    ],
    "MaxPool": [("MaxPool(2)", "3x9x9", (3, 4, 4), 0, 0, 0), ("Pool(3, stride=2, pad=1)", "3x8x8", (3, 4, 4), 0, 0, 0)],
    "AvgPool": [("AvgPool(2, ceil=true)", "3x9x9", (3, 5, 5), 0, 0, 0), ("AvgPool(3, 1, 1)", "2x5x5", (2, 5, 5), 0, 0, 0)],
    "GlobalAvgPool": [("GlobalAvgPool", "16x7x5", (16, 1, 1), 0, 0, 0)],
    "AdaptiveAvgPool": [
        ("AdaptiveAvgPool(7)", "8x13x13", (8, 7, 7), 0, 0, 0),
        ("AdaptiveAvgPool((2, 3))", "8x4x4", (8, 2, 3), 0, 0, 0),
    ],
    "FC": [
        ("FC(10)", "100", (10,), 1010, 0, 1000),
        ("Linear(100, 10, bias=false)", "100", (10,), 1000, 0, 1000),
        ("Dense(1)", "5", (1,), 6, 0, 5),
    ],
    "Flatten": [("flatten", "3x4x5", (60,), 0, 0, 0), ("Flatten", "7", (7,), 0, 0, 0)],
    "BatchNorm": [("BN", "16x4x4", (16, 4, 4), 32, 33, 0), ("BatchNorm(eps=0.001, momentum=0.01)", "10", (10,), 20, 21, 0)],
    "Dropout": [("Dropout", "3x4x4", (3, 4, 4), 0, 0, 0), ("Dropout(0.2)", "10", (10,), 0, 0, 0)],
    "ReLU": [("ReLU", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "ReLU6": [("ReLU6", "5", (5,), 0, 0, 0)],
    "Sigmoid": [("Sigmoid", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Tanh": [("Tanh", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "GELU": [("GELU", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "SiLU": [("SiLU", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Hardswish": [("Hardswish", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Hardsigmoid": [("Hardsigmoid", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "LeakyReLU": [("LeakyReLU(0.2)", "3x4x4", (3, 4, 4), 0, 0, 0)],
    "Softmax": [("Softmax", "10", (10,), 0, 0, 0)],
    "ChannelShuffle": [("ChannelShuffle(2)", "8x4x4", (8, 4, 4), 0, 0, 0)],
    "Chunk": [("Chunk(2, 1)", "8x4x4", (4, 4, 4), 0, 0, 0), ("Chunk(4, 0)", "8", (2,), 0, 0, 0)],
    "Identity": [("Identity", "3x4x4", (3, 4, 4), 0, 0, 0)],
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
    "BatchNorm": ("BN(eps=0)", "3x8x8", "eps must be positive"),
    "Dropout": ("Dropout(1.5)", "3x8x8", "p must be between 0 and 1"),
    "LeakyReLU": ("LeakyReLU(true)", "3x8x8", "`slope` must be a number"),
    "ChannelShuffle": ("ChannelShuffle(3)", "8x4x4", "groups=3 must divide the channels"),
    "Chunk": ("Chunk(3, 0)", "8x4x4", "3 chunks must divide the channels"),
}


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
    assert diagnostic.message == f"{kind} {expected}"
    assert (diagnostic.position.line, diagnostic.position.column) == (2, 1)
    assert "flatten" in diagnostic.hint


@pytest.mark.parametrize("kind", sorted(k for k, v in KINDS.items() if v.input_rank == "any" and not isinstance(v, MergeKind)))
def test_kinds_declaring_any_rank_take_images_and_vectors(kind: str) -> None:
    call = LAYER_CASES[kind][0][0]
    for in_shape in ("8", "8x4x4"):
        assert cnndsl.parse(f"input {in_shape}\n{call}").layers[-1].kind.name == kind


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
