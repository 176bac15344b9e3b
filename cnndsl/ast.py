"""The abstract syntax tree: frozen dataclasses that keep their source positions.

Only cnndsl.parser builds these and only cnndsl.checker reads them; no later stage
looks at the parse tree or the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Position

# -- expressions -------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: int | float
    pos: Position


@dataclass(frozen=True)
class Name:
    id: str
    pos: Position


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / // %
    left: Expr
    right: Expr
    pos: Position


@dataclass(frozen=True)
class Neg:
    operand: Expr
    pos: Position


@dataclass(frozen=True)
class Pair:
    first: Expr
    second: Expr
    pos: Position


Expr = Number | Name | BinOp | Neg | Pair


# -- elements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    name: str | None  # None for a positional argument
    value: Expr
    pos: Position


@dataclass(frozen=True)
class Call:
    """A layer or a block call: `Conv(64, 3)`, `ReLU`, `Basic(64)`."""

    name: str
    args: tuple[Arg, ...]
    pos: Position


@dataclass(frozen=True)
class Group:
    items: tuple[Element, ...]
    pos: Position


@dataclass(frozen=True)
class Merge:
    """`Add[...]`, `Concat[...]` or `Mul[...]`; an empty branch is an identity."""

    op: str
    branches: tuple[Group, ...]
    pos: Position


@dataclass(frozen=True)
class Repeat:
    body: Element
    count: Expr
    pos: Position


@dataclass(frozen=True)
class Labeled:
    label: str
    body: Element
    pos: Position


Element = Call | Group | Merge | Repeat | Labeled


# -- declarations -------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    pos: Position


@dataclass(frozen=True)
class NetworkDecl:
    name: str
    params: tuple[Param, ...]
    pos: Position


@dataclass(frozen=True)
class InputDecl:
    dims: tuple[int, ...]
    pos: Position


@dataclass(frozen=True)
class DefaultsDecl:
    calls: tuple[Call, ...]
    pos: Position


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: Element
    pos: Position


Declaration = NetworkDecl | InputDecl | DefaultsDecl | BlockDef


@dataclass(frozen=True)
class Program:
    """A whole file: its top-level declarations and elements, in source order."""

    items: tuple[Declaration | Element, ...]
