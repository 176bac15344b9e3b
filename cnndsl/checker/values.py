"""Values and expressions: what an argument can be, evaluating syntax-tree expressions, numbers' limits.

Pure functions of an expression and a `Scope` (no checker state), so they are tested alone.
Evaluation raises `EvalError` (a positioned problem) or `Poisoned` (the value depends on an
earlier error: skip silently); `report_errors` is the one place either becomes a diagnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import syntax
from ..errors import DiagnosticSink, Position
from ..layers.base import format_value
from ..limits import MAX_NUMBER
from ..shapes import Shape

Value = Any  # int | float | bool | Word | tuple[int, int]
BUILTIN_WORDS = {"true": True, "false": False}
MAX_EXPR_DEPTH = 500


@dataclass(frozen=True)
class Word:
    """A bare word used as a value (`same`)."""

    text: str

    def __str__(self) -> str:
        return self.text


POISON = object()
"""The value of a name whose definition had an error: using it is silently skipped."""


class Poisoned(Exception):
    """A value depends on a shape that an earlier error left unknown: skip silently."""


class EvalError(Exception):
    def __init__(self, message: str, pos: Position, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.pos, self.hint = message, pos, hint


NO_SYMBOLS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Scope:
    """Names visible to an expression and the chain of block calls that led here."""

    values: Mapping[str, Value]
    calls: tuple[tuple[str, str, Position], ...] = ()
    """(block name, call as written, call position), outermost first."""
    symbols: Mapping[str, Any] = field(default_factory=lambda: NO_SYMBOLS)
    """Name -> its term over the network's parameters (checker/symbolic.py), beside `values`
    and shadowed as they are; empty in a network without parameters."""

    def notes(self) -> list[str]:
        return [
            f"in block `{name}`, reached from `{text}` at line {pos.line}, column {pos.column}"
            for name, text, pos in reversed(self.calls)
        ]


def report_errors(sink: DiagnosticSink, scope: Scope, compute: Callable[[], Value], fallback_hint: str | None = None) -> Value:
    """`compute()`, or POISON when it fails: an EvalError becomes one diagnostic (with the
    scope's block-call notes, and `fallback_hint` when it has none), a Poisoned value none."""
    try:
        return compute()
    except EvalError as err:
        sink.error(err.message, err.pos, err.hint or fallback_hint, scope.notes())
        return POISON
    except Poisoned:
        return POISON


MAX_SUGGESTION_CANDIDATES = 500
"""Most names one did-you-mean compares (difflib's cost grows with each): the closest in length first."""


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """A did-you-mean hint, comparing case-insensitively."""
    import difflib  # only on the error path: keeps `cnndsl check` start-up short

    target = name.lower()
    lowered: dict[str, str] = {}
    for candidate in candidates:
        # A ratio of at least 0.6 needs lengths within a factor of 4 of each other.
        low = candidate.lower()
        if 4 * len(low) >= len(target) and len(low) <= 4 * len(target):
            lowered.setdefault(low, candidate)
    options = list(lowered)
    if len(options) > MAX_SUGGESTION_CANDIDATES:
        options = sorted(options, key=lambda c: abs(len(c) - len(target)))[:MAX_SUGGESTION_CANDIDATES]
    match = difflib.get_close_matches(target, options, n=1, cutoff=0.6)
    return f"did you mean `{lowered[match[0]]}`?" if match else None


def names_text(names: list[str], shown: int = 12) -> str:
    """`a, b, c` for a hint, at most `shown` of them (a block may have thousands of parameters)."""
    text = ", ".join(names[:shown])
    return text + f", ... ({len(names) - shown:,} more)" if len(names) > shown else text


def ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def parse_value(text: str) -> Value:
    """A value given as text on the command line (`--set k=v`).

    ValueError for an integer too long to be a value (int() itself refuses over 4,300 digits).
    """
    low = text.strip().lower()
    if low in BUILTIN_WORDS:
        return BUILTIN_WORDS[low]
    digits = low.lstrip("+-").replace("x", "")
    if digits.isdigit() and len(digits.lstrip("0")) > len(str(MAX_NUMBER)):
        raise ValueError(f"{text.strip()[:20]}... has {len(digits):,} digits; numbers are limited to 2^62")
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if "x" in low and all(p.isdigit() for p in low.split("x")) and low.count("x") == 1:
        a, b = low.split("x")
        return (int(a), int(b))
    return Word(text.strip())


def evaluate(expr: syntax.Expr, scope: Scope, shape: Shape | None, depth: int = 0) -> Value:
    """The value of `expr`; `shape` is the layer's input (for `in_channels`; None: unknown)."""
    if depth > MAX_EXPR_DEPTH:
        raise EvalError(
            f"expression nested deeper than {MAX_EXPR_DEPTH} levels",
            expr.pos,
            "simplify the expression (a network parameter can hold a computed value)",
        )
    if isinstance(expr, syntax.Number):
        return checked(expr.value, expr.pos)
    if isinstance(expr, syntax.Name):
        if expr.id in scope.values:
            value = scope.values[expr.id]
            if value is POISON:
                raise Poisoned
            return value
        low = expr.id.lower()
        if low == "in_channels":
            if shape is None:
                raise Poisoned
            return shape.channels
        if low in BUILTIN_WORDS:
            return BUILTIN_WORDS[low]
        return Word(expr.id)
    if isinstance(expr, syntax.Neg):
        value = as_number(evaluate(expr.operand, scope, shape, depth + 1), expr.operand, scope)
        return -value
    if isinstance(expr, syntax.Pair):
        return tuple(evaluate(item, scope, shape, depth + 1) for item in expr.items)
    if isinstance(expr, syntax.BinOp):
        left = as_number(evaluate(expr.left, scope, shape, depth + 1), expr.left, scope)
        right = as_number(evaluate(expr.right, scope, shape, depth + 1), expr.right, scope)
        if expr.op in ("/", "//", "%") and right == 0:
            raise EvalError(f"division by zero in `{expr_text(expr)}`", expr.pos)
        if expr.op == "+":
            result = left + right
        elif expr.op == "-":
            result = left - right
        elif expr.op == "*":
            result = left * right
        elif expr.op == "/":
            result = left // right if isinstance(left, int) and isinstance(right, int) and left % right == 0 else left / right
        elif expr.op == "//":
            result = left // right
        elif expr.op == "%":
            result = left % right
        else:
            from .functions import power

            return power(left, right, expr.pos)
        return checked(result, expr.pos)
    if isinstance(expr, syntax.Reference):
        # Only an argument of type `reference` takes one (the binder reads it without evaluating it).
        written = f"@{expr.label}{'*' if expr.every else ''}"
        raise EvalError(
            f"`{written}` is a tensor, not a value",
            expr.pos,
            f"a reference stands as an element (`{written}, Conv(...)`) or a merge branch; "
            f"as an argument it gives another tensor's size: `Upsample(like=@{expr.label})`",
        )
    # Function calls, comparisons, and/or/not and conditionals: checker/functions.py.
    from .functions import evaluate_extended

    return evaluate_extended(expr, scope, shape, depth)


def as_number(value: Value, expr: syntax.Expr, scope: Scope) -> int | float:
    """`value` as an operand of arithmetic; an unknown name (a Word) or a non-number is an EvalError."""
    if isinstance(value, Word):
        if value.text[0].isdigit():  # `2x3x3`: sizes as the summary prints them, but three of them
            raise EvalError(
                f"`{value.text}` is not a value", expr.pos, "a kernel, stride or pad is one number or HxW, such as 3x3"
            )
        names = [name for name, v in scope.values.items() if v is not POISON and name.isidentifier()] + ["in_channels"]
        hint = suggest(value.text, names) or (f"names here: {names_text(names)}" if names else None)
        raise EvalError(f"unknown name `{value.text}`", expr.pos, hint)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvalError(f"arithmetic needs numbers; got {format_value(plain(value))}", expr.pos)
    return value


def checked(value: int | float, pos: Position) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError("the expression is not a finite number", pos, "NaN and infinities cannot be layer arguments")
    if abs(value) > MAX_NUMBER:
        raise EvalError(f"the value {magnitude(value)} is too large; numbers are limited to 2^62", pos)
    return value


def magnitude(value: int | float) -> str:
    """A number for a message, short and safe: str() of a huge int raises (over 4,300 digits) or floods the screen."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    return f"{value:.3g}"


def short_repr(value: object, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, (bytes, bytearray)) else repr(bytes(value[:limit]))
    return text if len(text) <= limit else text[:limit] + "..."


def free_names(expr: syntax.Expr) -> set[str] | None:
    """The names an expression reads (None if it is too deep to look at: not cached then)."""
    from .functions import operands  # functions imports this module

    names: set[str] = set()
    stack: list[tuple[syntax.Expr, int]] = [(expr, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPR_DEPTH:
            return None
        if isinstance(node, syntax.Name):
            names.add(node.id)
        else:
            stack += [(operand, depth + 1) for operand in operands(node)]
    return names


def plain(value: Value) -> Value:
    return value.text if isinstance(value, Word) else value


def expr_text(expr: syntax.Expr, depth: int = 0) -> str:
    """The expression as written, for notes; `...` below MAX_EXPR_DEPTH levels (the evaluator refuses those)."""
    if depth > MAX_EXPR_DEPTH:
        return "..."
    if isinstance(expr, syntax.Number):
        return str(expr.value)
    if isinstance(expr, syntax.Name):
        return expr.id
    if isinstance(expr, syntax.Neg):
        return f"-{expr_text(expr.operand, depth + 1)}"
    if isinstance(expr, syntax.Pair):
        return f"({', '.join(expr_text(item, depth + 1) for item in expr.items)})"
    if isinstance(expr, syntax.BinOp):
        return f"{expr_text(expr.left, depth + 1)} {expr.op} {expr_text(expr.right, depth + 1)}"
    if isinstance(expr, syntax.Reference):
        return f"@{expr.label}{'*' if expr.every else ''}"
    from .functions import extended_text

    return extended_text(expr, depth)


def call_text(call: syntax.Call) -> str:
    args = [(f"{a.name}=" if a.name else "") + expr_text(a.value) for a in call.args]
    return f"{call.name}({', '.join(args)})" if args else call.name
