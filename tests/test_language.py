"""The language reference (docs/LANGUAGE.md) and the v1 contract, checked example by example.

Every ```cnn block of docs/LANGUAGE.md must check without errors; every ```cnn-error block
must fail with exactly the messages of the ```diagnostics block after it. The v1 contract's
examples (tests/data/language_v1/, copied from the contract the project started from) keep
checking with torchvision's counts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cnndsl
from cnndsl import CnnDslError
from cnndsl.layers import MergeKind
from cnndsl.layers.catalog import layers_markdown

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE_MD = ROOT / "docs" / "LANGUAGE.md"
V1_EXAMPLES = ROOT / "tests" / "data" / "language_v1"
V1_LAYER_SPELLINGS = (
    "Conv Conv2d DWConv MaxPool Pool AvgPool GlobalAvgPool AdaptiveAvgPool FC Linear Dense Flatten BatchNorm BN "
    "Dropout ReLU ReLU6 Sigmoid Tanh GELU SiLU Hardswish Hardsigmoid Softmax LeakyReLU ChannelShuffle Identity"
).split()
"""Every spelling of the v1 contract's layer table."""


def doc_examples() -> list[str]:
    return re.findall(r"^```cnn\n(.*?)^```", LANGUAGE_MD.read_text(encoding="utf-8"), re.S | re.M)


def doc_error_examples() -> list[tuple[str, str]]:
    text = LANGUAGE_MD.read_text(encoding="utf-8")
    return re.findall(r"^```cnn-error\n(.*?)^```\n\n```diagnostics\n(.*?)^```", text, re.S | re.M)


def v1_example(name: str) -> str:
    return (V1_EXAMPLES / f"{name}.cnn").read_text(encoding="utf-8")


def test_the_reference_has_examples_of_both_kinds() -> None:
    assert len(doc_examples()) >= 7
    assert len(doc_error_examples()) >= 3
    # A cnn-error block without its diagnostics would escape both tests.
    assert LANGUAGE_MD.read_text(encoding="utf-8").count("```cnn-error") == len(doc_error_examples())


@pytest.mark.parametrize("source", doc_examples())
def test_every_reference_example_checks(source: str) -> None:
    net = cnndsl.parse(source)
    assert net.layers
    assert not [d for d in net.diagnostics if d.severity == "error"]


@pytest.mark.parametrize(("source", "expected"), doc_error_examples())
def test_every_reference_mistake_fails_with_the_message_shown(source: str, expected: str) -> None:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source, filename="example.cnn")
    printed = "\n".join(d.format(color=False) for d in info.value.diagnostics)
    assert printed.strip() == expected.strip()


def test_the_layer_table_is_the_registry() -> None:
    text = LANGUAGE_MD.read_text(encoding="utf-8")
    table = text.split("<!-- layers:begin", 1)[1].split("\n", 1)[1].split("<!-- layers:end -->", 1)[0]
    assert table.strip() == layers_markdown().strip(), "regenerate with `cnndsl layers --markdown`"


def test_every_kind_has_its_shape_rule_in_the_reference() -> None:
    rules = LANGUAGE_MD.read_text(encoding="utf-8").split("### Shape rules and counts, per kind", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in cnndsl.layers.KINDS if f"**{name}**" not in rules]
    assert not missing, f"docs/LANGUAGE.md has no shape rule for {missing}"


@pytest.mark.parametrize("name", ["resnet18", "classic"])
def test_every_v1_example_checks(name: str) -> None:
    net = cnndsl.parse(v1_example(name))
    assert net.layers
    assert not [d for d in net.diagnostics if d.severity == "error"]


def kinds(net: cnndsl.Network) -> list[str]:
    return [layer.kind.name for layer in net.layers]


def test_resnet18_example_matches_torchvision_counts() -> None:
    net = cnndsl.parse(v1_example("resnet18"))
    assert net.name == "ResNet18"
    assert net.params == 11_689_512
    assert net.buffers == 9_620
    assert net.output_shape == (1000,)
    assert net.macs == 3_628_146_688 // 2
    assert net.warnings == []


def test_lecture_pattern_with_defaults() -> None:
    net = cnndsl.parse(v1_example("classic"))
    assert kinds(net) == ["Conv", "ReLU", "MaxPool"] * 2 + ["Flatten"] + ["FC", "ReLU"] * 2 + ["FC"]
    # Conv 3->32 (896), Conv 32->32 (9,248), FC 2048->128 (262,272), FC 128->128 (16,512), FC 128->10 (1,290)
    assert net.params == 896 + 9_248 + 262_272 + 16_512 + 1_290
    assert [tuple(layer.out_shape) for layer in net.layers][:3] == [(32, 32, 32), (32, 32, 32), (32, 16, 16)]
    assert net.output_shape == (10,)


def test_lecture_conv_with_760_parameters() -> None:
    net = cnndsl.parse("input 3x32x32\nConv(10, 5)")
    assert net.params == 760
    assert net.output_shape == (10, 28, 28)


@pytest.mark.parametrize(
    "body",
    [
        "Conv(8, 3), ReLU",
        "Conv(8, 3)\nReLU",
        "Conv(8, 3),,\n\n,ReLU,",
        "conv(8, 3), relu",
        "CONV2D(3, 8, 3), Relu",
        "Conv(\n  8,\n  3\n), ReLU",
        "[\n  Conv(8, 3),\n  ReLU,\n]",
        "Conv(out=8, kernel=3), ReLU",
        "Conv(8, kernel=3) # comment\nReLU # another",
    ],
)
def test_separators_case_and_layout(body: str) -> None:
    net = cnndsl.parse("input 3x16x16\n" + body)
    assert kinds(net) == ["Conv", "ReLU"]
    assert net.output_shape == (8, 14, 14)


@pytest.mark.parametrize(
    "repeat", ["[Conv(4, 1)]x3", "[Conv(4, 1)] x 3", "Conv(4, 1) x 3", "Conv(4, 1) * 3", "Conv(4,1)x3", "[Conv(4,1)]*3"]
)
def test_repetition_forms(repeat: str) -> None:
    net = cnndsl.parse("input 3x8x8\n" + repeat)
    assert kinds(net) == ["Conv"] * 3
    assert net.params == (3 * 4 + 4) + 2 * (4 * 4 + 4)
    # each iteration of a bracketed group is itself a group
    expected = (
        ["blocks.0.conv", "blocks.1.conv", "blocks.2.conv"] if repeat.startswith("[") else ["blocks.0", "blocks.1", "blocks.2"]
    )
    assert [layer.path for layer in net.layers] == expected


def test_repetition_count_expression_and_parameter() -> None:
    net = cnndsl.parse("network N(n=2)\ninput 3x8x8\nReLU x n, ReLU x (n + 1), ReLU x2")
    assert len(net.layers) == 7
    assert len(cnndsl.parse("network N(n=2)\ninput 3x8x8\nReLU x n", n=5).layers) == 5


def test_merges_and_identity_branches() -> None:
    net = cnndsl.parse(
        "input 16x8x8\n"
        "Add[ Conv(16, 3, pad=1) | Identity ]\n"
        "Add[ Conv(16, 1) | ]\n"
        "Concat[ Conv(8, 1) | Conv(4, 3, pad=1) | MaxPool(3, stride=1, pad=1) ]\n"
        "Mul[ | GlobalAvgPool, Conv(28, 1), Sigmoid ]\n"
    )
    assert net.output_shape == (28, 8, 8)
    merges = [layer for layer in net.layers if isinstance(layer.kind, MergeKind)]
    assert [m.kind.name for m in merges] == ["Add", "Add", "Concat", "Mul"]
    # merges come after their branches
    assert kinds(net)[:3] == ["Conv", "Identity", "Add"]


def test_merge_names_are_case_insensitive_and_branches_may_span_lines() -> None:
    net = cnndsl.parse("input 4x8x8\nadd[\n  Conv(4, 1),\n  ReLU\n  |\n  Identity\n]")
    assert kinds(net) == ["Conv", "ReLU", "Identity", "Add"]


def test_labels_name_paths() -> None:
    net = cnndsl.parse("input 3x8x8\nstem: [Conv(4, 1), ReLU]\nlayer1: [Conv(4, 1)] x 2\nhead: Conv(2, 1)")
    assert [layer.path for layer in net.layers] == ["stem.conv", "stem.relu", "layer1.0.conv", "layer1.1.conv", "head"]


def test_blocks_with_parameters_defaults_and_forward_references() -> None:
    net = cnndsl.parse(
        "input 8x16x16\n"
        "block Outer(c) = [Inner(c), Inner(c * 2, stride=2)]\n"
        "block Inner(c, stride=1) = [Conv(c, 3, stride=stride, pad=1), BN, ReLU]\n"
        "Outer(8)\n"
    )
    assert net.output_shape == (16, 8, 8)
    assert net.root.children[0].title == "Outer(8)"
    assert [layer.path for layer in net.layers][:3] == ["outer.inner1.conv", "outer.inner1.bn", "outer.inner1.relu"]


def test_in_channels_and_expressions() -> None:
    net = cnndsl.parse(
        "input 6x8x8\nConv(in_channels * 2, 1), Conv(in_channels // 4 + 1, 1), Conv((7 - 1) / 2, 1), Conv(10 % 4, 1)"
    )
    assert [layer.out_shape[0] for layer in net.layers] == [12, 4, 3, 2]


def test_in_channels_of_a_flat_input_is_its_length() -> None:
    net = cnndsl.parse("input 100\nFC(in_channels // 2), FC(in_channels + 1)")
    assert net.output_shape == (51,)


def test_pairs_and_pad_same() -> None:
    net = cnndsl.parse(
        "input 3x20x30\nConv(4, (3, 5), stride=(1, 2), pad=(1, 2)), Conv(4, 3, pad=same), Conv(4, 3, pad=same, stride=2, dilation=2)"
    )
    shapes = [tuple(layer.out_shape) for layer in net.layers]
    assert shapes == [(4, 20, 15), (4, 20, 15), (4, 10, 8)]
    assert net.layers[2].args["pad"] == (2, 2)


def test_defaults_apply_to_the_kind_whatever_the_alias() -> None:
    net = cnndsl.parse("input 3x16x16\ndefaults Pool(2), Conv(bias=false)\nMaxPool, Conv(4, 3), DWConv(3)")
    assert net.layers[0].out_shape == (3, 8, 8)
    assert net.layers[1].params == 4 * 3 * 9  # no bias
    assert net.layers[2].params == 4 * 9 + 4  # DWConv keeps its own default bias=true


def test_explicit_arguments_win_over_defaults() -> None:
    net = cnndsl.parse("input 3x16x16\ndefaults Conv(32, 3, pad=1)\nConv(8), Conv(pad=0)")
    assert [tuple(layer.out_shape) for layer in net.layers] == [(8, 16, 16), (32, 14, 14)]


def test_network_parameters_overridable_from_the_api() -> None:
    source = "network Net(num_classes=1000, width=16)\ninput 3x8x8\nConv(width, 3), flatten, FC(num_classes)"
    assert cnndsl.parse(source).output_shape == (1000,)
    net = cnndsl.parse(source, num_classes=10, width=4)
    assert net.output_shape == (10,)
    assert net.parameters == {"num_classes": 10, "width": 4}
    with pytest.raises(CnnDslError, match="unknown network parameter `classes`"):
        cnndsl.parse(source, classes=10)


def test_input_override_and_flat_input() -> None:
    assert cnndsl.parse("input 3x8x8\nConv(4, 3)", input="3x32x32").output_shape == (4, 30, 30)
    assert cnndsl.parse("Conv(4, 3)", input=(1, 10, 10)).output_shape == (4, 8, 8)
    net = cnndsl.parse("input 784\nFC(100), ReLU, BN, Dropout, FC(10), Softmax")
    assert net.output_shape == (10,)
    assert net.layers[2].params == 200 and net.layers[2].buffers == 201


def test_pooling_ceil_mode_follows_pytorch() -> None:
    net = cnndsl.parse(
        "input 3x112x112\nMaxPool(3, stride=2, ceil=true), MaxPool(3, 2, ceil=true), MaxPool(2, 2, pad=1, ceil=true)"
    )
    # torch: 112 -> 56 -> 28 -> 15
    assert [layer.out_shape[1] for layer in net.layers] == [56, 28, 15]


def test_pooling_ceil_drops_a_window_that_would_start_in_the_padding() -> None:
    # PyTorch: MaxPool2d(2, stride=2, padding=1, ceil_mode=True) on 5 -> 3, not 4
    net = cnndsl.parse("input 1x5x5\nMaxPool(2, stride=2, pad=1, ceil=true)")
    assert net.output_shape == (1, 3, 3)


def test_shufflenet_channel_split_with_chunk() -> None:
    net = cnndsl.parse("input 8x4x4\nConcat[ Chunk(2, 0) | Chunk(2, 1), Conv(4, 1) ], ChannelShuffle(2)")
    assert net.output_shape == (8, 4, 4)


def test_receptive_field_and_effective_stride() -> None:
    net = cnndsl.parse("input 1x64x64\nConv(1, 3), Conv(1, 3, stride=2), Conv(1, 3), MaxPool(2)")
    assert [layer.receptive_field[0] for layer in net.layers] == [3, 5, 9, 11]
    assert [layer.effective_stride[0] for layer in net.layers] == [1, 2, 2, 4]


def test_activation_memory_counts_input_and_non_view_outputs() -> None:
    net = cnndsl.parse("input 3x4x4\nConv(2, 1), Identity, ReLU, flatten")
    assert net.activation_bytes == 4 * (48 + 32 + 32)


def test_every_layer_of_the_v1_table_is_available() -> None:
    for spelling in V1_LAYER_SPELLINGS:
        assert cnndsl.layers.lookup(spelling) is not None, spelling


def test_receptive_field_is_that_of_the_last_spatial_layer_at_any_input_size() -> None:
    # ResNet-18's published figure (435, stride 32): the global pool and the classifier do not add to it.
    for side in (32, 224):
        net = cnndsl.load(ROOT / "architectures" / "resnet18.cnn", input=(3, side, side))
        assert net.receptive_field == (435, 435) and net.effective_stride == (32, 32)
        assert net.to_json()["receptive_field"] == [435, 435]


@pytest.mark.parametrize("name", ["efficientnet", "mobilenet_v3_large", "regnet_y_400mf", "mobilenet_v3_small"])
def test_squeeze_excitation_gates_do_not_blow_up_the_receptive_field(name: str) -> None:
    # A Mul gate's 1x1 branch used to multiply the effective stride by the whole map (8.2e21 for EfficientNet-B0).
    net = cnndsl.load(ROOT / "architectures" / f"{name}.cnn")
    assert net.effective_stride == (32, 32)
    assert net.receptive_field[0] < 1_000
    for layer in net.layers:
        assert layer.effective_stride[0] <= 32 and layer.receptive_field[0] < 1_000, layer.path
    report = net.to_json()
    assert all(row["effective_stride"][0] <= 32 for row in report["layers"])


def test_a_gate_branch_keeps_the_field_of_the_map_it_scales() -> None:
    net = cnndsl.parse("input 8x16x16\nConv(8, 3, pad=1), Mul[ | GAP, Conv(8, 1), Sigmoid ], Conv(8, 3, pad=1)")
    assert [layer.receptive_field[0] for layer in net.layers] == [3, 3, 3, 3, 3, 5]
    assert net.effective_stride == (1, 1)


def test_adaptive_pooling_to_several_bins_still_widens_the_field() -> None:
    net = cnndsl.parse("input 1x12x12\nAdaptiveAvgPool(3), flatten")
    assert net.receptive_field == (4, 4) and net.effective_stride == (4, 4)
