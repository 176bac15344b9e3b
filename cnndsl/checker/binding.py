"""Binding: a call's arguments to a signature (positional, then keywords), the keyword index,
`defaults` lines, and coercion of each value to its argument's type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .. import syntax
from ..errors import DiagnosticSink, Position
from ..expr import params_of
from ..layers import LayerKind
from ..layers.base import REQUIRED, ArgSpec, SameAs, canonical_spelling, format_value
from ..shapes import Shape
from .symbolic import as_coerced, term_of
from .values import (
    POISON,
    EvalError,
    Scope,
    Value,
    Word,
    as_number,
    evaluate,
    expr_text,
    ordinal,
    plain,
    report_errors,
    suggest,
)


@dataclass
class BoundArgs:
    """A layer call's arguments, by the kind's own names, before `resolve`."""

    values: dict[str, Value]
    positions: dict[str, Position]
    """Where each argument was given (in the call or in `defaults`), to point errors at it."""
    inputs: list[tuple[ArgSpec, Value, Position]]
    """Input sizes a PyTorch spelling repeated (`Conv2d`'s in_channels), to check after inference."""
    terms: dict[str, Any] = field(default_factory=dict)
    """The terms (checker/symbolic.py) of the arguments a network parameter reaches; the others are constants."""


Defaults = dict[str, dict[str, syntax.Arg]]
"""`defaults` lines: kind name to (the kind's own argument name to the argument as written)."""


def owner_name(kind: LayerKind, spelling: str) -> str:
    """The name messages use: the spelling when it has a signature of its own (`Conv2d`), else the kind's."""
    return canonical_spelling(spelling) if kind.signature_of(spelling) is not kind.signature else kind.name


class Binder:
    """Binds calls to signatures, reporting to `sink`; keeps one keyword index per signature."""

    def __init__(self, sink: DiagnosticSink) -> None:
        self.sink = sink
        self._keyword_index: dict[int, tuple[tuple[ArgSpec, ...], dict[str, str]]] = {}

    def layer_args(
        self,
        kind: LayerKind,
        call: syntax.Call,
        scope: Scope,
        shape: Shape | None,
        defaults: Defaults,
        network_values: Mapping[str, Value],
        network_symbols: Mapping[str, Any] | None = None,
        channels: Any = None,
    ) -> BoundArgs | None:
        """The kind's arguments from a call in the spelling it uses (PyTorch's spellings map theirs
        onto the kind's), then `defaults`, then the signature's defaults.

        With `network_symbols` (the network has parameters), each argument's term is recorded
        too; `channels` is the term of the input's channels."""
        specs = kind.signature_of(call.name)
        owner = owner_name(kind, call.name)
        signature = kind.signature_text(call.name)
        bound = self.bind_names(owner, specs, signature, call)
        if bound is None:
            return None
        kind_defaults = defaults.get(kind.name, {})
        network_scope = Scope(network_values, scope.calls, network_symbols or {})
        result = BoundArgs({}, {}, [])
        ok = True
        symbolic = network_symbols is not None

        def evaluate_arg(spec: ArgSpec, source: syntax.Arg, arg_scope: Scope) -> Value:
            if spec.type == "reference":
                return reference_arg(owner, spec, source.value)  # the checker resolves it in the layer's body
            raw = evaluate(source.value, arg_scope, shape)
            if isinstance(raw, Word) and not (spec.type == "pad" and raw.text.lower() == "same") and spec.type != "choice":
                as_number(raw, source.value, arg_scope)  # raises "unknown name" with a suggestion
            value = coerce(owner, spec, raw, source.value.pos)
            if symbolic and spec.role == "arg":
                term = as_coerced(term_of(source.value, arg_scope, shape, channels), raw, value)
                if params_of(term):
                    result.terms[spec.canonical] = term
                else:
                    result.terms.pop(spec.canonical, None)
            return value

        targeted = {spec.canonical for spec in specs if spec.role == "arg"}
        sources: list[tuple[ArgSpec, syntax.Arg, Scope]] = []
        for spec in specs:
            default_key = spec.canonical if spec.role == "arg" else spec.name
            if spec.name in bound:
                sources.append((spec, bound[spec.name], scope))
            elif spec.role in ("arg", "fixed") and default_key in kind_defaults:
                sources.append((spec, kind_defaults[default_key], network_scope))
        # `defaults` given through another spelling, for arguments this spelling does not name.
        for spec in kind.signature:
            if spec.role == "arg" and spec.name not in targeted and spec.name in kind_defaults:
                sources.append((spec, kind_defaults[spec.name], network_scope))
        for spec, source, arg_scope in sources:
            value = report_errors(
                self.sink,
                scope,
                partial(evaluate_arg, spec, source, arg_scope),
                f"signature: {signature}",
            )
            if value is POISON:
                ok = False
                continue
            if spec.role == "arg":
                result.values[spec.canonical] = value
                result.positions[spec.canonical] = source.pos
            elif spec.role == "input":
                result.inputs.append((spec, value, source.pos))
            elif spec.role == "fixed" and value not in (spec.default, (spec.default, spec.default)):
                self.sink.error(
                    f"{owner}: cnndsl supports only {spec.name}={format_value(spec.default)}; got {format_value(value)}",
                    source.pos,
                    f"remove `{spec.name}`; signature: {signature}",
                    scope.notes(),
                )
                ok = False
        if not ok:
            return None
        for index, spec in enumerate(specs):
            if spec.default is REQUIRED and spec.canonical not in result.values:
                self._missing(owner, spec, index, call, signature, scope)
                ok = False
        for index, spec in enumerate(kind.signature):
            if spec.role != "arg" or spec.name in result.values or not ok:
                continue
            if isinstance(spec.default, SameAs):
                result.values[spec.name] = result.values.get(spec.default.name)
                if spec.default.name in result.terms:
                    result.terms[spec.name] = result.terms[spec.default.name]
            elif spec.default is REQUIRED:
                self._missing(owner, spec, index, call, signature, scope)
                ok = False
            else:
                result.values[spec.name] = spec.default
        return result if ok else None

    def _missing(self, owner: str, spec: ArgSpec, index: int, call: syntax.Call, signature: str, scope: Scope) -> None:
        """A required argument the call (and `defaults`) left out, with the signature to fill it from."""
        self.sink.error(
            f"{owner} needs `{spec.name}` (its {ordinal(index + 1)} argument)", call.pos, f"signature: {signature}", scope.notes()
        )

    def check_declared_inputs(
        self, kind: LayerKind, call: syntax.Call, inputs: list[tuple[ArgSpec, Value, Position]], shape: Shape, scope: Scope
    ) -> bool:
        """PyTorch's spellings repeat the input size (`Conv2d(3, 16, 3)`): it must be the inferred one."""
        ok = True
        for spec, value, pos in inputs:
            if value == shape.channels:
                continue
            spelling = owner_name(kind, call.name)
            noun = "channels" if shape.is_image else "features"
            self.sink.error(
                f"{spelling}'s {spec.name} is {value} but its input has {shape.channels} {noun}",
                pos,
                f"the input here is {shape.describe()}: write {shape.channels}, or leave `{spec.name}` out and give the "
                f"other arguments by keyword (cnndsl infers it); signature: {kind.signature_text(call.name)}",
                scope.notes(),
            )
            ok = False
        return ok

    def bind_names(
        self, owner: str, specs: tuple[ArgSpec, ...], signature: str, call: syntax.Call, case_sensitive: bool = False
    ) -> dict[str, syntax.Arg] | None:
        """Match a call's arguments to parameter names: positional first, then keywords."""
        by_key = self.keyword_names(specs, case_sensitive)
        bound: dict[str, syntax.Arg] = {}
        ok = True
        seen_keyword = False
        for index, arg in enumerate(call.args):
            if arg.name is None:
                if seen_keyword:
                    self.sink.error("a positional argument after a keyword argument", arg.pos, f"signature: {signature}")
                    ok = False
                    continue
                if index >= len(specs):
                    count = len(specs)
                    self.sink.error(
                        f"{owner} takes {'no' if count == 0 else f'at most {count}'} argument{'s' if count != 1 else ''}; "
                        f"got {len(call.args)}",
                        arg.pos,
                        f"signature: {signature}",
                    )
                    ok = False
                    break
                bound[specs[index].name] = arg
                continue
            seen_keyword = True
            key = arg.name if case_sensitive else arg.name.lower()
            match = by_key.get(key)
            if match is None:
                hint = suggest(arg.name, [s.name for s in specs])
                hint = f"{hint} signature: {signature}" if hint else f"signature: {signature}"
                self.sink.error(f"{owner} has no argument `{arg.name}`", arg.pos, hint)
                ok = False
                continue
            if match in bound:
                self.sink.error(f"`{match}` is given twice", arg.pos, f"signature: {signature}")
                ok = False
                continue
            bound[match] = arg
        return bound if ok else None

    def keyword_names(self, specs: tuple[ArgSpec, ...], case_sensitive: bool) -> dict[str, str]:
        """Keyword (lower-cased unless case-sensitive) to parameter name, made once per signature."""
        cached = self._keyword_index.get(id(specs))
        if cached is None or cached[0] is not specs:
            # A spec's own name and its other names (`padding` for `pad`); earlier specs and own names win.
            index = {
                (keyword if case_sensitive else keyword.lower()): spec.name
                for spec in reversed(specs)
                for keyword in (*spec.keywords, spec.name)
            }
            cached = self._keyword_index[id(specs)] = (specs, index)
        return cached[1]


def reference_arg(owner: str, spec: ArgSpec, expr: syntax.Expr) -> syntax.Reference:
    """An argument that names one tensor: `@name` as written (not evaluated: a tensor is no value)."""
    if isinstance(expr, syntax.Reference) and not expr.every:
        return expr
    if isinstance(expr, syntax.Reference):
        raise EvalError(
            f"{owner}: `{spec.name}` takes one tensor; `@{expr.label}*` is every iteration of `{expr.label}`",
            expr.pos,
            f"write `{spec.name}=@{expr.label}` for its last iteration",
        )
    raise EvalError(
        f"{owner}: `{spec.name}` must be a reference to an earlier tensor; got `{expr_text(expr)}`",
        expr.pos,
        f"write `{spec.name}=@name`, `name` the label of an earlier element, or `{spec.name}=@input`",
    )


def coerce(owner: str, spec: ArgSpec, value: Value, pos: Position) -> Value:
    """Check a value against its argument type: expected vs received."""

    def whole(v: Value) -> int | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return None

    def fail(expected: str) -> EvalError:
        return EvalError(f"{owner}: `{spec.name}` must be {expected}; got {format_value(plain(value))}", pos)

    minimum = spec.minimum
    bound_word = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else "an integer"
    if spec.type == "int":
        n = whole(value)
        if n is None or (minimum is not None and n < minimum):
            raise fail(bound_word)
        return n
    if spec.type in ("pair", "pad"):
        if spec.type == "pad" and isinstance(value, Word) and value.text.lower() == "same":
            return "same"
        items = value if isinstance(value, tuple) else (value,)
        ints = [whole(v) for v in items]
        if any(n is None or (minimum is not None and n < minimum) for n in ints):
            raise fail(
                f"{bound_word}, a tuple of them (one per spatial axis: (h, w), (d, h, w)) or `same`"
                if spec.type == "pad"
                else f"{bound_word} or a tuple of them (one per spatial axis: (h, w), (d, h, w))"
            )
        return tuple(ints) if isinstance(value, tuple) else ints[0]
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if spec.type == "choice":
        # A bare word; a number or an unknown word gets the list to choose from.
        word = value.text.lower() if isinstance(value, Word) else None
        if word not in spec.choices:
            raise fail(f"one of {', '.join(spec.choices)}")
        return word
    if spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if spec.type == "floats":  # a number, or one per spatial axis (Upsample's scale, as nn.Upsample's scale_factor)
        numbers = value if isinstance(value, tuple) else (value,)
        if not numbers or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
            raise fail("a number or a tuple of them (one per spatial axis: (h, w), (d, h, w))")
        return tuple(numbers) if isinstance(value, tuple) else float(value)  # a tuple as written, for messages
    raise AssertionError(spec.type)
