"""Conditional merge branches, `Add[a | Identity if shortcut]`: a branch present only where its condition
holds. The parser and the checker (the condition's value, its errors, structural parameters, labels
in a branch left out), and every backend following the IR that omits the branch (NumPy against
torch, generated source, ONNX, summary, drawing)."""

from __future__ import annotations

import pytest
from differential import disagreements
from torch_checks import generated_class, load_generated

import cnndsl
from cnndsl import CnnDslError
from cnndsl.errors import DiagnosticSink
from cnndsl.ir import Parallel, walk
from cnndsl.parser import parse_program
from cnndsl.syntax import Merge, Name

torch = pytest.importorskip("torch")

RESIDUAL = """network Res(shortcut=true, width=6)
input 3x8x8
block Bottleneck(c, shortcut=true) = Add[cv1: [Conv(c, 3, pad=1), BN, SiLU], cv2: [Conv(c, 3, pad=1), BN] | Identity if shortcut]
stem: [Conv(width, 1), BN, SiLU]
Bottleneck(width, shortcut) x 2
Bottleneck(width, shortcut=false)
Concat[Conv(4, 1) | Conv(2, 3, pad=1) if width > 4 | MaxPool(3, stride=1, pad=1) if not shortcut]
"""


def merges(net: cnndsl.Network) -> list[Parallel]:
    return [node for node, _ in walk(net.root) if isinstance(node, Parallel)]


def errors_of(source: str, **params: object) -> list[str]:
    with pytest.raises(CnnDslError) as caught:
        cnndsl.parse(source, **params)
    return [str(d) for d in caught.value.diagnostics]


# -- parser ------------------------------------------------------------------------------------


def test_the_condition_follows_the_branch_and_keeps_its_position() -> None:
    program = parse_program(
        "input 3x8x8\nAdd[Conv(3, 1), ReLU | Identity if s | @m* if deep and n > 1]\n", DiagnosticSink("<t>", "")
    )
    assert program is not None
    merge = program.items[1]
    assert isinstance(merge, Merge)
    first, second, third = merge.branches
    assert first.condition is None and len(first.items) == 2
    assert second.condition == Name("s", second.condition.pos) and (second.condition.pos.line, second.condition.pos.column) == (
        2,
        36,
    )
    assert third.condition is not None and len(third.items) == 1


@pytest.mark.parametrize("text", ["Add[Conv(3, 1) | if s]", "Add[Conv(3, 1) if]", "[Conv(3, 1) if s]", "Conv(3, 1) if s"])
def test_a_condition_needs_a_branch_and_an_expression(text: str) -> None:
    (message,) = errors_of(f"input 3x8x8\n{text}\n")
    assert "error: unexpected" in message and "<string>:2:" in message


# -- checker -----------------------------------------------------------------------------------


def test_a_false_condition_leaves_the_branch_out_and_one_branch_passes_through() -> None:
    on, off = cnndsl.parse(RESIDUAL), cnndsl.parse(RESIDUAL, shortcut=False)
    assert [len(m.branches) for m in merges(on)] == [2, 2, 1, 2]
    assert [len(m.branches) for m in merges(off)] == [1, 1, 1, 3]
    assert on.params == off.params  # Identity and MaxPool hold no parameter
    assert off.output_shape == (12, 8, 8) and on.output_shape == (6, 8, 8)  # 4 + 2 (+ 6)
    # The merge keeps its branch 0, so the keys of branch 0 are the same whether the condition holds or not.
    keys_on = [k for k in on.to_torch(seed=0).state_dict() if k.startswith("blocks.")]
    keys_off = [k for k in off.to_torch(seed=0).state_dict() if k.startswith("blocks.")]
    assert keys_on == keys_off and "blocks.0.add.0.cv1.conv.weight" in keys_on
    # The branches left out are not numbered: the ones present are 0, 1, ... in the order written.
    assert [b.name for b in merges(off)[-1].branches] == ["0", "1", "2"]
    assert [b.name for b in merges(cnndsl.parse(RESIDUAL, width=4))[-1].branches] == ["0"]


def test_a_condition_on_a_network_parameter_is_structural() -> None:
    assert cnndsl.parse(RESIDUAL).structural_parameters == {"shortcut", "width"}
    # A block's own parameter given a number decides nothing about the network's parameters.
    constant = "network N(width=6)\ninput 3x8x8\nblock B(c, s=true) = Add[Conv(c, 1) | Identity if s]\nB(width, false)\n"
    assert cnndsl.parse(constant).structural_parameters == frozenset()


def test_a_condition_must_be_true_or_false() -> None:
    (message,) = errors_of("network N(k=3)\ninput 3x8x8\nAdd[Conv(3, 1) | Identity if k]\n")
    assert "<string>:3:30: error: the condition of a merge branch must be true or false; got 3" in message
    assert "hint: a boolean parameter or a comparison" in message
    (message,) = errors_of("network N(shortcut=true)\ninput 3x8x8\nAdd[Conv(3, 1) | Identity if shortcat]\n")
    assert "got shortcat" in message and "shortcut" in message.split("hint:")[1]
    (message,) = errors_of("input 3x8x8\nAdd[Conv(3, 1) | Identity if 1 / 0 > 1]\n")
    assert "<string>:2:" in message and "division by zero" in message


def test_a_merge_whose_every_branch_is_left_out_is_an_error() -> None:
    (message,) = errors_of("network N(a=false)\ninput 3x8x8\nMul[Conv(3, 1) if a | Identity if not a and a]\n")
    assert "<string>:3:1: error: every branch of Mul[...] is left out: each one's condition is false" in message
    assert "give one no condition" in message


def test_a_branch_left_out_is_still_checked_and_its_labels_name_nothing() -> None:
    (message,) = errors_of("network N(a=false)\ninput 3x8x8\nAdd[Identity | Conv(3, 1), Relux if a]\n")
    assert "unknown layer or block `Relux`" in message and "ReLU" in message
    (message,) = errors_of("network N(a=false)\ninput 3x8x8\nAdd[Identity | k: Conv(3, 1) if a]\nConcat[Identity | @k]\n")
    assert "<string>:4:19: error: `@k` refers to `k`, which is not built: its merge branch's condition is false" in message


def test_every_iteration_as_a_conditional_branch() -> None:
    source = "network N(a=false)\ninput 3x8x8\nm: Conv(3, 1) x 2\nConcat[Conv(2, 1) | @m* if a]\n"
    assert cnndsl.parse(source).output_shape == (2, 8, 8)
    assert cnndsl.parse(source, a=True).output_shape == (8, 8, 8)
    (message,) = errors_of(source.replace("@m*", "@n*"))
    assert "<string>:4:21: error: unknown label `n` in `@n*`" in message


def test_a_label_inside_a_repetition_run_0_times_names_nothing() -> None:
    # It failed with no message at all: the reference met an entry with no node and took it for an error already reported.
    (message,) = errors_of("network N(n=0)\ninput 3x8x8\n[k: Conv(4, 1)] x n\nConcat[Identity | @k]\n")
    assert "`@k` refers to `k`, which is not built: it is in a repetition run 0 times" in message


# -- backends ----------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"shortcut": False}, {"width": 4}])
def test_numpy_torch_and_the_checker_agree_with_branches_on_and_off(params: dict[str, object]) -> None:
    header = RESIDUAL.splitlines()[0]
    written = ", ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in {"shortcut": True, "width": 6, **params}.items()
    )
    source = RESIDUAL.replace(header, f"network Res({written})")
    assert disagreements(source) == []


@pytest.mark.parametrize("shortcut", [True, False])
def test_the_generated_source_has_the_same_keys_and_outputs(shortcut: bool) -> None:
    net = cnndsl.parse(RESIDUAL, shortcut=shortcut)
    memory = net.to_torch(seed=0).eval()
    generated = generated_class(net)().eval()
    assert list(generated.state_dict()) == list(memory.state_dict())
    generated.load_state_dict(memory.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(generated(x), memory(x))
    with pytest.raises(ValueError, match="shortcut changes the network"):
        generated_class(net)(shortcut=not shortcut)


def test_a_block_class_never_takes_a_parameter_that_decides_a_branch() -> None:
    """`if c > 4` says which branches B(c) has: the class cannot vary c (B(2) built from B(8)'s class would keep the branch)."""
    source = "network N\ninput 3x8x8\nblock B(c) = Add[Conv(c, 1) | Conv(c, 3, pad=1) if c > 4]\nB(8), B(16)\n"
    net = cnndsl.parse(source)
    text = net.torch_source()
    assert "class B(nn.Sequential):" in text and "    def __init__(self, in_channels: int) -> None:" in text
    module = load_generated(text, "conditional_class")
    assert len(module.B(3)[0]) == 2
    generated = generated_class(net, text)().eval()
    memory = net.to_torch(seed=0).eval()
    generated.load_state_dict(memory.state_dict())
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(generated(x), memory(x))


def test_onnx_summary_and_drawing_follow_the_branches_present() -> None:
    onnx = pytest.importorskip("onnx")
    from cnndsl.compiler import export_onnx

    on, off = cnndsl.parse(RESIDUAL), cnndsl.parse(RESIDUAL, shortcut=False)
    adds = [
        sum(node.op_type == "Add" for node in onnx.load_from_string(export_onnx(net, seed=0)).graph.node) for net in (on, off)
    ]
    assert adds == [2, 0]  # one Add of two tensors per bottleneck with its shortcut; a one-branch Add adds nothing
    assert "Add[1 branch]" in str(off.summary(depth=None)) and "Add[2 branches]" in str(on.summary(depth=None))
    drawing = off.to_dot(expand=True).source
    assert drawing.count("<b>Add</b>") == 3 and drawing.count("<b>MaxPool") == 1
