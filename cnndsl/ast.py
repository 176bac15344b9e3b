"""The abstract syntax tree: immutable nodes that keep their source positions.

The nodes are NamedTuples rather than frozen dataclasses only because they are created
ten times faster at import, which `cnndsl check`'s start-up time notices.

Only cnndsl.parser builds these and only cnndsl.checker reads them; no later stage
looks at the parse tree or the text.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import Position

# -- expressions -------------------------------------------------------------------


class Number(NamedTuple):
    value: int | float
    pos: Position


class Name(NamedTuple):
    id: str
    pos: Position


class BinOp(NamedTuple):
    op: str  # one of + - * / // %
    left: Expr
    right: Expr
    pos: Position


class Neg(NamedTuple):
    operand: Expr
    pos: Position


class Pair(NamedTuple):
    """A parenthesised tuple: `(h, w)`, or `(d, h, w)` with the third entry in `rest`."""

    first: Expr
    second: Expr
    pos: Position
    rest: tuple[Expr, ...] = ()

    @property
    def items(self) -> tuple[Expr, ...]:
        return (self.first, self.second, *self.rest)


Expr = Number | Name | BinOp | Neg | Pair


# -- elements ----------------------------------------------------------------------


class Arg(NamedTuple):
    name: str | None  # None for a positional argument
    value: Expr
    pos: Position


class Call(NamedTuple):
    """A layer or a block call: `Conv(64, 3)`, `ReLU`, `Basic(64)`."""

    name: str
    args: tuple[Arg, ...]
    pos: Position


class Group(NamedTuple):
    items: tuple[Element, ...]
    pos: Position


class Merge(NamedTuple):
    """`Add[...]`, `Concat[...]` or `Mul[...]`; an empty branch is an identity."""

    op: str
    branches: tuple[Group, ...]
    pos: Position


class Repeat(NamedTuple):
    body: Element
    count: Expr  # type: ignore[assignment]  # shadows tuple.count, which nothing calls on a Repeat
    pos: Position


class Labeled(NamedTuple):
    label: str
    body: Element
    pos: Position


Element = Call | Group | Merge | Repeat | Labeled


# -- declarations -------------------------------------------------------------------


class Param(NamedTuple):
    name: str
    default: Expr | None
    pos: Position


class NetworkDecl(NamedTuple):
    name: str
    params: tuple[Param, ...]
    pos: Position


class InputDecl(NamedTuple):
    dims: tuple[int, ...]
    pos: Position


class DefaultsDecl(NamedTuple):
    calls: tuple[Call, ...]
    pos: Position


class BlockDef(NamedTuple):
    name: str
    params: tuple[Param, ...]
    body: Element
    pos: Position


Declaration = NetworkDecl | InputDecl | DefaultsDecl | BlockDef


class Program(NamedTuple):
    """A whole file: its top-level declarations and elements, in source order."""

    items: tuple[Declaration | Element, ...]
