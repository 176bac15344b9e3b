"""The torch plan (cnndsl.torch_plan): one walk of the IR that the in-memory module and the generated source share.

The registry-driven comparison of both torch targets with the NumPy backend, for every
layer kind, is in test_numpy_layers.py (it needs the rows kept there).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch_checks import generated_class, one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl
from cnndsl import torch_modules
from cnndsl.codegen_torch import RESERVED, helper_sources
from cnndsl.errors import CnnDslError
from cnndsl.ir import Layer, Parallel, Sequence, walk
from cnndsl.layers import KINDS
from cnndsl.layers.base import TorchCall
from cnndsl.torch_plan import build_plan

BLOCKS = """network Blocks(width=4)
input 3x8x8
block Unit(c, k=3) = [Conv(c, k, pad=same), BN, ReLU]
stem: Unit(width)
Unit(8, k=1) x 2
mix: Concat[ a: Conv(4, 1) | Chunk(2, 0) ], ChannelShuffle(2)
GlobalAvgPool, flatten, FC(3)
"""


def test_the_plan_mirrors_the_ir_node_for_node() -> None:
    network = cnndsl.parse(BLOCKS)
    plan = build_plan(network)
    nodes = [node for node, _ in walk(network.root)]
    assert [p.node for p in plan.walk()] == nodes  # one module per IR node, parents first, in order
    for p in plan.walk():
        assert p.name == p.node.name
        assert [c.node for c in p.children] == p.node.children_nodes()
        expected = {Layer: "layer", Parallel: "merge", Sequence: "sequence" if p.node.children_nodes() else "identity"}
        assert p.kind == expected[type(p.node)]
    assert plan.call == TorchCall("sequential")  # named children: the naming helper
    stem, repeat = plan.children[0], plan.children[1]
    assert stem.call == TorchCall("sequential") and [c.name for c in stem.children] == ["conv", "bn", "relu"]
    assert repeat.call == TorchCall("nn.Sequential") and [c.name for c in repeat.children] == ["0", "1"]  # iterations
    assert stem.children[0].call == TorchCall("nn.Conv2d", (3, 4), (("kernel_size", 3), ("padding", 1)))
    mix = plan.children[2]
    assert mix.kind == "merge" and mix.call == TorchCall("Concat") and [c.name for c in mix.children] == ["0", "1"]
    assert mix.children[0].call == TorchCall("sequential")  # a branch with a label


def test_block_calls_and_repetitions_stay_visible() -> None:
    # A later generator writes one class per block definition: the plan must not flatten them away.
    network = cnndsl.parse(BLOCKS)
    plan = build_plan(network)
    stem, repeat = plan.children[0], plan.children[1]
    assert isinstance(stem.node, Sequence) and stem.node.role == "block"
    assert stem.node.block == "Unit" and stem.node.block_args == {"c": 4, "k": 3}
    assert isinstance(repeat.node, Sequence) and repeat.node.role == "repeat" and repeat.node.title == "x 2"
    assert [c.name for c in repeat.children] == ["0", "1"]
    assert all(c.node.role == "block" and c.node.block_args == {"c": 8, "k": 1} for c in repeat.children)


def test_inplace_flags_are_decided_in_the_plan() -> None:
    # ReLU after Sigmoid (saved output), ReLU opening a branch (shared input), ReLU after an
    # identity-branch merge: none in place; ReLU after a two-branch Add and after Conv: in place.
    text = "input 2x4x4\nConv(2, 1), ReLU, Sigmoid, ReLU, Add[ ReLU | Identity ], Add[ Conv(2, 1), BN | ], ReLU, Mul[ Conv(2, 1) | ReLU ]"
    plan = build_plan(cnndsl.parse(text))
    relus = [p for p in plan.walk() if p.kind == "layer" and p.node.kind.name == "ReLU"]
    assert [(p.node.path, p.inplace) for p in relus] == [
        ("relu1", True),
        ("relu2", False),
        ("add1.0.relu", False),
        ("relu3", True),
        ("mul.1.relu", False),
    ]
    assert [p.call.kwargs for p in relus] == [(("inplace", True),), (), (), (("inplace", True),), ()]
    merges = [p for p in plan.walk() if p.kind == "merge"]
    assert [(p.call.name, p.inplace, p.call.kwargs) for p in merges] == [
        ("Add", False, ()),  # the first branch ends in a ReLU, which saves its output
        ("Add", True, (("inplace", True),)),  # it ends in BatchNorm: a fresh tensor
        ("Mul", True, ()),  # allowed, but Mul has no in-place form
    ]


def test_fresh_output_is_declared_by_the_kinds_whose_output_autograd_does_not_keep() -> None:
    assert {name for name, kind in KINDS.items() if kind.fresh_output} == {"Conv", "DWConv", "ConvTranspose", "BatchNorm", "FC"}


def test_helpers_are_derived_from_the_plan_and_copied_exactly() -> None:
    branches = cnndsl.parse("input 4x4x4\nConcat[ Conv(2, 1) | Chunk(2, 0) ], ReLU")
    # A branch's layers have names (`conv`, `chunk`): the naming helper holds them.
    assert set().union(*(c.helpers() for c in build_plan(branches).children)) == {"Concat", "Chunk", "sequential"}
    source = branches.torch_source()
    assert "class Concat(nn.Sequential):" in source and "class Chunk(nn.Module):" in source and "def sequential(" in source
    assert "class Add(" not in source
    plain = cnndsl.parse("input 4x4x4\nChunk(2, 0), Conv(2, 1)")
    assert build_plan(plain).helpers() == {"Chunk", "sequential"}  # the network's own children: its class's attributes
    source = plain.torch_source()
    assert "class Chunk(nn.Module):" in source and "def sequential(" not in source and "OrderedDict" not in source
    named = cnndsl.parse("input 4x4x4\nunit: [conv: Conv(2, 1), act: ReLU], GlobalAvgPool")
    source = named.torch_source()
    assert "from collections import OrderedDict" in source and "def sequential(" in source
    assert "class Concat(" not in source
    # Labels only at the top level: the network is the class itself, so no helper is needed.
    top = cnndsl.parse("input 4x4x4\nconv: Conv(2, 1), act: ReLU")
    assert build_plan(top).helpers() == {"sequential"} and "sequential" not in top.torch_source()


def test_every_helper_is_importable_and_has_source_to_copy() -> None:
    # One rule on both sides: the public classes and functions of torch_modules.py.
    assert list(torch_modules.HELPERS) == list(helper_sources())
    assert set(torch_modules.HELPERS) >= {"Add", "Concat", "Mul", "Chunk", "ChannelShuffle", "sequential"}
    for name, source in helper_sources().items():
        assert source.startswith((f"class {name}(", f"def {name}(")), name
        assert getattr(torch_modules, name) is torch_modules.HELPERS[name]
        assert name in RESERVED  # a network or parameter named like a helper cannot shadow it


def test_a_name_outside_the_helpers_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # What forgetting to define a helper in torch_modules.py looks like: both targets fail loudly.
    monkeypatch.setattr(
        type(KINDS["ChannelShuffle"]), "torch_call", lambda self, args, shape, inplace=False: TorchCall("Shuffle")
    )
    network = cnndsl.parse("input 4x2x2\nChannelShuffle(2)")
    with pytest.raises(KeyError):
        network.to_torch()
    with pytest.raises(NameError, match="Shuffle"):
        generated_class(network)()


def test_lowering_errors_come_from_the_plan_with_the_layer_position(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnndsl.layers.base import LayerError

    def refuse(self: object, args: object, shape: object, inplace: bool = False) -> TorchCall:
        raise LayerError("Tanh cannot be lowered here", hint="use Sigmoid")

    monkeypatch.setattr(type(KINDS["Tanh"]), "torch_call", refuse)
    network = cnndsl.parse("input 3x4x4\nConv(2, 1)\nAdd[ Tanh | ]", filename="n.cnn")
    messages = []
    for target in (build_plan, lambda n: n.to_torch(), lambda n: n.torch_source()):
        with pytest.raises(CnnDslError) as info:
            target(network)
        diagnostic = info.value.errors[0]
        assert (diagnostic.position.line, diagnostic.position.column) == (3, 6)
        messages.append(info.value.format())
    assert messages[0] == messages[1] == messages[2]
    assert "Tanh cannot be lowered here" in messages[0] and "use Sigmoid" in messages[0]


def deep_network(blocks: int, brackets: int) -> cnndsl.Network:
    """Blocks of nested groups calling each other: about blocks * (brackets + 1) levels."""
    lines = ["input 2x4x4", "block B0() = [" + "[" * brackets + "Conv(2, 1), ReLU" + "]" * brackets + "]"]
    lines += [f"block B{i}() = [" + "[" * brackets + f"B{i - 1}()" + "]" * brackets + "]" for i in range(1, blocks)]
    return cnndsl.parse("\n".join([*lines, f"B{blocks - 1}()"]))


def test_deep_trees_build() -> None:
    # Over 600 levels: more than Python's default recursion limit lets the build walk
    # without the plan's guard (which must restore the limit afterwards).
    network = deep_network(4, 150)
    assert network.layers[0].path.count(".") > 600
    limit = sys.getrecursionlimit()
    module = network.to_torch(seed=0)
    assert sys.getrecursionlimit() == limit
    assert isinstance(module.get_submodule(network.layers[0].path), nn.Conv2d)


def test_nested_trees_generate_the_same_module() -> None:
    # Python's parser accepts at most 200 nested parentheses in the generated file.
    network = deep_network(1, 150)
    module = network.to_torch(seed=0).eval()
    generated = generated_class(network)().eval()
    assert list(generated.state_dict()) == list(module.state_dict())
    generated.load_state_dict(module.state_dict())
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        assert torch.equal(generated(x), module(x))


def test_planning_imports_no_torch() -> None:
    code = (
        "import sys, cnndsl; from cnndsl.torch_plan import build_plan; "
        "plan = build_plan(cnndsl.parse('input 3x8x8\\na: Add[ Conv(4, 1) | Conv(4, 3, pad=1) ], ReLU')); "
        "assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
