"""Network parameters in generated source: the expressions the checker records in the IR
(cnndsl.expr: Layer.terms, Sequence.call_terms; over the network's parameters, Network.terms),
rendered without checking the source again; the generated class built with other values equals
the network checked with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch_checks import generated_class, one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl
import cnndsl.frontend
from cnndsl.checker.symbolic import term_of
from cnndsl.checker.values import Scope
from cnndsl.expr import Expr, binary, call, expressible, opaque, param, params_of, render
from cnndsl.ir import Layer, Sequence, walk
from cnndsl.parser import parse_program

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "architectures"
DEFECTS = Path(__file__).resolve().parent / "data" / "defects"

EXPRESSIONS = """network Net(width=4, k=3, classes=5, drop=0.25, half=3)
input 3x16x16
block Unit(c, kernel=3) = [Conv(c, kernel, pad=kernel // 2), BatchNorm, ReLU]
block Res(c) = Add[ Unit(c), Conv(c, 3, pad=1), BatchNorm | ]
Unit(width), Conv(width, k, pad=1)
Res(width)
Conv(2 * width + 1, 3, stride=2, pad=same), ReLU
Concat[ Conv(width, 1) | Conv(8, 1) | ]
Conv(in_channels / half, 1)
DWConv(3, pad=1, multiplier=2)
Conv(max(width, 6) - 1, 1)
GlobalAvgPool, Flatten, Dropout(drop), FC(classes * 2), FC(classes)
"""


# ---- the expressions ----------------------------------------------------------------------


def test_render_writes_python_with_the_fewest_parentheses() -> None:
    w, g = param("width"), param("growth")
    names = {"width": "width", "growth": "g"}
    assert render(binary("*", w, 2), names) == "2 * width"
    assert render(binary("+", binary("+", 64, g), g), names) == "2 * g + 64"
    assert render(binary("-", w, binary("-", w, g)), names) == "g"  # linear terms cancel
    assert render(binary("//", binary("+", w, 16), 2), names) == "(width + 16) // 2"
    assert render(binary("-", 10, binary("//", w, 2)), names) == "-(width // 2) + 10"
    assert render(binary("**", binary("**", w, 2), 3), names) == "(width**2) ** 3".replace("**2", " ** 2")
    assert render(call("max", w, binary("*", g, 3)), names) == "max(width, 3 * g)"
    assert render((w, 3), names) == "(width, 3)"
    assert binary("+", 2, 3) == 5 and call("max", 2, 7) == 7  # constants fold as the checker computes them


def test_long_expressions_are_named_in_parts() -> None:
    g = param("growth")
    inner = binary("//", binary("+", binary("*", g, 6), 64), 2)
    outer = binary("+", binary("//", binary("+", inner, binary("*", g, 12)), 2), g)
    parts: dict[Expr, str] = {}

    def name_of(node: Expr, text: str) -> str:
        return parts.setdefault(node, f"c{len(parts) + 1}")

    assert render(outer, {"growth": "growth"}, repr, name_of) == "c2 + growth"
    assert list(parts.values()) == ["c1", "c2"]


def test_opaque_terms_name_their_parameters() -> None:
    term = binary("+", opaque(frozenset({"a", "b"})), param("c"))
    assert params_of(term) == {"a", "b", "c"}
    assert not expressible(term) and expressible(binary("+", param("a"), 1))
    with pytest.raises(ValueError):
        render(term, {"a": "a", "b": "b", "c": "c"})


def _term(text: str, values: dict[str, Any], symbols: dict[str, Any]) -> Any:
    program = parse_program(f"Conv({text}, 1)\n", cnndsl.errors.DiagnosticSink("<t>", ""))
    assert program is not None
    expr = program.items[0].args[0].value
    return term_of(expr, Scope(values, symbols=symbols), cnndsl.Shape((16, 8, 8)), binary("*", param("w"), 2))


def test_term_of_follows_names_blocks_and_in_channels() -> None:
    values, symbols = {"w": 4, "c": 8, "n": 3}, {"w": param("w"), "c": binary("*", param("w"), 2), "n": 3}
    assert _term("w * 2 + n", values, symbols) == binary("+", binary("*", param("w"), 2), 3)
    assert _term("c", values, symbols) == binary("*", param("w"), 2)  # a block parameter bound to `w * 2`
    assert _term("in_channels / 2", values, symbols) == binary("//", binary("*", param("w"), 2), 2)
    assert _term("n * 4", values, symbols) == 12  # no parameter: a constant
    assert _term("min(w, 8)", values, symbols) == call("min", param("w"), 8)
    conditional = _term("8 if w > 2 else 4", values, symbols)
    assert not expressible(conditional) and params_of(conditional) == {"w"}


def test_layers_record_their_expressions_in_the_ir() -> None:
    network = cnndsl.parse(EXPRESSIONS)
    exprs = {layer.path: network.terms.layers.get(layer) for layer in network.layers}
    first, second = exprs["unit.conv"], exprs["conv1"]
    assert first is not None and first.args == {"out": param("width")} and first.channels == 3  # the input: a constant
    assert second is not None and second.args == {"out": param("width"), "kernel": (param("k"), param("k"))}
    assert second.size == frozenset() and exprs["res.add.0.unit.bn"] is not None
    assert exprs["res.add.0.unit.bn"].size == {"k"}  # the kernel changes the image size after it
    assert exprs["res.add.0.unit.bn"].channels == param("width")  # BatchNorm in Unit(c), called with `width`
    fc = network.terms.layers[network.layers[-1]]
    assert fc.channels == binary("*", param("classes"), 2)
    assert network.structural_parameters == frozenset()
    plain = cnndsl.load(ZOO / "vgg11.cnn", num_classes=10)
    features = [layer for layer in plain.layers if layer.path.startswith("features")]
    assert all(layer not in plain.terms.layers or not plain.terms.layers[layer].channels for layer in features)


def test_blocks_record_their_terms_over_their_own_parameters() -> None:
    """One check records, inside each block call, the terms over the block's own parameters and input
    channels (what its class is written from), and on the call its arguments' terms in the caller's scope;
    the network-level terms are these composed (Network.terms)."""
    network = cnndsl.parse(EXPRESSIONS)
    by_path = {node.path: node for node, _ in walk(network.root)}
    res, unit = by_path["res"], by_path["res.add.0.unit"]
    assert isinstance(res, Sequence) and isinstance(unit, Sequence)
    assert res.call_terms == {"c": param("width")} and res.call_keys == {"0": "c"}
    assert unit.call_terms == {"c": param("block:c"), "kernel": 3}  # Unit(c) inside Res: over Res's own `c`
    assert unit.in_channels_term == param("in_channels:") and res.in_channels_term == param("width")  # Res's input
    conv = by_path["res.add.0.unit.conv"]
    assert isinstance(conv, Layer) and conv.terms is not None
    kernel = param("block:kernel")
    assert conv.terms.args == {"out": param("block:c"), "kernel": (kernel, kernel), "pad": (binary("//", kernel, 2),) * 2}
    assert conv.terms.channels == param("in_channels:")
    composed = network.terms.layers[conv]
    assert composed.args == {"out": param("width")} and composed.channels == param("width")
    assert network.terms.calls[res] == network.terms.calls[unit] == {"0": param("width")}  # Unit(c) in Res(width)
    # A repetition count that a block parameter decides makes the network parameter behind it structural.
    counted = cnndsl.parse("network N(n=2)\ninput 3x8x8\nblock B(k) = [ReLU x k]\nB(n + 1)\n")
    assert counted.structural_parameters == {"n"}


def test_an_opaque_part_bound_to_a_number_is_that_number_over_the_network() -> None:
    """Inside the block, `f(c)` is opaque (a def function of the block's own `c`); each call binds `c` to a
    number, so over the network's parameters it is that number, and `w` stays expressible (Network.terms)."""
    text = "network N(w=4)\ninput 3x8x8\ndef f(x) = x * 2\nblock B(c) = [Conv(f(c) + w, 3, pad=1), ReLU]\nB(4), B(5)\n"
    network = cnndsl.parse(text)
    assert [network.terms.layers[layer].args["out"] for layer in network.layers[::2]] == [
        binary("+", param("w"), 8),
        binary("+", param("w"), 10),
    ]
    source = network.torch_source()
    assert "nn.Conv2d(w + 8, w + 10, kernel_size=3, padding=1)" in source and "changes the network" not in source


def test_a_network_without_parameters_records_terms_only_in_blocks() -> None:
    """Terms outside blocks serve only network parameters: a network without them records none there,
    so checking it costs nothing more; its blocks' terms still give their classes."""
    network = cnndsl.parse("input 3x8x8\nblock B(c) = [Conv(c, 3, pad=1), ReLU]\nConv(4, 1), B(4), B(8)\n")
    top, inner = network.layers[0], network.layers[1]
    assert top.terms is None and inner.terms is not None and inner.terms.args == {"out": param("block:c")}
    assert network.terms.layers == {} and network.terms.calls == {}
    source = network.torch_source()
    assert "class B(nn.Sequential):" in source and "B(4, 8)" in source


# ---- code generation reads the IR alone ------------------------------------------------------


def _without_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("code generation ran the front end")

    for name in ("check_source", "parse", "load"):
        monkeypatch.setattr(cnndsl.frontend, name, refuse)
        monkeypatch.setattr(cnndsl, name, refuse)
    monkeypatch.setattr(cnndsl.checker.Checker, "run", refuse)


def test_generation_does_not_check_the_source_again(monkeypatch: pytest.MonkeyPatch) -> None:
    networks = [cnndsl.load(DEFECTS / "compile_params50.cnn"), cnndsl.load(ZOO / "densenet121.cnn"), cnndsl.parse(EXPRESSIONS)]
    _without_front_end(monkeypatch)  # the blocks' own terms too are in the IR: the checker ran once, in parse
    fifty, densenet, expressions = (network.torch_source() for network in networks)
    # Fifty parameters that reach no layer: the constructor takes them and nothing depends on them.
    assert "p49: int = 50" in fifty and "changes the network" not in fifty
    # DenseNet's growth reaches every layer after the first through concatenations and transitions.
    assert "c1 = (6 * growth + 64) // 2" in densenet
    assert "nn.BatchNorm2d(c1 + 5 * growth)" in densenet and "bn_size * growth," in densenet
    assert "changes the network" not in densenet
    for line in [
        "Unit(3, width, 3)",  # the block's class, which takes its input channels and parameters
        "nn.Conv2d(in_channels, c, kernel_size=kernel, padding=kernel // 2)",
        "nn.Conv2d(width, width, kernel_size=k, padding=1)",
        "nn.Conv2d(width, 2 * width + 1, kernel_size=3, stride=2, padding=1)",
        "nn.Conv2d(3 * width + 9, c1, kernel_size=1)",
        "nn.Conv2d(c1, 2 * c1, kernel_size=3, padding=1, groups=c1)",
        "nn.Dropout(p=drop)",
        "nn.Linear(2 * classes, classes)",
    ]:
        assert line in expressions, line


# ---- other values --------------------------------------------------------------------------


def _same_module(text: str, values: dict[str, Any], shape: tuple[int, ...]) -> None:
    """The generated class built with `values` equals the network checked with them: keys, shapes, weights, outputs."""
    cls = generated_class(cnndsl.parse(text))
    expected = cnndsl.parse(text, **values).to_torch(seed=7).eval()
    torch.manual_seed(7)
    model = cls(**values).eval()
    ours, theirs = model.state_dict(), expected.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))


@pytest.mark.parametrize(
    "values",
    [{}, {"width": 6, "k": 5, "classes": 3, "drop": 0.5}, {"width": 9, "half": 1}, {"width": 7, "k": 1, "half": 5}, {"half": 7}],
)
def test_other_values_build_the_network_checked_with_them(values: dict[str, Any]) -> None:
    _same_module(EXPRESSIONS, values, (3, 16, 16))


@pytest.mark.parametrize(
    ("text", "values"),
    [
        # torch_call leaves groups at 1 and padding at 0 unwritten; a parameter that reaches them is written
        # at any value (cnndsl.layers.conv.differs), so the constructor varies them.
        ("network N(g=1)\ninput 4x8x8\nConv(8, 3, groups=g)", {"g": 2}),
        ("network N(k=3)\ninput 3x8x8\nConv(4, k, pad=k // 2)", {"k": 1}),
        ("network N(s=1)\ninput 3x8x8\nblock B(c, stride=1) = [Conv(c, 3, stride=stride, pad=1)]\nB(4), B(8, s)", {"s": 2}),
    ],
)
def test_arguments_at_their_default_still_follow_the_parameter(text: str, values: dict[str, Any]) -> None:
    _same_module(text, values, (int(text.split("input ")[1][0]), 8, 8))


def test_densenet_with_another_growth_rate() -> None:
    _same_module((ZOO / "densenet121.cnn").read_text(), {"growth": 12, "bn_size": 2, "num_classes": 10}, (3, 32, 32))


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("network N(deep=2)\ninput 3x8x8\nConv(4, 1) x deep", "deep"),  # a repetition count: which layers exist
        ("network N(a=2, b=a * 2)\ninput 3x8x8\nConv(b, 1)", "a"),  # a default that reads another parameter
        ("network N(w=4)\ninput 3x8x8\ndef f(x) = x * w\nConv(f(2), 1)", "w"),  # a `def` function
        ("network N(w=4)\ninput 3x8x8\nConv(8 if w > 2 else 4, 1)", "w"),  # a conditional
        ("network N(k=3)\ninput 3x9x9\nConv(4, k), Flatten, FC(2)", "k"),  # the image size reaches FC's features
        ("network N(b=true)\ninput 3x8x8\nConv(4, 1, bias=b)", "b"),  # a boolean decides what torch_call writes
    ],
)
def test_what_no_expression_follows_is_refused_with_a_hint(text: str, fixed: str) -> None:
    network = cnndsl.parse(text)
    cls = generated_class(network)
    cls()  # the values it was compiled with
    other = {"b": False} if fixed == "b" else {fixed: network.parameters[fixed] + 1}
    with pytest.raises(ValueError, match=f"{fixed} changes the network in ways this file cannot express.*--set {fixed}="):
        cls(**other)


# ---- comments ------------------------------------------------------------------------------


def test_comments_hold_for_every_value_the_constructor_accepts() -> None:
    source = cnndsl.parse(EXPRESSIONS).torch_source()
    assert "x = self.unit(x)  # width x 16 x 16" in source  # Unit(width)
    assert "x = self.fc2(x)  # classes" in source and '"""Net: 3x16x16 -> classes."""' in source
    assert "x = self.fc1(x)  # 2 * classes" in source
    # After `Conv(width, k)` the image size depends on k: no size is written rather than a false one.
    assert "x = self.conv1(x)\n" in source
    assert "Unit(4)" not in source and "4x16x16" not in source and "# 5\n" not in source
    assert "# These figures are for the default parameter values" in source
    fixed = cnndsl.parse("network N(deep=2)\ninput 3x8x8\nblock B(c) = [Conv(c, 1)]\nB(deep * 4) x deep").torch_source()
    assert "B(8, 8),  # -> 8x8x8" in fixed  # a parameter the constructor refuses to vary keeps its value in comments
    assert "These figures" not in fixed


@pytest.mark.parametrize(
    ("text", "comment"),
    [
        ("network Aud(width=4)\ninput 1x64\nConv(width, 5, stride=2), ReLU, Conv(2 * width, 3)", "# (2 * width) x 28\n"),
        (
            "network Vid(width=4)\ninput 3x4x8x8\nConv(width, 3, pad=1), Conv(2 * width, 3, stride=2, pad=1)",
            "# (2 * width) x 2 x 4 x 4\n",
        ),
    ],
)
def test_comments_of_signals_and_volumes_keep_every_spatial_axis(text: str, comment: str) -> None:
    # A shape over a parameter must not read as a flat vector of that many features.
    assert comment in cnndsl.parse(text).torch_source()


def test_a_def_function_ties_only_the_parameters_its_body_reads() -> None:
    text = """network N(classes=10, width=1.0, depth=2.0)
input 3x8x8
def blocks(n) = ceil(n * depth)
def twice(n) = 2 * blocks(n)
def ch(c) = make_divisible(c * width)
Conv(ch(8), 3, pad=1) x twice(1)
flatten, FC(classes)"""
    network = cnndsl.parse(text)
    # The count reads depth through two functions; width reaches layers through ch, classes the head.
    assert network.structural_parameters == {"depth"}
    assert cnndsl.load(ROOT / "architectures" / "efficientnet.cnn").structural_parameters == {"width", "depth"}
