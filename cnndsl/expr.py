"""Expressions over the network's parameters, as the checker records them in the IR.

A layer argument (or an inferred quantity such as a layer's input channels) that a network
parameter drives is recorded as a *term*: an `Expr` tree whose leaves are parameters
(`Expr("param", ("width",))`) and constants, or a plain constant when no parameter reaches
it. A pair argument is a tuple of two terms. Where a parameter reaches a number through
something this module cannot write as Python (a user function, a conditional), the term is
`opaque`: it names the parameters, so code generation knows which ones it cannot vary.

Backends read these without the front end: `render` writes a term as Python source over
the generated constructor's argument names. Adding an operator or a function is one entry in
`OPERATORS` (binary, with its precedence) or `FUNCTIONS` (a call), and one in the checker's
`cnndsl.checker.symbolic`, which builds the tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

Term = Any
"""An `Expr`, a constant (int, float, bool, str), or a tuple of terms (a pair argument)."""


class Expr:
    """One node: `op` applied to `args` (terms). `params` are the network parameters it reads;
    `value`, for an opaque node, the number it has where it was made (None when not known there)."""

    __slots__ = ("op", "args", "params", "value")

    def __init__(self, op: str, args: tuple[Term, ...], params: frozenset[str] | None = None, value: Any = None) -> None:
        self.op = op
        self.args = args
        self.params = params if params is not None else frozenset().union(*(params_of(a) for a in args))
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and (self.op, self.args) == (other.op, other.args)

    def __hash__(self) -> int:
        return hash((self.op, self.args))

    def __repr__(self) -> str:
        return f"Expr({self.op!r}, {self.args!r})"


def param(name: str) -> Expr:
    return Expr("param", (name,), frozenset((name,)))


def opaque(params: frozenset[str], value: Any = None) -> Expr:
    """A number the parameters reach in a way no expression here writes; `value` is its number where it
    is made (when known): what it stands for once `substitute` leaves no parameter in it."""
    return Expr("opaque", (), params, value)


def params_of(term: Term) -> frozenset[str]:
    """The parameters a term reads (empty for a constant)."""
    if isinstance(term, Expr):
        return term.params
    if isinstance(term, tuple):
        return frozenset().union(*(params_of(t) for t in term))
    return frozenset()


def symbolic(term: Term) -> bool:
    """Whether a parameter reaches the term."""
    return bool(params_of(term))


def expressible(term: Term) -> bool:
    """Whether `render` can write the term (no opaque part)."""
    if isinstance(term, Expr):
        return term.op != "opaque" and all(expressible(a) for a in term.args)
    if isinstance(term, tuple):
        return all(expressible(t) for t in term)
    return True


BLOCK_PARAMETER = "block:"
"""The prefix of a block parameter's name in the terms recorded inside a block call (`Layer.terms`,
cnndsl.checker.symbolic): `param("block:c")` is the block's own `c`, not a network parameter `c`."""
IN_CHANNELS = "in_channels:"
"""The term name of a block's input channels (features) in the terms recorded inside a block call."""


def substitute(term: Term, values: Mapping[str, Term], value: Any, whole_opaque: bool = True) -> Term:
    """`term` with each parameter in `values` replaced by its term, folded again; `value` (the
    number the term has) when no parameter is left, or where an opaque part stood for it.

    With `whole_opaque`, a node with an opaque operand becomes opaque as a whole; without, it keeps
    its operation over the opaque operand, and an opaque part that no parameter reaches any more is
    its number (`Expr.value`), as the checker builds a term directly (cnndsl.terms composes so)."""
    result = _substitute(term, values, whole_opaque)
    return result if params_of(result) else value


def _substitute(term: Term, values: Mapping[str, Term], whole_opaque: bool) -> Term:
    if isinstance(term, tuple):
        return tuple(_substitute(t, values, whole_opaque) for t in term)
    if not isinstance(term, Expr):
        return term
    if term.op == "param":
        return values.get(term.args[0], term)
    if term.op == "opaque":
        params = frozenset().union(*(params_of(values.get(p, param(p))) for p in term.params))
        return opaque(params, term.value) if params or whole_opaque or term.value is None else term.value
    args = [_substitute(a, values, whole_opaque) for a in term.args]
    if whole_opaque and any(isinstance(a, Expr) and a.op == "opaque" for a in args):
        return opaque(params_of(tuple(args)))
    if term.op in OPERATORS:
        return binary(term.op, args[0], args[1])
    return call(term.op, *args)


def exact_division(left: int | float, right: int | float) -> int | float:
    """The checker's `/`: an int when both operands are ints and it divides exactly, else a float."""
    if isinstance(left, int) and isinstance(right, int) and left % right == 0:
        return left // right
    return left / right


OPERATORS: dict[str, tuple[int, str, Callable[[Any, Any], Any]]] = {
    # op: (precedence, Python spelling, how the checker computes it on constants)
    "+": (1, "+", lambda a, b: a + b),
    "-": (1, "-", lambda a, b: a - b),
    "*": (2, "*", lambda a, b: a * b),
    "/": (2, "/", exact_division),  # a float result: Python's `/`
    "//": (2, "//", lambda a, b: a // b),  # also a `/` whose result was a whole int (see checker.symbolic)
    "%": (2, "%", lambda a, b: a % b),
    "**": (4, "**", lambda a, b: a**b),
}
"""Binary operators: precedence (higher binds tighter; `**` is right-associative), spelling, constant folding."""

FUNCTIONS: dict[str, tuple[str, Callable[..., Any]]] = {
    # op: (Python spelling of the call, how the checker computes it on constants)
    "int": ("int", int),
    "float": ("float", float),
    "neg": ("-", lambda a: -a),
    "min": ("min", min),
    "max": ("max", max),
    "abs": ("abs", abs),
    "floor": ("math.floor", math.floor),
    "ceil": ("math.ceil", math.ceil),
}
"""Unary and n-ary operations, written as Python calls (`neg` as a prefix `-`). A spelling with
a dot names a module the generated file must import (`math`): see `imports`."""


def binary(op: str, left: Term, right: Term) -> Term:
    """`left op right`, folded to a constant when neither side reads a parameter."""
    if not symbolic(left) and not symbolic(right):
        return OPERATORS[op][2](left, right)
    if op in ("+", "-") or (op == "*" and not (symbolic(left) and symbolic(right))):
        # Sums and multiples are kept as one linear combination (`64 + growth + growth` is
        # `2 * growth + 64`): the generated code reads as a person would write it.
        return _linear_term(*_combine(_linear(left), _linear(right), op))
    if op == "//" and _is(right, 1):
        return left
    return Expr(op, (left, right))


def _is(term: Term, number: int) -> bool:
    return type(term) is int and term == number


Linear = tuple[dict[Term, Any], Any]
"""A term as (atom -> coefficient, constant): atoms are parameters and the nodes that are not sums or multiples."""


def _linear(term: Term) -> Linear:
    if not isinstance(term, Expr):
        return {}, term
    if term.op in ("+", "-"):
        return _combine(_linear(term.args[0]), _linear(term.args[1]), term.op)
    if term.op == "*" and not symbolic(term.args[0]):
        return _combine(({}, term.args[0]), _linear(term.args[1]), "*")
    if term.op == "*" and not symbolic(term.args[1]):
        return _combine(_linear(term.args[0]), ({}, term.args[1]), "*")
    if term.op == "neg":
        return _combine(({}, -1), _linear(term.args[0]), "*")
    return {term: 1}, 0


def _combine(left: Linear, right: Linear, op: str) -> Linear:
    if op == "*":  # one side is a constant
        (atoms, constant), factor = (left, right[1]) if not right[0] else (right, left[1])
        return {atom: coefficient * factor for atom, coefficient in atoms.items()}, constant * factor
    sign = 1 if op == "+" else -1
    atoms = dict(left[0])
    for atom, coefficient in right[0].items():
        atoms[atom] = atoms.get(atom, 0) + sign * coefficient
    return {atom: c for atom, c in atoms.items() if c != 0}, left[1] + sign * right[1]


def _linear_term(atoms: dict[Term, Any], constant: Any) -> Term:
    """The linear combination as a tree: the atoms in order of appearance, then the constant."""
    result: Term = None
    for atom, coefficient in atoms.items():
        magnitude = abs(coefficient)
        part = atom if magnitude == 1 else Expr("*", (magnitude, atom))
        if result is None:
            result = part if coefficient > 0 else Expr("neg", (part,))
        else:
            result = Expr("+" if coefficient > 0 else "-", (result, part))
    if result is None:
        return constant
    if constant != 0 or type(constant) is not int:
        if constant != 0:
            result = Expr("+" if constant > 0 else "-", (result, abs(constant)))
    return result


def call(op: str, *args: Term) -> Term:
    """`op(*args)`, folded to a constant when no argument reads a parameter."""
    if not any(symbolic(a) for a in args):
        return FUNCTIONS[op][1](*args)
    return Expr(op, args)


ATOM = 9


LINEAR = frozenset({"param", "+", "-", "*", "neg", "int", "float"})
"""Operations a rendered expression keeps inline; any other node (`//`, `min`, ...) over a sum may
be named instead (`render`'s `name_of`), so that one long expression is a few short lines."""


def render(
    term: Term,
    names: Mapping[str, str],
    literal: Callable[[Any], str] = repr,
    name_of: Callable[[Expr, str], str] | None = None,
) -> str:
    """The term as Python source; parameters by their names in `names`, constants by `literal`.

    `name_of(node, text)`, when given, is asked for a variable holding each node outside LINEAR
    whose operands are not plain names or numbers (`(6 * growth + 64) // 2`), and the text
    uses that name. ValueError for an opaque term (check `expressible` first).
    """
    return _render(term, names, literal, name_of)[0]


def _render(
    term: Term, names: Mapping[str, str], literal: Callable[[Any], str], name_of: Callable[[Expr, str], str] | None
) -> tuple[str, int]:
    if isinstance(term, tuple):
        return "(" + ", ".join(_render(t, names, literal, name_of)[0] for t in term) + ")", ATOM
    if not isinstance(term, Expr):
        text = literal(term)
        return text, (ATOM if not text.startswith("-") else 3)
    if term.op == "param":
        return names[term.args[0]], ATOM
    if term.op == "opaque":
        raise ValueError("an opaque expression cannot be written")
    text, precedence = _render_node(term, names, literal, name_of)
    if name_of is not None and term.op not in LINEAR and any(isinstance(a, Expr) and a.op != "param" for a in term.args):
        return name_of(term, text), ATOM
    return text, precedence


def _render_node(
    term: Expr, names: Mapping[str, str], literal: Callable[[Any], str], name_of: Callable[[Expr, str], str] | None
) -> tuple[str, int]:
    if term.op in OPERATORS:
        precedence, spelling, _ = OPERATORS[term.op]
        left, left_precedence = _render(term.args[0], names, literal, name_of)
        right, right_precedence = _render(term.args[1], names, literal, name_of)
        # Left-associative operators need parentheses on the right at equal precedence (a - (b - c)), `**` on the left.
        if left_precedence < precedence or (left_precedence == precedence and term.op == "**"):
            left = f"({left})"
        if right_precedence < precedence or (right_precedence == precedence and term.op != "**"):
            right = f"({right})"
        return f"{left} {spelling} {right}", precedence
    spelling = FUNCTIONS[term.op][0]
    if term.op == "neg":
        operand, operand_precedence = _render(term.args[0], names, literal, name_of)
        return (f"-{operand}" if operand_precedence >= 3 else f"-({operand})"), 3
    return f"{spelling}({', '.join(_render(a, names, literal, name_of)[0] for a in term.args)})", ATOM


def evaluate(term: Term, values: Mapping[str, Any]) -> Any:
    """The term's value with the parameters in `values` (a tuple for a pair), computed as the checker does.

    ValueError for an opaque term or a parameter `values` lacks; an arithmetic failure (a division by
    zero) raises what the operation raises.
    """
    if isinstance(term, tuple):
        return tuple(evaluate(t, values) for t in term)
    if not isinstance(term, Expr):
        return term
    if term.op == "param":
        if term.args[0] not in values:
            raise ValueError(f"no value for parameter `{term.args[0]}`")
        return values[term.args[0]]
    if term.op == "opaque":
        raise ValueError("an opaque expression has no value of its own")
    operands = [evaluate(a, values) for a in term.args]
    if term.op in OPERATORS:
        return OPERATORS[term.op][2](*operands)
    return FUNCTIONS[term.op][1](*operands)


def imports(term: Term) -> set[str]:
    """The modules a rendered term needs (`math` for floor and ceil)."""
    found: set[str] = set()
    stack = [term]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple):
            stack.extend(current)
        elif isinstance(current, Expr):
            if current.op in FUNCTIONS and "." in FUNCTIONS[current.op][0]:
                found.add(FUNCTIONS[current.op][0].split(".")[0])
            stack.extend(current.args)
    return found


class LayerExprs:
    """How parameters reach a layer: what the checker records (`Layer.terms`, over the parameters in scope
    where it is written) and what `Network.terms` composes from that (over the network's parameters alone).

    `args`: the term of each argument a parameter reaches (by the kind's argument names, after
    `resolve`; the other arguments are constants). `channels`: the term of the input's channels
    (a flat input's features). `size`: the parameters the input's height and width may depend on
    (their sizes are not written as expressions: a layer that reads them cannot vary with these).
    `out` and `out_size`: the same for its output.
    """

    __slots__ = ("args", "channels", "size", "out", "out_size")

    def __init__(
        self,
        args: dict[str, Term],
        channels: Term,
        size: frozenset[str],
        out: Term = None,
        out_size: frozenset[str] = frozenset(),
    ) -> None:
        self.args = args
        self.channels = channels
        self.size = size
        self.out = out
        self.out_size = out_size

    @property
    def params(self) -> frozenset[str]:
        return params_of(tuple(self.args.values())) | params_of(self.channels) | self.size

    def __repr__(self) -> str:
        return f"LayerExprs({self.args!r}, {self.channels!r}, {set(self.size)!r})"
