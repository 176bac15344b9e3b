"""Expressions with functions (issue 15 items 4 and 6): built-in functions, `**`, comparisons,
`and`/`or`/`not`, conditionals, `def` functions, repetition counts of 0 or any whole value,
and the repetition index `x N as i`."""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.checker.functions import make_divisible
from cnndsl.errors import CnnDslError


def _torchvision_make_divisible(v: float, divisor: int, min_value: Optional[int] = None) -> int:  # noqa: UP045
    """torchvision.models._utils._make_divisible, copied verbatim (torchvision 0.20)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    # Make sure that round down does not go down by more than 10%.
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def value_of(expr: str, params: str = "") -> object:
    """The value of `expr` as a network parameter's default (`params`: parameters it may read)."""
    net = cnndsl.parse(f"network N({params + ', ' if params else ''}v={expr})\ninput 4\nReLU")
    return net.parameters["v"]


def errors_of(source: str) -> list[str]:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    return [d.format(color=False) for d in info.value.diagnostics]


def first_error(source: str) -> tuple[str, int, int, str | None]:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    d = info.value.diagnostics[0]
    assert d.position is not None
    return d.message, d.position.line, d.position.column, d.hint


# -- make_divisible is torchvision's ------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(st.integers(-1000, 100_000), st.floats(-1000, 100_000, allow_nan=False)),
    st.integers(1, 256),
    st.one_of(st.none(), st.integers(0, 512)),
)
def test_make_divisible_is_torchvisions(v: float, divisor: int, min_value: int | None) -> None:
    assert make_divisible(v, divisor, min_value) == _torchvision_make_divisible(v, divisor, min_value)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 5000, allow_nan=False), st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_make_divisible_in_the_language_is_torchvisions(v: float, divisor: int) -> None:
    assert value_of(f"make_divisible({v!r}, {divisor})") == _torchvision_make_divisible(v, divisor)
    assert value_of(f"make_divisible({v!r}, divisor={divisor}, min_value=3)") == _torchvision_make_divisible(v, divisor, 3)


def test_make_divisible_of_mobilenet_and_efficientnet_widths() -> None:
    # MobileNetV3-Large at width 0.75 and EfficientNet-B4 (width 1.4): torchvision's channel counts.
    assert [value_of(f"make_divisible({c} * 0.75)") for c in (16, 24, 40, 80, 112, 160, 960)] == [16, 24, 32, 64, 88, 120, 720]
    assert [value_of(f"make_divisible({c} * 1.4)") for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [
        48,
        24,
        32,
        56,
        112,
        160,
        272,
        448,
    ]


# -- the built-in functions and operators ---------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("min(3, 1, 2)", 1),
        ("max(8, 64 // 16)", 8),
        ("max(1.5, 1)", 1.5),
        ("abs(-3)", 3),
        ("floor(2.7)", 2),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("ceil(4)", 4),
        ("round(2.5)", 2),  # banker's rounding, as Python (and torchvision's arithmetic)
        ("round(3.5)", 4),
        ("round(0.125, 2)", 0.12),
        ("int(-2.7)", -2),
        ("sqrt(16)", 4.0),
        ("log(8, 2)", 3.0),
        ("round(log(math_e))", 1),
        ("2 ** 10", 1024),
        ("2 ** 3 ** 2", 512),  # right-associative
        ("-2 ** 2", -4),  # ** binds tighter than unary minus, as Python
        ("2 ** -1", 0.5),
        ("(-8) ** 2", 64),
        ("2 * 3 ** 2", 18),
        ("4 ** 0.5", 2.0),
        ("1 < 2", True),
        ("1 < 2 < 2", False),  # chained, as Python
        ("1 <= 2 <= 2", True),
        ("3 == 3.0", True),
        ("3 != 3", False),
        ("not 1 > 2", True),
        ("1 < 2 and 2 < 1", False),
        ("1 < 2 or 2 < 1", True),
        ("not true or true", True),  # not binds tighter than or
        ("true or false and false", True),  # and binds tighter than or
        ("8 if 2 > 1 else 16", 8),
        ("8 if 2 < 1 else 16 if true else 32", 16),
        ("1 + 2 if false else 3 * 4", 12),
        ("max(1, 2) ** 2 + min(5, abs(-3))", 7),
        ("same == same", True),
    ],
)
def test_expression_values(expr: str, value: object) -> None:
    got = value_of(expr, "math_e=2.718281828459045")
    assert got == value and type(got) is type(value), (expr, got)


def test_conditionals_and_logic_short_circuit() -> None:
    # The branch not taken and the right operand not needed are never evaluated: no division by zero.
    assert value_of("0 if d == 0 else 8 / d", "d=0") == 0
    assert value_of("d != 0 and 8 / d > 1", "d=0") is False
    assert value_of("d == 0 or 8 / d > 1", "d=0") is True


@pytest.mark.parametrize(
    ("source", "message", "column", "hint"),
    [
        ("Conv(mx(8, 4), 3)", "unknown function `mx`", 6, "did you mean `max`?"),
        ("Conv(make_divisble(8), 3)", "unknown function `make_divisble`", 6, "did you mean `make_divisible`?"),
        ("Conv(Conv(8), 3)", "unknown function `Conv`", 6, "layers and blocks are elements, not values"),
        ("Conv(floor(8, 4), 3)", "`floor` takes 1 argument; got 2", 15, "signature: floor(x)"),
        ("Conv(max(8), 3)", "`max` takes 2 arguments or more; got 1", 6, "signature: max(a, b, ...)"),
        ("Conv(make_divisible(), 3)", "`make_divisible` takes 1 argument; got 0", 6, "min_value=divisor)"),
        ("Conv(make_divisible(9, 8, 8, 8), 3)", "`make_divisible` takes at most 3 arguments; got 4", 30, None),
        ("Conv(make_divisible(9, div=4), 3)", "`make_divisible` has no argument `div`", 24, "did you mean `divisor`?"),
        ("Conv(make_divisible(9, divisor=0), 3)", "make_divisible needs a positive divisor; got 0", 6, None),
        ("Conv(log(0), 3)", "log needs a positive number; got 0", 6, None),
        ("Conv(sqrt(-1), 3)", "sqrt needs a number of at least 0; got -1", 6, None),
        ("Conv(2 ** 63, 3)", "`2 ** 63` is too large; numbers are limited to 2^62", 6, None),
        ("Conv(2 ** 1000000000, 3)", "`2 ** 1000000000` is too large; numbers are limited to 2^62", 6, None),
        ("Conv(10.0 ** 400, 3)", "`10.0 ** 400` is too large; numbers are limited to 2^62", 6, None),
        ("Conv((-8) ** 0.5, 3)", "`(-8) ** 0.5` is not a real number", 7, "a negative number has no fractional power"),
        ("Conv(0 ** -1, 3)", "`0 ** -1` divides by zero", 6, None),
        ("Conv(0.5 ** -2000, 3)", "`0.5 ** -2000` is too large; numbers are limited to 2^62", 6, None),
        ("Conv(floor(1e300), 3)", "the value 1e+300 is too large; numbers are limited to 2^62", 12, None),
        ("Conv(8 if 3 else 4, 3)", "`if` needs true or false; got 3", 11, "a comparison gives one"),
        ("Conv(8 if wdth > 2 else 4, 3)", "unknown name `wdth`", 11, "did you mean `width`?"),
        ("Conv(8 and true, 3)", "`and` needs true or false; got 8", 6, None),
        ("Conv(true + 1, 3)", "arithmetic needs numbers; got true", 6, None),
        ("Conv(true < 1, 3)", "arithmetic needs numbers; got true", 6, None),
        ("Conv(1 < 2, 3)", "Conv: `out` must be a positive integer; got true", 6, None),
    ],
)
def test_function_and_operator_errors(source: str, message: str, column: int, hint: str | None) -> None:
    got, line, col, got_hint = first_error(f"network N(width=1)\ninput 3x8x8\n{source}")
    assert (got, line, col) == (message, 3, column)
    if hint is not None:
        assert got_hint is not None and hint in got_hint, got_hint


def test_a_call_is_never_unexpected_parenthesis() -> None:
    # What `max(8, ...)` got before functions: "unexpected `(`".
    for source in ("Conv(max(8, 4), 3)", "Conv(nosuch(8), 3)", "ReLU x max(1, 2)", "ReLU x (nosuch(2))"):
        try:
            cnndsl.parse(f"input 3x8x8\n{source}")
        except CnnDslError as err:
            assert "unexpected" not in str(err), str(err)


# -- repetition counts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "layers"),
    [("0", 0), ("3.0", 3), ("(1.5 * 2)", 3), ("ceil(1.2 * 2)", 3), ("round(2.5)", 2), ("n", 2), ("(n * 0)", 0)],
)
def test_repetition_counts_are_whole_values_of_any_expression(count: str, layers: int) -> None:
    net = cnndsl.parse(f"network N(n=2.0)\ninput 3x8x8\nConv(3, 3, pad=1) x {count}, ReLU")
    assert sum(layer.kind.name == "Conv" for layer in net.layers) == layers


@pytest.mark.parametrize(
    ("count", "message", "hint"),
    [
        ("(5 / 2)", "a repetition count must be a whole number; got 2.5", "round it"),
        ("(0 - 1)", "a repetition count cannot be negative; got -1", "`x 0` repeats nothing"),
        ("(1 < 2)", "a repetition count must be a whole number; got true", "round it"),
    ],
)
def test_repetition_count_errors(count: str, message: str, hint: str) -> None:
    got, line, _, got_hint = first_error(f"input 3x8x8\nReLU x {count}")
    assert (got, line) == (message, 2)
    assert got_hint is not None and hint in got_hint


def test_a_body_repeated_zero_times_is_still_checked_for_mistakes_that_need_no_shape() -> None:
    assert "unknown layer or block `Cnov`" in errors_of("input 3x8x8\n[Cnov(8, 3), ReLU] x 0")[0]
    # ... but not for shapes it would never see: FC on an image, repeated 0 times, is fine.
    assert cnndsl.parse("input 3x8x8\nFC(10) x 0, flatten, FC(2)").output_shape == (2,)


ZERO = """network Zero(n=0)
input 3x8x8
Conv(4, 3, pad=1)
stage: [Conv(4, 3, pad=1), BN, ReLU] x n
Add[ ReLU x 0 | Identity ]
[Conv(4, 3, pad=1), ReLU] x 0
GAP, flatten, FC(2)
"""


def test_zero_repetitions_are_the_identity_in_every_backend() -> None:
    import torch

    from tests.torch_checks import assert_counts_match, assert_forward_matches, generated_class

    net = cnndsl.parse(ZERO)
    assert [layer.kind.name for layer in net.layers] == ["Conv", "Identity", "Add", "GlobalAvgPool", "Flatten", "FC"]
    assert "x 0" in net.summary()
    assert [layer["path"] for layer in net.to_json()["layers"]] == ["conv", "add.1.identity", "add", "avgpool", "flatten", "fc"]
    module = net.to_torch(seed=0).eval()
    assert_counts_match(net, module)
    x = assert_forward_matches(net, module)
    with torch.no_grad():
        expected = module(x)
    # the generated source
    generated = generated_class(net)().eval()
    generated.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert torch.equal(generated(x), expected)
    # the NumPy interpreter, with the same weights
    numpy_model = net.to_numpy(module.state_dict())
    np.testing.assert_allclose(numpy_model(x.numpy()), expected.numpy(), rtol=1e-5, atol=1e-6)
    # the drawing
    assert "digraph" in net.to_dot().source and "digraph" in net.to_dot(expand=True).source


# -- the repetition index --------------------------------------------------------------------------


def test_repetition_index_counts_from_zero() -> None:
    net = cnndsl.parse("network N(total=4)\ninput 3x8x8\n[Conv(8 + 8 * i, 1), Dropout(0.2 * i / total)] x 4 as i")
    assert [layer.out_shape[0] for layer in net.layers if layer.kind.name == "Conv"] == [8, 16, 24, 32]
    assert [layer.args["p"] for layer in net.layers if layer.kind.name == "Dropout"] == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert [layer.path for layer in net.layers][:2] == ["blocks.0.conv", "blocks.0.dropout"]  # module paths as without `as i`


def test_nested_indexes_and_shadowing() -> None:
    net = cnndsl.parse("network N(i=100)\ninput 3x8x8\n[Conv(1 + 10 * i + j, 1) x 2 as j] x 2 as i\nConv(i, 1)")
    assert [layer.out_shape[0] for layer in net.layers] == [1, 2, 11, 12, 100]


def test_the_index_is_lexical_a_block_body_does_not_see_it() -> None:
    message, line, _, _ = first_error("input 3x8x8\nblock B = Conv(i + 1, 1)\nB x 2 as i")
    assert (message, line) == ("unknown name `i`", 2)
    net = cnndsl.parse("input 3x8x8\nblock B(k) = Conv(k + 1, 1)\nB(i) x 2 as i")
    assert [layer.out_shape[0] for layer in net.layers] == [1, 2]


def test_stochastic_depth_rate_rises_across_stages() -> None:
    # ConvNeXt/EfficientNet: p = rate * (blocks before this one) / (all blocks - 1), over stages of 3 and 2 blocks.
    source = """network N(rate=0.1)
input 8x8x8
block Unit(p) = Add[ Conv(8, 3, pad=1), Dropout(p) | ]
Unit(rate * i / 4) x 3 as i
Unit(rate * (3 + i) / 4) x 2 as i
"""
    rates = [layer.args["p"] for layer in cnndsl.parse(source).layers if layer.kind.name == "Dropout"]
    assert rates == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])


def test_as_needs_a_name() -> None:
    message, line, _, _ = first_error("input 3x8x8\nReLU x 2 as 3")
    assert line == 2 and message == "unexpected `3`"


# -- def -----------------------------------------------------------------------------------------------


def test_def_functions_call_each_other_and_read_network_parameters() -> None:
    source = """network N(width=0.5)
input 3x8x8
def scaled(c, by=width) = make_divisible(c * by)
def twice(c) = scaled(c) * 2 if c > 16 else scaled(c)
Conv(twice(64), 1), Conv(twice(16), 1), Conv(scaled(64, by=1), 1), Conv(half(x), 1)
def half(x) = x // 2 * 1
"""
    with pytest.raises(CnnDslError):  # `x` is no value here (and in a def, `x` and `*` are never repetition)
        cnndsl.parse(source)
    net = cnndsl.parse(source.replace("Conv(half(x), 1)", "Conv(half(16), 1)"))
    assert [layer.out_shape[0] for layer in net.layers] == [64, 8, 64, 8]
    assert net.parameters == {"width": 0.5}  # functions are not parameters


@pytest.mark.parametrize(
    ("lines", "message", "hint"),
    [
        ("def f(x) = f(x - 1)\nConv(f(3), 1)", "function `f` calls itself", "not themselves"),
        ("def f(x) = g(x)\ndef g(x) = f(x)\nConv(f(3), 1)", "function `f` calls itself", None),
        ("def max(a, b) = a\nConv(8, 1)", "`max` is a built-in function", "choose another name"),
        ("def f(a) = a\ndef f(b) = b\nConv(8, 1)", "function `f` is defined twice", "line 2"),
        ("def f(a, a) = a\nConv(8, 1)", "parameter `a` appears twice in function `f`", None),
        ("def f(a) = a + in_channels\nConv(8, 1)", "function `f` reads `in_channels`", "pass it as an argument"),
        ("def f(a) = a\nConv(f(1, 2), 1)", "`f` takes 1 argument; got 2", "signature: f(a)"),
        ("def f(a, b) = a\nConv(f(1), 1)", "`f` needs `b`", "signature: f(a, b)"),
        ("def f(a) = a\nConv(g(1), 1)", "unknown function `g`", "the functions: min, max"),
        ("def wide(a) = a\nConv(wid(1), 1)", "unknown function `wid`", "did you mean `wide`?"),
        ("def f(a) = b\nConv(f(1), 1)", "unknown name `b`", "names here: a"),
    ],
)
def test_def_errors(lines: str, message: str, hint: str | None) -> None:
    got, _, _, got_hint = first_error(f"input 3x8x8\n{lines}")
    assert got == message
    if hint is not None:
        assert got_hint is not None and hint in got_hint, got_hint


def test_exponential_functions_are_refused_quickly() -> None:
    lines = ["def f0(a) = a"] + [f"def f{k}(a) = f{k - 1}(a) + f{k - 1}(a + 1)" for k in range(1, 60)]
    start = time.perf_counter()
    message, _, _, _ = first_error("input 3x8x8\n" + "\n".join(lines) + "\nConv(f59(1) - f59(1) + 1, 1)")
    assert message == "functions defined with `def` were called more than 100,000 times"
    assert time.perf_counter() - start < 60  # a guard against a hang (2^59 calls), not a speed goal


def test_expressions_nested_deeply_through_functions_are_refused() -> None:
    lines = ["def f0(a) = a"] + [f"def f{k}(a) = f{k - 1}(a) + 1" for k in range(1, 400)]
    message, _, _, _ = first_error("input 3x8x8\n" + "\n".join(lines) + "\nConv(f399(1), 1)")
    assert message == "expression nested deeper than 500 levels"


# -- RegNet's width rule, written in the language ---------------------------------------------------


def _regnet_widths(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, quant: int = 8) -> list[tuple[int, int]]:
    """torchvision's BlockParams.from_init_params, per block: (width, group width) after
    _adjust_widths_groups_compatibilty (bottleneck multiplier 1), in float64 as NumPy computes it."""
    widths_cont = np.arange(depth) * w_a + w_0
    block_capacity = np.round(np.log(widths_cont / w_0) / math.log(w_m))
    block_widths = (np.round(np.divide(w_0 * np.power(w_m, block_capacity), quant)) * quant).astype(int).tolist()
    result = []
    for w in block_widths:
        g = min(group_width, w)
        result.append((_torchvision_make_divisible(w, g), g))
    return result


REGNET = """network RegNetX(w_0=24, w_a=24.48, w_m=2.54, group_width=16)
input 8x8x8
def raw_width(j) = round(w_0 * w_m ** round(log((w_0 + w_a * j) / w_0) / log(w_m)) / 8) * 8
def group(j) = min(group_width, raw_width(j))
def width(j) = make_divisible(raw_width(j), group(j))
def first_of_stage(j) = j == 0 or raw_width(j) != raw_width(j - 1)
Conv(width(j), 1, stride=2 if first_of_stage(j) else 1, groups=1) x 22 as j
"""


def test_regnet_width_rule_is_torchvisions() -> None:
    net = cnndsl.parse(REGNET, input=(8, 256, 256))
    convs = [layer for layer in net.layers if layer.kind.name == "Conv"]
    expected = _regnet_widths(22, 24, 24.48, 2.54, 16)
    assert [layer.out_shape[0] for layer in convs] == [w for w, _ in expected]
    # RegNetX-400MF: stages of 1, 2, 7 and 12 blocks of widths 32, 64, 160 and 400
    strides = [layer.args["stride"][0] for layer in convs]
    assert [j for j, s in enumerate(strides) if s == 2] == [0, 1, 3, 10]
    assert sorted({w for w, _ in expected}) == [32, 64, 160, 400]


@pytest.mark.parametrize(("body", "column"), [("ReLU x 0", 6), ("[]", 1), ("[Conv(8, 3) x 0, []] x 2", 22)])
def test_a_network_of_no_layers_is_refused(body: str, column: int) -> None:
    # (`[]` alone made `check` crash before: the summary read the last layer's receptive field.)
    message, line, col, hint = first_error(f"input 3x8x8\n{body}")
    assert message == "the network has no layers: every element of it is empty or repeated 0 times"
    assert (line, col) == (2, column)
    assert hint is not None and "Identity" in hint


def test_def_is_a_keyword_only_first_on_a_line_before_a_name() -> None:
    net = cnndsl.parse("network N(def=2)\ninput 3x8x8\nDEF f(c) = c * def\ndef: Conv(f(def), 1), Conv(def * 2, 1)")
    assert [layer.out_shape[0] for layer in net.layers] == [4, 4]
    assert [layer.path for layer in net.layers] == ["def_", "conv"]  # a Python keyword, made a safe module name


def test_unrun_bodies_are_checked_once_so_doubling_zero_repetitions_cost_nothing() -> None:
    lines = ["input 3x8x8", "block B0 = [Cnov]"] + [f"block B{k} = [B{k - 1} x 0, B{k - 1} x 0]" for k in range(1, 40)]
    start = time.perf_counter()
    assert errors_of("\n".join([*lines, "B39, ReLU"]))[0].startswith("<string>:2:13: error: unknown layer or block `Cnov`")
    assert time.perf_counter() - start < 60  # a guard against a hang (2^39 checks), not a speed goal


def test_counts_of_network_parameters_are_known_to_the_expansion_estimate() -> None:
    lines = ["network N(n=2)", "input 3x8x8", "block B0 = [ReLU]"]
    lines += [f"block B{k} = [B{k - 1} x n, B{k - 1} x n]" for k in range(1, 40)]
    start = time.perf_counter()
    message, line, _, _ = first_error("\n".join([*lines, "B39"]))
    assert message.startswith("block `B39` expands to at least") and line == 43
    assert time.perf_counter() - start < 60  # a guard against a hang (2^39 expansions), not a speed goal
    # ... and only when nothing hides the parameter: here `n` is B1's own parameter, 0 at the call.
    net = cnndsl.parse("network N(n=100000)\ninput 3x8x8\nblock B(n) = [ReLU x n, ReLU x n]\nB(0), B(1)")
    assert len(net.layers) == 2
