"""Module names of unlabelled elements: from their kind, numbered when siblings share it (cnndsl/names.py).

The rule is LANGUAGE.md's "Module names and state_dict keys"; these tests hold the checker to
it, and the section's example and list of declared stems to the code.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import cnndsl
from cnndsl.ir import Parallel, Sequence, walk
from cnndsl.layers.base import KINDS
from cnndsl.names import element_names, is_module_name, snake_case

ROOT = Path(__file__).resolve().parent.parent
SECTION = (ROOT / "docs" / "LANGUAGE.md").read_text(encoding="utf-8").split("### Module names and state_dict keys\n", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]


def paths(text: str, **params: object) -> list[str]:
    network = cnndsl.parse(text, **params)  # type: ignore[arg-type]
    return [node.path for node, _ in walk(network.root) if node.path]


def top_names(text: str) -> list[str]:
    return [child.name for child in cnndsl.parse(text).root.children]


# -- the rule, on names alone --------------------------------------------------------------


def test_a_shared_stem_is_numbered_from_one_and_a_lone_one_is_bare() -> None:
    stems = ["conv", "bn", "relu", "conv", "bn", "avgpool", "flatten", "fc"]
    assert element_names([None] * len(stems), stems) == ["conv1", "bn1", "relu", "conv2", "bn2", "avgpool", "flatten", "fc"]


def test_a_stem_ending_in_a_digit_takes_an_underscore_before_its_number() -> None:
    assert element_names([None, None, None], ["relu6", "relu6", "conv"]) == ["relu6_1", "relu6_2", "conv"]


def test_labels_win_and_derived_names_skip_them() -> None:
    # `conv1: Conv, Conv, Conv`: the label keeps conv1, the others go on from it.
    assert element_names(["conv1", None, None], ["", "conv", "conv"]) == ["conv1", "conv2", "conv3"]
    # A label after the elements still wins: the derived names leave it alone.
    assert element_names([None, None, "conv2"], ["conv", "conv", ""]) == ["conv1", "conv3", "conv2"]
    # A lone stem that a label took is numbered instead.
    assert element_names(["fc", None], ["", "fc"]) == ["fc", "fc1"]


def test_a_bare_name_never_meets_a_numbered_one() -> None:
    # A block `Conv1` called once is `conv1`; the two Convs must not take that name.
    assert element_names([None, None, None], ["conv", "conv1", "conv"]) == ["conv2", "conv1", "conv3"]


def test_reserved_stems_and_labels() -> None:
    # A block named `Forward` or `Train`: nn.Module attributes cannot name a submodule.
    assert element_names([None, None, None], ["forward", "train", "train"]) == ["forward_", "train1", "train2"]
    # Reserved labels keep module_names' rule; a derived name does not take theirs.
    assert element_names(["forward", "class", None], ["", "", "forward"]) == ["forward_", "class_", "forward1"]
    assert all(is_module_name(name) for name in element_names([None] * 3, ["if", "in", "in"]))


def test_snake_case_of_block_names() -> None:
    cases = {
        "Basic": "basic",
        "Bottleneck": "bottleneck",
        "InvertedResidual": "inverted_residual",
        "SEBlock": "se_block",
        "MBConv6": "mb_conv6",
        "DoubleConv": "double_conv",
        "C2f": "c2f",
        "conv_bn": "conv_bn",
        "_Private": "private",
        "__": "layer",
    }
    assert {name: snake_case(name) for name in cases} == cases


def test_many_elements_sharing_a_stem_are_named_in_linear_time() -> None:
    labels: list[str | None] = [f"conv{i}" for i in range(1, 50_001)] + [None] * 50_000
    start = time.perf_counter()
    names = element_names(labels, [""] * 50_000 + ["conv"] * 50_000)
    assert time.perf_counter() - start < 2.0
    assert len(set(names)) == 100_000 and names[50_000] == "conv50001"


# -- the stems the layer kinds declare ------------------------------------------------------


def test_every_kind_has_a_stem_and_the_documented_exceptions_are_the_declared_ones() -> None:
    found = re.search(r"except\s+for these kinds:(.*?)\.\n", SECTION, re.S)
    assert found is not None
    listed = found.group(1)
    documented = dict(re.findall(r"(\w+)\s+`(\w+)`", listed))
    declared = {kind.name: kind.attribute_stem for kind in KINDS.values() if kind.attribute_stem != kind.name.lower()}
    assert documented == declared
    for kind in KINDS.values():
        assert is_module_name(kind.attribute_stem), kind.name


def test_a_spelling_shares_its_kinds_stem() -> None:
    assert top_names("input 3x8x8\nConv2d(3, 4, 1), BatchNorm2d(4), Pool(2), conv(4, 1), bn") == [
        "conv1",
        "bn1",
        "maxpool",
        "conv2",
        "bn2",
    ]


# -- the checker names the IR so ------------------------------------------------------------


def test_the_documented_example_names_what_the_section_says() -> None:
    example = re.search(r"^```cnn\n(.*?)^```", SECTION, re.S | re.M)
    assert example is not None
    network = cnndsl.parse(example.group(1))
    assert [child.name for child in network.root.children] == [
        "conv",
        "bn",
        "relu",
        "layer1",
        "basic",
        "seq",
        "avgpool",
        "flatten",
        "head",
    ]
    found = {node.path for node, _ in walk(network.root)}
    written = set(re.findall(r"`((?:layer1|seq|basic)\.[\w.]+?)`", SECTION))
    assert written - {"layer1.0.add.0.conv1.weight", "basic.add.0.bn2.running_mean"} <= found
    for prefix in ("layer1.0.add.0.", "seq."):
        assert {p.removeprefix(prefix) for p in found if p.startswith(prefix) and "." not in p.removeprefix(prefix)} == (
            {"conv1", "bn1", "relu", "conv2", "bn2"} if prefix != "seq." else {"conv1", "conv2", "conv3"}
        )
    assert {"layer1.0.add.1", "layer1.0.relu", "layer1.1.add.0.conv1"} <= found


def test_repetition_iterations_and_merge_branches_stay_indexed() -> None:
    found = paths("input 3x8x8\n[Conv(4, 1), ReLU] x 3, Concat[ Conv(2, 1) | Conv(2, 1), ReLU | ], Add[ | ]")
    assert {"blocks.0.conv", "blocks.0.relu", "blocks.2.conv"} <= set(found)
    assert {"concat.0.conv", "concat.1.conv", "concat.1.relu", "concat.2", "add.0", "add.1"} <= set(found)
    assert "blocks.3" not in found and "concat.3" not in found


def test_a_block_body_of_one_element_is_named_by_it() -> None:
    text = (
        "input 3x8x8\nblock Res(c) = Add[ Conv(c, 3, pad=1) | ]\nblock Lab(c) = inner: Conv(c, 1)\n"
        "block Inverted_Residual(c) = [Conv(c, 1)]\n"
        "Res(3), Lab(4), Inverted_Residual(4)"
    )
    found = paths(text)
    assert {"res.add", "res.add.0.conv", "lab.inner", "inverted_residual.conv"} <= set(found)


def test_references_and_groups_and_outputs() -> None:
    text = "input 3x8x8\nstem: Conv(4, 1), [Conv(4, 1), ReLU], @stem, [ReLU], @stem, Conv(4, 1)"
    assert top_names(text) == ["stem", "seq1", "ref1", "seq2", "ref2", "conv"]


def test_names_depend_on_the_text_not_on_the_values() -> None:
    text = "network N(w=8, deep=true)\ninput 3x8x8\nConv(w, 1), BN, Conv(w if deep else 4, 1), BN, ReLU x 2, flatten, FC(w)"
    assert paths(text) == paths(text, w=16) == paths(text, w=3, deep=False)
    assert top_names(text) == ["conv1", "bn1", "conv2", "bn2", "blocks", "flatten", "fc"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "googlenet", "unet", "classic", "densenet121"])
def test_only_iterations_and_branches_of_the_zoo_are_named_by_their_index(name: str) -> None:
    network = cnndsl.load(ROOT / "architectures" / f"{name}.cnn")
    for node, _ in walk(network.root):
        if isinstance(node, Sequence) and node.role != "repeat":
            assert not [child.path for child in node.children if child.name.isdigit()]
        elif isinstance(node, Sequence):
            assert [child.name for child in node.children] == [str(i) for i in range(len(node.children))]
        elif isinstance(node, Parallel):
            assert [branch.name for branch in node.branches] == [str(i) for i in range(len(node.branches))]
