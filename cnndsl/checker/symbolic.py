"""What the checker records in the IR about the parameters: each number's expression.

Alongside the values, a scope maps each name to its *term* (`cnndsl.expr`): a network
parameter is `param(name)`; inside a block call, a block parameter is `param("block:c")`
and the block's input channels `param("in_channels:")` (the call records the terms they
stand for in its caller's scope, `Sequence.call_terms`); a constant is itself. `term_of`
builds an argument's term from its AST the way `values.evaluate` builds its value; layers
then carry the terms of their arguments and input channels (`Layer.terms`,
`cnndsl.expr.LayerExprs`), from which code generation writes a class per block, and which
`cnndsl.terms` composes into terms over the network's parameters alone, without checking
anything again.

Outside blocks, a network without parameters never comes here (its scopes there have no
symbols), so checking it costs nothing more. Terms are only built after the value was
evaluated without error, so folding constants here cannot fail where evaluation did not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import syntax
from ..expr import Expr, Term, binary, call, opaque, params_of
from ..shapes import Shape
from ..terms import NOT_SIZES
from .functions import UserFunction, operands
from .values import Scope, evaluate, free_names

SYMBOLIC_FUNCTIONS = frozenset({"min", "max", "abs", "floor", "ceil"})
"""Built-in functions with the same meaning in Python (`cnndsl.expr.FUNCTIONS` renders them);
calls of the others (and of a file's `def` functions) are opaque."""


def term_of(expr: syntax.Expr, scope: Scope, shape: Shape | None, channels: Term) -> Term:
    """The term of `expr` (already evaluated without error): an Expr when a parameter reaches it.

    `channels` is the term of the layer's input channels (what `in_channels` reads).
    """
    if isinstance(expr, syntax.Number):
        return expr.value
    if isinstance(expr, syntax.Name):
        if expr.id in scope.symbols:
            return scope.symbols[expr.id]
        if expr.id not in scope.values and expr.id.lower() == "in_channels":
            return channels
        return evaluate(expr, scope, shape)
    if isinstance(expr, syntax.Neg):
        return call("neg", term_of(expr.operand, scope, shape, channels))
    if isinstance(expr, syntax.Pair):
        return tuple(term_of(item, scope, shape, channels) for item in expr.items)
    if isinstance(expr, syntax.BinOp):
        left = term_of(expr.left, scope, shape, channels)
        right = term_of(expr.right, scope, shape, channels)
        op = expr.op
        if op == "/" and (params_of(left) or params_of(right)) and isinstance(evaluate(expr, scope, shape), int):
            op = "//"  # the checker's `/` of ints that divide exactly is an int: floor division keeps it one
        return binary(op, left, right)
    if isinstance(expr, syntax.FuncCall) and expr.name in SYMBOLIC_FUNCTIONS and all(a.name is None for a in expr.args):
        return call(expr.name, *(term_of(a.value, scope, shape, channels) for a in expr.args))
    return _opaque_or_constant(expr, scope, shape, channels)


def _opaque_or_constant(expr: syntax.Expr, scope: Scope, shape: Shape | None, channels: Term) -> Term:
    """A node with no expression here (a conditional, a comparison, a `def` function's call):
    its value when no parameter reaches it, else opaque over the parameters that may."""
    names = free_names(expr)
    reached: set[str] = set()
    if names is None:  # too deep to look at: every parameter in sight
        reached.update(*(params_of(t) for t in scope.symbols.values()), params_of(channels))
    else:
        for name in names:
            if name in scope.symbols:
                reached |= params_of(scope.symbols[name])
            elif name.lower() == "in_channels" and name not in scope.values:
                reached |= params_of(channels)
        stack = [expr]
        while stack:  # a `def` function reads the network's parameters its body names
            node = stack.pop()
            function = scope.values.get(node.name + "()") if isinstance(node, syntax.FuncCall) else None
            if isinstance(function, UserFunction):
                read = function.reads
                if read is None:  # too deep to look at: every parameter in sight
                    reached.update(*(params_of(t) for t in scope.symbols.values()))
                    break
                reached |= read
            stack.extend(operands(node))
    return opaque(frozenset(reached), evaluate(expr, scope, shape)) if reached else evaluate(expr, scope, shape)


def as_coerced(term: Term, raw: object, value: object) -> Term:
    """The term of an argument after `binding.coerce` turned `raw` into `value`: a whole float
    made an int is `int(...)` in Python too (PyTorch refuses 64.0 channels)."""
    if not params_of(term):
        return value
    if isinstance(value, tuple) and isinstance(term, tuple) and len(term) == len(value):
        raws = raw if isinstance(raw, tuple) else (raw,) * len(value)
        return tuple(as_coerced(t, r, v) for t, r, v in zip(term, raws, value, strict=True))
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(raw, float):
        return Expr("int", (term,))
    if isinstance(value, (bool, str)) or isinstance(term, tuple) != isinstance(value, tuple):
        return opaque(params_of(term), value)
    return term


def resolved_terms(before: Mapping[str, Any], after: Mapping[str, Any], terms: dict[str, Term]) -> dict[str, Term]:
    """The terms of a kind's arguments after `resolve` turned `before` into `after`.

    An argument `resolve` kept keeps its term; one it made a pair (3 -> (3, 3)) is the pair of its
    term; one it computed otherwise (`pad=same` from the kernel) is opaque over the parameters that
    reach the layer's other arguments (those in NOT_SIZES aside).
    """
    resolved: dict[str, Term] = {}
    reaching = frozenset().union(*(params_of(t) for name, t in terms.items() if name not in NOT_SIZES))
    for name, value in after.items():
        old = before.get(name, _MISSING)
        term = terms.get(name, old)
        if old is not _MISSING and type(old) is type(value) and old == value:
            result = term
        elif isinstance(value, tuple) and not isinstance(old, tuple) and all(v == old for v in value):
            result = (term,) * len(value)  # one number for every spatial axis
        else:
            result = opaque(reaching | params_of(term), value) if reaching or params_of(term) else value
        if params_of(result):
            resolved[name] = result
    return resolved


_MISSING = object()
