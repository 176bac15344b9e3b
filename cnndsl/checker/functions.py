"""Expressions beyond arithmetic: the built-in functions (one table, `BUILTINS`), `**`, comparisons,
`and`/`or`/`not`, the conditional `a if c else b`, and the functions a file defines with `def`.

`values.evaluate` hands every node it does not know to `evaluate_extended`; each function here
raises `EvalError` at a position, with a hint, for a wrong call, a value out of a function's
domain or a result over the numbers' limit, and is pure like the rest of evaluation (a `def`'s
function carries the one mutable thing, the count of calls against `MAX_FUNCTION_CALLS`).
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from .. import syntax
from ..errors import Position
from ..layers.base import format_value
from ..limits import MAX_FUNCTION_CALLS, MAX_NUMBER
from ..shapes import Shape
from .values import EvalError, Scope, Value, Word, as_number, checked, evaluate, expr_text, free_names, plain, suggest

Number = int | float


class DomainError(Exception):
    """A built-in function's argument outside its domain (raised by the function, positioned by the caller)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


# -- the built-in functions ----------------------------------------------------------------


def make_divisible(v: Number, divisor: Number = 8, min_value: Number | None = None) -> Number:
    """torchvision's `_make_divisible` (MobileNet, EfficientNet, RegNet), rule for rule: the nearest
    multiple of `divisor`, at least `min_value` (`divisor` when not given), one `divisor` more when
    rounding down lost more than 10% of `v`."""
    if divisor <= 0:
        raise DomainError(f"make_divisible needs a positive divisor; got {format_value(divisor)}")
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int):
        raise DomainError(f"round's `ndigits` must be a whole number; got {format_value(ndigits)}")
    return round(x, ndigits)


def _log(x: Number, base: Number | None = None) -> float:
    if x <= 0:
        raise DomainError(f"log needs a positive number; got {format_value(x)}")
    if base is None:
        return math.log(x)
    if base <= 0 or base == 1:
        raise DomainError(f"log's base must be positive and not 1; got {format_value(base)}")
    return math.log(x, base)


def _sqrt(x: Number) -> float:
    if x < 0:
        raise DomainError(f"sqrt needs a number of at least 0; got {format_value(x)}")
    return math.sqrt(x)


def _extreme(choose: Callable[..., Number]) -> Callable[..., Number]:
    def compute(*values: Number) -> Number:
        return choose(values)

    return compute


@dataclass(frozen=True)
class Builtin:
    """A built-in function: its parameters (a trailing `*` parameter takes any number of values, 2 at least)."""

    params: tuple[str, ...]
    required: int
    compute: Callable[..., Number]
    signature: str
    """As the reference shows it."""
    summary: str

    @property
    def variadic(self) -> bool:
        return self.params[-1].startswith("*")


# Each takes its arguments by the names in `params` (a call may give them as keywords).
BUILTINS: dict[str, Builtin] = {
    "min": Builtin(("*values",), 2, _extreme(min), "min(a, b, ...)", "the smallest"),
    "max": Builtin(("*values",), 2, _extreme(max), "max(a, b, ...)", "the largest"),
    "abs": Builtin(("x",), 1, lambda x: abs(x), "abs(x)", "the magnitude"),
    "floor": Builtin(("x",), 1, lambda x: math.floor(x), "floor(x)", "the largest integer not above x"),
    "ceil": Builtin(("x",), 1, lambda x: math.ceil(x), "ceil(x)", "the smallest integer not below x"),
    "round": Builtin(
        ("x", "ndigits"), 1, _round, "round(x, ndigits=none)", "Python's round: halves go to the even neighbour (2.5 to 2)"
    ),
    "int": Builtin(("x",), 1, lambda x: int(x), "int(x)", "x truncated towards zero, as Python's int()"),
    "sqrt": Builtin(("x",), 1, _sqrt, "sqrt(x)", "the square root"),
    "log": Builtin(("x", "base"), 1, _log, "log(x, base=e)", "the natural logarithm, or to `base`"),
    "make_divisible": Builtin(
        ("v", "divisor", "min_value"),
        1,
        make_divisible,
        "make_divisible(v, divisor=8, min_value=divisor)",
        "torchvision's `_make_divisible`: the nearest multiple of divisor, at least min_value, "
        "plus divisor when that rounds down by more than 10%",
    ),
}


# -- functions defined with `def` -----------------------------------------------------------


@dataclass
class CallCount:
    """Calls of `def` functions in one check, against MAX_FUNCTION_CALLS (a function that calls
    another twice per call doubles at each level); and the functions being evaluated (recursion)."""

    calls: int = 0
    active: set[str] = field(default_factory=set)


@dataclass
class UserFunction:
    definition: syntax.FuncDef
    count: CallCount
    globals: dict[str, Value] = field(default_factory=dict)
    """The network's parameters and every function: what the body sees besides its parameters (set once all are defined)."""

    @cached_property
    def reads(self) -> frozenset[str] | None:
        """`function_reads(self)`, once: a body and its globals do not change after definition, and code
        generation's terms ask for every call of the function."""
        return function_reads(self)

    @property
    def signature(self) -> str:
        params = ", ".join(p.name + ("=..." if p.default is not None else "") for p in self.definition.params)
        return f"{self.definition.name}({params})"


def function_reads(function: UserFunction) -> frozenset[str] | None:
    """The network parameters a `def` function reads: the names its body and its parameters'
    defaults use that are no parameter of its own, through every function it calls (None when
    an expression is too deep to look at). Code generation needs no more: a function of `depth`
    alone does not tie `num_classes` to the repetition counts it decides."""
    read: set[str] = set()
    seen: set[str] = set()
    pending = [function]
    while pending:
        current = pending.pop()
        if current.definition.name in seen:
            continue
        seen.add(current.definition.name)
        own = {param.name for param in current.definition.params}
        exprs = [current.definition.body, *(param.default for param in current.definition.params if param.default is not None)]
        for expr in exprs:
            names = free_names(expr)
            if names is None:
                return None
            read |= {name for name in names - own if name in current.globals}
            nodes = [expr]
            while nodes:
                node = nodes.pop()
                called = current.globals.get(function_key(node.name)) if isinstance(node, syntax.FuncCall) else None
                if isinstance(called, UserFunction):
                    pending.append(called)
                nodes.extend(operands(node))
    return frozenset(read)


def operands(node: syntax.Expr) -> tuple[syntax.Expr, ...]:
    """A node's direct sub-expressions, of every kind."""
    if isinstance(node, syntax.Neg):
        return (node.operand,)
    if isinstance(node, syntax.Pair):
        return node.items
    if isinstance(node, syntax.BinOp):
        return (node.left, node.right)
    return sub_expressions(node)


def function_key(name: str) -> str:
    """Functions live among the network's values under `name()`: every scope that sees the network's
    parameters sees them, and no name (an identifier) can hide one."""
    return name + "()"


def define_functions(definitions: Mapping[str, syntax.FuncDef], network_values: Mapping[str, Value]) -> dict[str, Value]:
    """The network's values with the file's functions added (each sees all of them, in any order)."""
    count = CallCount()
    functions = {function_key(name): UserFunction(definition, count) for name, definition in definitions.items()}
    values: dict[str, Value] = {**network_values, **functions}
    for function in functions.values():
        function.globals = values
    return values


def _call_user(function: UserFunction, call: syntax.FuncCall, scope: Scope, shape: Shape | None, depth: int) -> Value:
    definition = function.definition
    count = function.count
    if definition.name in count.active:
        raise EvalError(
            f"function `{definition.name}` calls itself",
            call.pos,
            "functions may call other functions, but not themselves (there are no loops in expressions)",
        )
    count.calls += 1
    if count.calls > MAX_FUNCTION_CALLS:
        raise EvalError(
            f"functions defined with `def` were called more than {MAX_FUNCTION_CALLS:,} times",
            call.pos,
            "a function that calls another several times grows exponentially; pass a value computed once as an argument",
        )
    given = _bind(definition.name, [p.name for p in definition.params], call, function.signature)
    local: dict[str, Value] = {}
    body_scope = Scope(ChainMap(local, function.globals), scope.calls)
    for param in definition.params:
        if param.name in given:
            local[param.name] = evaluate(given[param.name], scope, shape, depth + 1)
        elif param.default is not None:
            local[param.name] = evaluate(param.default, body_scope, None, depth + 1)
        else:
            raise EvalError(f"`{definition.name}` needs `{param.name}`", call.pos, f"signature: {function.signature}")
    count.active.add(definition.name)
    try:
        # The body sees its parameters and the network's, not `in_channels` (the definition refuses it).
        value = evaluate(definition.body, body_scope, None, depth + 1)
    finally:
        count.active.discard(definition.name)
    if isinstance(value, Word) and value.text.lower() != "same":
        as_number(value, definition.body, body_scope)  # an unknown name in the body: reported there
    return value


# -- calls ------------------------------------------------------------------------------------


def _bind(name: str, params: list[str], call: syntax.FuncCall, signature: str) -> dict[str, syntax.Expr]:
    """A call's arguments by parameter name (a variadic parameter takes the positional ones as `0`, `1`, ...)."""
    variadic = bool(params) and params[-1].startswith("*")
    given: dict[str, syntax.Expr] = {}
    positional = 0
    for arg in call.args:
        if arg.name is None:
            if len(given) > positional:
                raise EvalError("a positional argument after a keyword argument", arg.pos, f"signature: {signature}")
            if variadic:
                given[str(positional)] = arg.value
            elif positional < len(params):
                given[params[positional]] = arg.value
            else:
                taken = f"{len(params)} argument{'s' if len(params) != 1 else ''}"
                raise EvalError(
                    f"`{name}` takes {'at most ' if _has_defaults(name) else ''}{taken}; got {len(call.args)}",
                    arg.pos,
                    f"signature: {signature}",
                )
            positional += 1
            continue
        if variadic or arg.name not in params:
            options = [] if variadic else params
            hint = suggest(arg.name, options) if options else None
            raise EvalError(
                f"`{name}` has no argument `{arg.name}`", arg.pos, f"{hint + ' ' if hint else ''}signature: {signature}"
            )
        if arg.name in given:
            raise EvalError(f"`{name}`: `{arg.name}` is given twice", arg.pos, f"signature: {signature}")
        given[arg.name] = arg.value
    return given


def _has_defaults(name: str) -> bool:
    builtin = BUILTINS.get(name)
    return builtin is not None and builtin.required < len(builtin.params)


def _call(call: syntax.FuncCall, scope: Scope, shape: Shape | None, depth: int) -> Value:
    function = scope.values.get(function_key(call.name))
    if isinstance(function, UserFunction):
        return _call_user(function, call, scope, shape, depth)
    builtin = BUILTINS.get(call.name)
    if builtin is None:
        known = [*BUILTINS, *(key[:-2] for key in scope.values if key.endswith("()"))]
        hint = suggest(call.name, known) or f"the functions: {', '.join(known)}; layers and blocks are elements, not values"
        raise EvalError(f"unknown function `{call.name}`", call.pos, hint)
    given = _bind(call.name, list(builtin.params), call, builtin.signature)
    if len(given) < builtin.required:
        needed = f"{builtin.required} argument{'s' if builtin.required != 1 else ''}"
        more = " or more" if builtin.variadic else ""
        raise EvalError(f"`{call.name}` takes {needed}{more}; got {len(given)}", call.pos, f"signature: {builtin.signature}")
    numbers = {key: as_number(evaluate(expr, scope, shape, depth + 1), expr, scope) for key, expr in given.items()}
    # Every argument is a finite number within 2^62 (`checked`): no built-in overflows on one.
    try:
        if builtin.variadic:
            result = builtin.compute(*numbers.values())
        else:
            result = builtin.compute(**numbers)
    except DomainError as err:
        raise EvalError(err.message, call.pos, err.hint or f"in `{expr_text(call)}`") from None
    return checked(result, call.pos)


# -- operators ---------------------------------------------------------------------------------


def power(base: Number, exponent: Number, pos: Position) -> Number:
    """`base ** exponent` as Python computes it, refused before computing when the result would pass
    the numbers' limit (an integer power is exact: `2 ** 100000` would take long and say nothing)."""
    text = f"{'(' + format_value(base) + ')' if base < 0 else format_value(base)} ** {format_value(exponent)}"
    too_large = EvalError(f"`{text}` is too large; numbers are limited to 2^62", pos)
    if base == 0 and exponent < 0:
        raise EvalError(f"`{text}` divides by zero", pos)
    if base < 0 and exponent != int(exponent):
        raise EvalError(f"`{text}` is not a real number", pos, "a negative number has no fractional power")
    if abs(base) > 1 and exponent * math.log2(abs(base)) > math.log2(MAX_NUMBER) + 1e-9:
        raise too_large
    try:
        result = base**exponent
    except OverflowError:  # a float power below 1 in magnitude, to a large negative exponent
        raise too_large from None
    return checked(result, pos)


def _truth(value: Value, expr: syntax.Expr, scope: Scope, role: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Word):
        as_number(value, expr, scope)  # an unknown name: reported as one, with a did-you-mean
    raise EvalError(
        f"{role} needs true or false; got {format_value(plain(value))}",
        expr.pos,
        "a comparison gives one: `c > 64`, `d != 0`",
    )


_ORDER: dict[str, Callable[[Number, Number], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _compare(expr: syntax.Compare, scope: Scope, shape: Shape | None, depth: int) -> bool:
    left = evaluate(expr.first, scope, shape, depth + 1)
    left_expr: syntax.Expr = expr.first
    for op, right_expr in expr.rest:
        right = evaluate(right_expr, scope, shape, depth + 1)
        if op in ("==", "!="):
            for value, source in ((left, left_expr), (right, right_expr)):
                if isinstance(value, Word) and value.text.lower() != "same":
                    as_number(value, source, scope)  # an unknown name, not a word to compare
            holds = (plain(left) == plain(right)) == (op == "==")
        else:
            holds = _ORDER[op](as_number(left, left_expr, scope), as_number(right, right_expr, scope))
        if not holds:
            return False
        left, left_expr = right, right_expr
    return True


def evaluate_extended(expr: syntax.Expr, scope: Scope, shape: Shape | None, depth: int) -> Value:
    """The value of a function call, comparison, `and`/`or`/`not` or conditional (`evaluate` does the rest)."""
    if isinstance(expr, syntax.FuncCall):
        return _call(expr, scope, shape, depth)
    if isinstance(expr, syntax.Compare):
        return _compare(expr, scope, shape, depth)
    if isinstance(expr, syntax.BoolOp):
        left = _truth(evaluate(expr.left, scope, shape, depth + 1), expr.left, scope, f"`{expr.op}`")
        if left == (expr.op == "or"):  # short-circuit, as Python: `d != 0 and c / d > 2`
            return left
        return _truth(evaluate(expr.right, scope, shape, depth + 1), expr.right, scope, f"`{expr.op}`")
    if isinstance(expr, syntax.Not):
        return not _truth(evaluate(expr.operand, scope, shape, depth + 1), expr.operand, scope, "`not`")
    if isinstance(expr, syntax.Conditional):
        test = _truth(evaluate(expr.test, scope, shape, depth + 1), expr.test, scope, "`if`")
        return evaluate(expr.then if test else expr.otherwise, scope, shape, depth + 1)
    raise AssertionError(f"unknown expression {expr!r}")


def sub_expressions(expr: syntax.Expr) -> tuple[syntax.Expr, ...]:
    """The operands of a node `evaluate_extended` evaluates (for `free_names`)."""
    if isinstance(expr, syntax.FuncCall):
        return tuple(arg.value for arg in expr.args)
    if isinstance(expr, syntax.Compare):
        return (expr.first, *(operand for _, operand in expr.rest))
    if isinstance(expr, syntax.BoolOp):
        return (expr.left, expr.right)
    if isinstance(expr, syntax.Not):
        return (expr.operand,)
    if isinstance(expr, syntax.Conditional):
        return (expr.then, expr.test, expr.otherwise)
    return ()


def extended_text(expr: syntax.Expr, depth: int) -> str:
    """The text of a node `evaluate_extended` evaluates (for `expr_text`)."""
    if isinstance(expr, syntax.FuncCall):
        args = [(f"{a.name}=" if a.name else "") + expr_text(a.value, depth + 1) for a in expr.args]
        return f"{expr.name}({', '.join(args)})"
    if isinstance(expr, syntax.Compare):
        return expr_text(expr.first, depth + 1) + "".join(f" {op} {expr_text(e, depth + 1)}" for op, e in expr.rest)
    if isinstance(expr, syntax.BoolOp):
        return f"{expr_text(expr.left, depth + 1)} {expr.op} {expr_text(expr.right, depth + 1)}"
    if isinstance(expr, syntax.Not):
        return f"not {expr_text(expr.operand, depth + 1)}"
    if isinstance(expr, syntax.Conditional):
        parts = (expr.then, expr.test, expr.otherwise)
        then, test, otherwise = (expr_text(part, depth + 1) for part in parts)
        return f"{then} if {test} else {otherwise}"
    raise AssertionError(f"unknown expression {expr!r}")


def whole_count(value: Value) -> int | None:
    """A repetition count's value as an int (`3.0` is 3), or None when it is not a whole number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)
