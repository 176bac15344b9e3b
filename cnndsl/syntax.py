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
    op: str  # one of + - * / // % **
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


class FuncCall(NamedTuple):
    """A function in an expression: `max(8, c // 2)`, `make_divisible(c * width)`, a `def`'s function."""

    name: str
    args: tuple[Arg, ...]
    pos: Position


class Compare(NamedTuple):
    """`a < b`, or a chain `a <= b < c` (Python's: each pair compared, all must hold)."""

    first: Expr
    rest: tuple[tuple[str, Expr], ...]  # (one of < <= > >= == !=, the operand after it)
    pos: Position


class BoolOp(NamedTuple):
    op: str  # `and` or `or`, short-circuiting
    left: Expr
    right: Expr
    pos: Position


class Not(NamedTuple):
    operand: Expr
    pos: Position


class Conditional(NamedTuple):
    """`then if test else otherwise`: only the branch chosen is evaluated."""

    then: Expr
    test: Expr
    otherwise: Expr
    pos: Position


class Reference(NamedTuple):
    """`@name`: the tensor of the earlier element labelled `name` (`@input`: the body's input);
    `@name*` (`every`): the output of every iteration of the labelled repetition, as merge branches.

    It is an element, and also an expression: an argument that names a tensor (`Upsample(like=@skip)`,
    an ArgSpec of type `reference`); evaluated as a number, it is an error."""

    label: str
    every: bool
    pos: Position


Expr = Number | Name | BinOp | Neg | Pair | FuncCall | Compare | BoolOp | Not | Conditional | Reference


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
    condition: Expr | None = None
    """A merge branch's `if` condition (`Add[a | Identity if shortcut]`): the branch is present only
    where it is true (None: always). A `[...]` group has none."""


class Merge(NamedTuple):
    """`Add[...]`, `Concat[...]` or `Mul[...]`; an empty branch is an identity. A branch with a
    condition is left out where the condition is false."""

    op: str
    branches: tuple[Group, ...]
    pos: Position


class Repeat(NamedTuple):
    body: Element
    count: Expr  # type: ignore[assignment]  # shadows tuple.count, which nothing calls on a Repeat
    pos: Position
    index_name: str | None = None
    """`x N as i`: the name that holds the iteration's number (0 to N - 1) in the body."""


class Labeled(NamedTuple):
    label: str
    body: Element
    pos: Position


Element = Call | Group | Merge | Repeat | Labeled | Reference


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


class OutputName(NamedTuple):
    label: str
    pos: Position
    condition: Expr | None = None
    """`output logits, aux if aux`: the output is listed only where this is true (None: always)."""


class OutputDecl(NamedTuple):
    """`output a, b`: the network returns the tensors labelled `a` and `b`, in that order (those whose condition holds)."""

    names: tuple[OutputName, ...]
    pos: Position


class DefaultsDecl(NamedTuple):
    calls: tuple[Call, ...]
    pos: Position


class BlockDef(NamedTuple):
    name: str
    params: tuple[Param, ...]
    body: Element
    pos: Position


class FuncDef(NamedTuple):
    """`def name(p1, p2=default) = expression`: a function for expressions."""

    name: str
    params: tuple[Param, ...]
    body: Expr
    pos: Position


Declaration = NetworkDecl | InputDecl | OutputDecl | DefaultsDecl | BlockDef | FuncDef


class Program(NamedTuple):
    """A whole file: its top-level declarations and elements, in source order."""

    items: tuple[Declaration | Element, ...]
