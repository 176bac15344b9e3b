"""The checker's parts, each alone: built from AST nodes and a sink, never through `parse()`."""

from __future__ import annotations

import pytest

from cnndsl import syntax
from cnndsl.checker import Checker
from cnndsl.checker.binding import Binder, coerce, owner_name
from cnndsl.checker.budget import Abort, Budget
from cnndsl.checker.header import collect_defaults, input_shape, network_params, split_program
from cnndsl.checker.values import (
    POISON,
    EvalError,
    Poisoned,
    Scope,
    Word,
    as_number,
    evaluate,
    expr_text,
    free_names,
    parse_value,
    report_errors,
)
from cnndsl.errors import DiagnosticSink, Position
from cnndsl.layers import lookup
from cnndsl.layers.base import ArgSpec
from cnndsl.limits import MAX_BLOCK_BINDINGS, MAX_BLOCK_DEPTH, MAX_ELEMENTS, MAX_LAYERS
from cnndsl.shapes import Shape

P = Position(1, 1)


def num(value: int | float) -> syntax.Number:
    return syntax.Number(value, P)


def name(text: str) -> syntax.Name:
    return syntax.Name(text, P)


def binop(op: str, left: syntax.Expr, right: syntax.Expr) -> syntax.BinOp:
    return syntax.BinOp(op, left, right, P)


def call(kind: str, *args: syntax.Expr, line: int = 1, **keywords: syntax.Expr) -> syntax.Call:
    """A call on `line`, its arguments in successive columns (the sink reports one error per position)."""
    values = [(None, a) for a in args] + list(keywords.items())
    given = [syntax.Arg(key, value, Position(line, 2 + column)) for column, (key, value) in enumerate(values)]
    return syntax.Call(kind, tuple(given), Position(line, 1))


def sink() -> DiagnosticSink:
    return DiagnosticSink("<parts>", "")


def messages(target: DiagnosticSink) -> list[str]:
    return [d.message for d in target.diagnostics]


# -- values and expressions -----------------------------------------------------------------


def test_evaluate_arithmetic_names_and_in_channels() -> None:
    scope = Scope({"c": 16})
    assert evaluate(binop("*", name("c"), num(2)), scope, None) == 32
    assert evaluate(binop("/", num(6), num(3)), scope, None) == 2 and isinstance(
        evaluate(binop("/", num(6), num(3)), scope, None), int
    )
    assert evaluate(binop("/", num(7), num(2)), scope, None) == 3.5
    assert evaluate(syntax.Neg(name("c"), P), scope, None) == -16
    assert evaluate(syntax.Pair(num(3), name("c"), P), scope, None) == (3, 16)
    assert evaluate(name("in_channels"), scope, Shape((8, 4, 4))) == 8
    assert evaluate(name("same"), scope, None) == Word("same")
    assert evaluate(name("True"), scope, None) is True


def test_evaluate_errors_and_poison() -> None:
    with pytest.raises(EvalError, match="division by zero in `c % 0`"):
        evaluate(binop("%", name("c"), num(0)), Scope({"c": 1}), None)
    with pytest.raises(EvalError, match="too large; numbers are limited to 2"):
        evaluate(binop("*", num(2**40), num(2**40)), Scope({}), None)
    with pytest.raises(EvalError, match="unknown name `chanels`") as caught:
        evaluate(binop("+", name("chanels"), num(1)), Scope({"channels": 3}), None)
    assert caught.value.hint == "did you mean `channels`?"
    with pytest.raises(Poisoned):
        evaluate(name("bad"), Scope({"bad": POISON}), None)
    with pytest.raises(Poisoned):  # in_channels of an unknown shape
        evaluate(name("in_channels"), Scope({}), None)
    deep: syntax.Expr = num(1)
    for _ in range(600):
        deep = syntax.Neg(deep, P)
    with pytest.raises(EvalError, match="nested deeper than 500"):
        evaluate(deep, Scope({}), None)
    with pytest.raises(EvalError, match="arithmetic needs numbers; got true"):
        as_number(True, name("x"), Scope({}))


def test_report_errors_is_the_one_place_evaluation_errors_become_diagnostics() -> None:
    target = sink()
    scope = Scope({}, (("Block", "Block(1)", Position(3, 4)),))
    assert report_errors(target, scope, lambda: evaluate(num(5), scope, None)) == 5
    assert report_errors(target, scope, lambda: evaluate(binop("//", num(1), num(0)), scope, None), "signature: f(x)") is POISON
    assert report_errors(target, scope, lambda: evaluate(name("in_channels"), scope, None)) is POISON  # poisoned: silent
    (diagnostic,) = target.diagnostics
    assert diagnostic.message == "division by zero in `1 // 0`"
    assert diagnostic.hint == "signature: f(x)"
    assert diagnostic.notes == ("in block `Block`, reached from `Block(1)` at line 3, column 4",)


def test_parse_value_free_names_and_text() -> None:
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("TRUE") is True
    assert parse_value("3x5") == (3, 5) and parse_value("same") == Word("same")
    with pytest.raises(ValueError, match="digits; numbers are limited to 2"):
        parse_value("9" * 100)
    expr = binop("+", name("a"), syntax.Pair(name("b"), syntax.Neg(name("a"), P), P))
    assert free_names(expr) == {"a", "b"}
    assert expr_text(expr) == "a + (b, -a)"


# -- binding ----------------------------------------------------------------------------------


def test_bind_names_positional_then_keywords() -> None:
    target = sink()
    binder = Binder(target)
    specs = (ArgSpec("out", "int"), ArgSpec("kernel", "pair"), ArgSpec("pad", "pad", 0, keywords=("padding",)))
    bound = binder.bind_names("Conv", specs, "Conv(out, kernel, pad=0)", call("Conv", num(8), num(3), padding=num(1)))
    assert bound is not None and sorted(bound) == ["kernel", "out", "pad"]
    assert binder.keyword_names(specs, False) is binder.keyword_names(specs, False)  # made once per signature
    assert binder.bind_names("Conv", specs, "sig", call("Conv", num(1), num(2), num(3), num(4), line=2)) is None
    assert binder.bind_names("Conv", specs, "sig", call("Conv", num(1), stide=num(2), line=3)) is None
    assert binder.bind_names("Conv", specs, "sig", call("Conv", num(1), Padding=num(1), line=4)) is not None
    assert binder.bind_names("B", specs, "sig", call("B", num(1), PADDING=num(1), line=5), case_sensitive=True) is None
    assert messages(target) == [
        "Conv takes at most 3 arguments; got 4",
        "Conv has no argument `stide`",
        "B has no argument `PADDING`",
    ]


def test_coerce_checks_types_and_minimums() -> None:
    assert coerce("Conv", ArgSpec("kernel", "pair", minimum=1), (3.0, 5), P) == (3, 5)
    assert coerce("Conv", ArgSpec("pad", "pad"), Word("SAME"), P) == "same"
    assert coerce("Dropout", ArgSpec("p", "float"), 1, P) == 1.0
    with pytest.raises(EvalError, match="`out` must be a positive integer; got 0"):
        coerce("Conv", ArgSpec("out", "int", minimum=1), 0, P)
    with pytest.raises(EvalError, match="`bias` must be true or false; got 1"):
        coerce("Conv", ArgSpec("bias", "bool"), 1, P)


def test_layer_args_fill_defaults_and_report_at_the_signature() -> None:
    target = sink()
    binder = Binder(target)
    conv = lookup("Conv")
    assert conv is not None and owner_name(conv, "conv") == "Conv"
    defaults = collect_defaults(target, binder, syntax.DefaultsDecl((call("Conv", pad=num(1)),), P))
    bound = binder.layer_args(conv, call("Conv", num(8), num(3)), Scope({}), Shape((3, 8, 8)), defaults, {})
    assert bound is not None and bound.values["pad"] == 1 and bound.values["out"] == 8
    assert binder.layer_args(conv, call("Conv", binop("/", num(1), num(0)), num(3)), Scope({}), None, {}, {}) is None
    assert messages(target) == ["division by zero in `1 / 0`"]
    assert target.diagnostics[0].hint is not None and target.diagnostics[0].hint.startswith("signature: Conv(")


# -- header -----------------------------------------------------------------------------------


def test_split_program_orders_header_lines() -> None:
    target = sink()
    program = syntax.Program(
        (
            syntax.InputDecl((3, 8, 8), Position(1, 1)),
            syntax.NetworkDecl("N", (), Position(2, 1)),
            syntax.BlockDef("B", (), call("ReLU"), Position(3, 1)),
            call("B"),
            syntax.DefaultsDecl((), Position(5, 1)),
        )
    )
    header = split_program(program, target)
    assert header.network is not None and header.input is not None and list(header.blocks) == ["B"]
    assert header.body == [call("B")]
    assert messages(target) == ["`network` is out of order", "`defaults` must come before the blocks and layers"]


def test_network_params_overrides_and_defaults() -> None:
    target = sink()
    params = (
        syntax.Param("width", num(16), Position(1, 11)),
        syntax.Param("double", binop("*", name("width"), num(2)), Position(1, 21)),
        syntax.Param("n", None, Position(1, 41)),
    )
    values = network_params(target, syntax.NetworkDecl("N", params, P), {"width": "8", "depht": 2})
    assert values["width"] == 8 and values["double"] == 16 and values["n"] is POISON
    assert messages(target) == ["unknown network parameter `depht`", "network parameter `n` has no default and was not set"]
    values = network_params(target, syntax.NetworkDecl("N", params[:1], P), {"width": float("nan")})
    assert values["width"] is POISON and messages(target)[-1] == "network parameter `width` must be a finite number; got nan"


def test_input_shape_from_the_line_or_the_override() -> None:
    target = sink()
    budget = Budget(target, {})
    assert input_shape(target, budget, syntax.InputDecl((3, 8, 8), P), None) == Shape((3, 8, 8))
    assert input_shape(target, budget, syntax.InputDecl((3, 8, 8), P), Shape((1, 4, 4))) == Shape((1, 4, 4))
    assert input_shape(target, budget, syntax.InputDecl((3, 8, 8, 8, 8), Position(2, 1)), None) is None
    assert input_shape(target, budget, None, None) is None
    assert input_shape(target, budget, syntax.InputDecl((2**21, 2**10, 2**10), Position(3, 1)), None) is None
    assert input_shape(target, budget, syntax.InputDecl((224, 224, 3), Position(4, 1)), None) == Shape((224, 224, 3))
    assert messages(target) == [
        "`input` takes N, CxL, CxHxW or CxDxHxW; got 5 dimensions",
        "no `input` line",
        f"the input has {2**41:,} elements; the limit is 2^40",
        "input 224x224x3 looks channels-last; cnndsl takes CxHxW: did you mean 3x224x224?",
    ]


# -- budget -----------------------------------------------------------------------------------


def test_budget_counts_layers_and_aborts_once_over() -> None:
    target = sink()
    budget = Budget(target, {})
    budget.leaf_count = MAX_LAYERS - 1
    budget.count_layer(Scope({}), P)
    with pytest.raises(Abort):
        budget.count_layer(Scope({}), Position(7, 2))
    (diagnostic,) = target.diagnostics
    assert diagnostic.message == f"the network expands to more than {MAX_LAYERS:,} layers" and diagnostic.position == Position(
        7, 2
    )


def test_budget_limits_elements_bindings_and_depth() -> None:
    target = sink()
    budget = Budget(target, {})
    conv = lookup("Conv")
    assert conv is not None
    budget.check_output(conv, Shape((1, 1, 1)), P, Scope({}))
    with pytest.raises(Abort):
        budget.check_output(conv, Shape((2**21, 2**10, 2**10)), Position(1, 1), Scope({}))
    with pytest.raises(Abort):
        budget.check_params(conv, MAX_ELEMENTS + 1, Position(2, 1), Scope({}))
    block = syntax.BlockDef("Wide", tuple(syntax.Param(f"p{i}", num(0), P) for i in range(1000)), call("ReLU"), P)
    with pytest.raises(Abort):
        for _ in range(MAX_BLOCK_BINDINGS // 1000 + 1):
            budget.count_bindings(block, call("Wide", line=3), Scope({}))
    deep = Scope({}, tuple(("B", "B", P) for _ in range(MAX_BLOCK_DEPTH)))
    with pytest.raises(Abort):
        budget.check_block_depth(call("B", line=4), deep)
    assert [m.split(" ")[0:3] for m in messages(target)] == [
        ["Conv", "would", "produce"],
        ["Conv", "would", "have"],
        ["block", "calls", "bind"],
        ["block", "calls", "nested"],
    ]


def test_budget_estimates_a_block_before_expanding_it() -> None:
    """Each block calls the previous one twice: 2^40 layers, refused from the estimate."""
    blocks = {"B0": syntax.BlockDef("B0", (), call("ReLU"), P)}
    for level in range(1, 41):
        inner = call(f"B{level - 1}")
        blocks[f"B{level}"] = syntax.BlockDef(f"B{level}", (), syntax.Group((inner, inner), P), P)
    target = sink()
    budget = Budget(target, blocks)
    assert budget.block_min_size(blocks["B3"]) == (8, 8 + 4 + 2 + 1)
    with pytest.raises(Abort):
        budget.refuse_oversized(blocks["B40"], call("B40"), Scope({}))
    assert messages(target) == [f"block `B40` expands to at least {2**40:,} layers"]
    with pytest.raises(Abort):
        budget.check_repeat(0, 3, MAX_LAYERS, True, Position(2, 1), Scope({}))
    assert (
        messages(target)[-1]
        == f"this repetition expands to at least {MAX_LAYERS:,} x 3 = {3 * MAX_LAYERS:,} layers; the limit is {MAX_LAYERS:,}"
    )


# -- expansion and inference ----------------------------------------------------------------


def test_checker_expands_blocks_and_repeats_from_an_ast() -> None:
    target = sink()
    block = syntax.BlockDef(
        "Unit", (syntax.Param("c", None, P),), syntax.Group((call("Conv", name("c"), num(3), pad=num(1)), call("ReLU")), P), P
    )
    program = syntax.Program(
        (syntax.InputDecl((3, 8, 8), P), block, syntax.Repeat(call("Unit", num(4)), num(2), P), call("Flatten"))
    )
    result = Checker(program, target).run()
    assert result is not None and not target.diagnostics
    assert result.input_shape == Shape((3, 8, 8)) and result.root.out_shape == Shape((256,))
    repeat = result.root.children[0]
    assert repeat.params == 3 * 4 * 9 + 4 + 4 * 4 * 9 + 4 == result.root.params  # totals summed once, up the tree
    assert [layer.path for layer in result.root.leaves()] == [
        "blocks.0.conv",
        "blocks.0.relu",
        "blocks.1.conv",
        "blocks.1.relu",
        "flatten",
    ]


def test_checker_reports_a_shape_error_and_stops_the_branch() -> None:
    target = sink()
    merge = syntax.Merge("Add", (syntax.Group((call("Conv", num(4), num(3)),), P), syntax.Group((), P)), Position(2, 1))
    result = Checker(syntax.Program((syntax.InputDecl((3, 8, 8), P), merge)), target).run()
    assert result is None
    assert len(target.diagnostics) == 1 and target.diagnostics[0].message == "Add: branch shapes disagree: 4x6x6, 3x8x8"


# -- functions -----------------------------------------------------------------------------


def test_functions_part_alone() -> None:
    from cnndsl.checker.functions import define_functions, function_key, power

    def args(*values: syntax.Expr) -> tuple[syntax.Arg, ...]:
        return tuple(syntax.Arg(None, v, P) for v in values)

    scope = Scope({"w": 0.5})
    assert evaluate(syntax.FuncCall("make_divisible", args(binop("*", num(40), name("w"))), P), scope, None) == 24
    test = syntax.Compare(name("w"), (("<", num(1)), ("<=", num(1))), P)
    assert evaluate(syntax.Conditional(num(8), test, num(16), P), scope, None) == 8
    assert evaluate(syntax.BoolOp("and", syntax.Not(test, P), binop("/", num(1), num(0)), P), scope, None) is False
    assert power(2, 62, P) == 2**62
    with pytest.raises(EvalError, match="too large"):
        power(2, 63, P)
    body = binop("*", name("c"), name("w"))
    definition = syntax.FuncDef("scale", (syntax.Param("c", None, P),), body, P)
    values = define_functions({"scale": definition}, {"w": 0.5})
    assert function_key("scale") in values and "scale" not in values
    assert evaluate(syntax.FuncCall("scale", args(num(6)), P), Scope(values), None) == 3.0
    assert free_names(syntax.FuncCall("scale", args(name("k")), P)) == {"k"}
    assert expr_text(syntax.Conditional(num(8), test, num(16), P)) == "8 if w < 1 <= 1 else 16"
