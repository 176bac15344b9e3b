"""The header: splitting a program into its header lines, block definitions and body; network
parameters (defaults and overrides); `defaults` lines; the input shape."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

from .. import syntax
from ..errors import DiagnosticSink, Position
from ..layers import KINDS, lookup
from ..limits import MAX_NUMBER
from ..shapes import Shape
from .binding import Binder, Defaults, owner_name
from .budget import Budget
from .functions import BUILTINS
from .values import (
    POISON,
    Scope,
    Value,
    Word,
    evaluate,
    free_names,
    magnitude,
    names_text,
    parse_value,
    report_errors,
    short_repr,
    suggest,
)


@dataclass
class Header:
    """A program taken apart: the first of each header line, the blocks by name, the body."""

    network: syntax.NetworkDecl | None = None
    input: syntax.InputDecl | None = None
    output: syntax.OutputDecl | None = None
    defaults: syntax.DefaultsDecl | None = None
    blocks: dict[str, syntax.BlockDef] = field(default_factory=dict)
    functions: dict[str, syntax.FuncDef] = field(default_factory=dict)
    body: list[syntax.Element] = field(default_factory=list)


def layer_names() -> list[str]:
    """Every spelling of every layer kind, for did-you-mean hints."""
    return [spelling for kind in KINDS.values() for spelling in (kind.name, *kind.aliases)]


def split_program(program: syntax.Program, sink: DiagnosticSink) -> Header:
    """Header lines first, in the order network, input, output, defaults; then blocks and layers."""
    header = Header()
    header_rank = {syntax.NetworkDecl: 0, syntax.InputDecl: 1, syntax.OutputDecl: 2, syntax.DefaultsDecl: 3}
    header_words = {
        syntax.NetworkDecl: "network",
        syntax.InputDecl: "input",
        syntax.OutputDecl: "output",
        syntax.DefaultsDecl: "defaults",
    }
    last_rank = -1
    seen_body = False
    for item in program.items:
        if isinstance(item, (syntax.NetworkDecl, syntax.InputDecl, syntax.OutputDecl, syntax.DefaultsDecl)):
            word = header_words[type(item)]
            rank = header_rank[type(item)]
            if seen_body:
                sink.error(
                    f"`{word}` must come before the blocks and layers",
                    item.pos,
                    "header lines come first, in the order network, input, output, defaults",
                )
            elif rank == last_rank:
                sink.error(f"a second `{word}` line", item.pos, "give each header line once")
            elif rank < last_rank:
                sink.error(
                    f"`{word}` is out of order",
                    item.pos,
                    "header lines come first, in the order network, input, output, defaults",
                )
            last_rank = max(last_rank, rank)
            if isinstance(item, syntax.NetworkDecl):
                header.network = header.network or item
            elif isinstance(item, syntax.InputDecl):
                header.input = header.input or item
            elif isinstance(item, syntax.OutputDecl):
                header.output = header.output or item
            else:
                header.defaults = header.defaults or item
            continue
        seen_body = True
        if isinstance(item, syntax.BlockDef):
            define_block(item, header.blocks, sink)
        elif isinstance(item, syntax.FuncDef):
            define_function(item, header.functions, sink)
        else:
            header.body.append(item)
    return header


def define_block(block: syntax.BlockDef, blocks: dict[str, syntax.BlockDef], sink: DiagnosticSink) -> None:
    if lookup(block.name) is not None:
        sink.error(
            f"block `{block.name}` has the name of a built-in layer",
            block.pos,
            "choose another name; layer names are case-insensitive",
        )
        return
    if _defined_twice(f"block `{block.name}`", block.pos, blocks.get(block.name), sink):
        return
    _repeated_params(block.params, f"block `{block.name}`", sink)
    blocks[block.name] = block


def _defined_twice(what: str, pos: Position, earlier: syntax.BlockDef | syntax.FuncDef | None, sink: DiagnosticSink) -> bool:
    """Report a second definition of `what` (a block or a function), pointing at the first; True if it is one."""
    if earlier is None:
        return False
    first = earlier.pos
    sink.error(f"{what} is defined twice", pos, f"the first definition is at line {first.line}, column {first.column}")
    return True


def _repeated_params(params: tuple[syntax.Param, ...], owner: str, sink: DiagnosticSink) -> set[str]:
    """Report each parameter name given twice in one block's or function's parameter list; the names."""
    seen: set[str] = set()
    for param in params:
        if param.name in seen:
            sink.error(f"parameter `{param.name}` appears twice in {owner}", param.pos)
        seen.add(param.name)
    return seen


def define_function(function: syntax.FuncDef, functions: dict[str, syntax.FuncDef], sink: DiagnosticSink) -> None:
    if function.name in BUILTINS:
        sink.error(
            f"`{function.name}` is a built-in function", function.pos, f"choose another name; built in: {', '.join(BUILTINS)}"
        )
        return
    if _defined_twice(f"function `{function.name}`", function.pos, functions.get(function.name), sink):
        return
    param_names = _repeated_params(function.params, f"function `{function.name}`", sink)
    # A function's value depends only on its arguments and the network's parameters, so that a
    # block default that calls one with constant arguments is the same at every call.
    for expr in (function.body, *(p.default for p in function.params if p.default is not None)):
        for name in sorted(free_names(expr) or ()):
            if name.lower() == "in_channels" and name not in param_names:
                sink.error(
                    f"function `{function.name}` reads `in_channels`",
                    function.pos,
                    f"pass it as an argument: `def {function.name}(c, ...) = ...` called as `{function.name}(in_channels, ...)`",
                )
    functions[function.name] = function


def network_params(sink: DiagnosticSink, network: syntax.NetworkDecl | None, overrides: Mapping[str, Value]) -> dict[str, Value]:
    """Each declared parameter's value: the override, else its default (POISON after an error)."""
    declared = {p.name: p for p in network.params} if network else {}
    values: dict[str, Value] = {}
    for name in overrides:
        if name not in declared:
            where = network.pos if network else None
            options = names_text(list(declared)) or "none"
            hint = suggest(name, declared) or f"the network's parameters: {options}"
            sink.error(f"unknown network parameter `{name}`", where, hint)
    for param in declared.values():
        if param.name in overrides:
            values[param.name] = check_override(sink, param, overrides[param.name])
        elif param.default is not None:
            # `values` holds the parameters before this one; it is only read during the call.
            values[param.name] = report_errors(sink, Scope(values), partial(evaluate, param.default, Scope(values), None))
        else:
            sink.error(
                f"network parameter `{param.name}` has no default and was not set",
                param.pos,
                f"give it a default (`{param.name}=...`) or set it with --set {param.name}=VALUE",
            )
            values[param.name] = POISON
    return values


def written_params(
    network: syntax.NetworkDecl | None, overrides: Mapping[str, Value], values: Mapping[str, Value]
) -> dict[str, Value]:
    """The parameters' values as the source writes them (their defaults, `values` when nothing was set): what
    weights matching compares with to tell which layers a setting reshaped. A parameter without a default, or
    whose default fails, has no written value and is left out; the errors were reported where they mattered."""
    if not overrides:
        return {name: value for name, value in values.items() if value is not POISON}
    written = network_params(DiagnosticSink("", ""), network, {})
    return {name: value for name, value in written.items() if value is not POISON}


def written_input_shape(decl: syntax.InputDecl | None) -> Shape | None:
    """The `input` line's shape (None without a valid one): an --input override may differ from it."""
    if decl is None or len(decl.dims) not in (1, 2, 3, 4) or any(d < 1 for d in decl.dims):
        return None
    return Shape(decl.dims)


def check_override(sink: DiagnosticSink, param: syntax.Param, value: Value) -> Value:
    if isinstance(value, str):
        try:
            value = parse_value(value)
        except ValueError as err:
            sink.error(f"network parameter `{param.name}`: {err}", param.pos)
            return POISON
    ok = isinstance(value, (bool, int, float, Word)) or (
        isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    if not ok:
        shown = type(value).__name__ if isinstance(value, (int, float, tuple)) else short_repr(value)
        sink.error(f"network parameter `{param.name}` must be a number, a boolean or a word; got {shown}", param.pos)
        return POISON
    if isinstance(value, Word) and value.text.lower() != "same":
        # Reported once here; the poisoned value keeps every use of the parameter from repeating it.
        sink.error(
            f"network parameter `{param.name}`: `{value.text}` is not a number",
            param.pos,
            f"give `{param.name}` a number, true/false or `same`",
        )
        return POISON
    numbers = value if isinstance(value, tuple) else (value,)
    for number in numbers:
        if isinstance(number, float) and not math.isfinite(number):
            sink.error(
                f"network parameter `{param.name}` must be a finite number; got {number}",
                param.pos,
                "NaN and infinities make layers compute NaN (or fail when the generated file is imported)",
            )
            return POISON
        if isinstance(number, (int, float)) and not isinstance(number, bool) and abs(number) > MAX_NUMBER:
            sink.error(f"network parameter `{param.name}` is too large ({magnitude(number)}); the limit is 2^62", param.pos)
            return POISON
    return value


def collect_defaults(sink: DiagnosticSink, binder: Binder, decl: syntax.DefaultsDecl) -> Defaults:
    """The `defaults` line's arguments, by kind and the kind's own argument names."""
    defaults: Defaults = {}
    for call in decl.calls:
        kind = lookup(call.name)
        if kind is None:
            hint = suggest(call.name, layer_names()) or "defaults name built-in layers, such as Conv or Pool"
            sink.error(f"unknown layer `{call.name}` in defaults", call.pos, hint)
            continue
        entries = defaults.setdefault(kind.name, {})
        specs = kind.signature_of(call.name)
        bound = binder.bind_names(owner_name(kind, call.name), specs, kind.signature_text(call.name), call)
        if bound is None:
            continue
        for spec in specs:
            if spec.name not in bound:
                continue
            if spec.role == "input":
                sink.error(
                    f"`{spec.name}` cannot be a default: it is the input size, which each layer infers",
                    bound[spec.name].pos,
                    f"remove it from defaults; signature: {kind.signature_text(call.name)}",
                )
            elif spec.type == "reference":
                sink.error(
                    f"`{spec.name}` cannot be a default: it names a tensor, which belongs to one place in the network",
                    bound[spec.name].pos,
                    f"give `{spec.name}=@name` in the layer's call; signature: {kind.signature_text(call.name)}",
                )
            elif spec.role != "ignored":
                # Defaults apply to the kind whatever spelling uses them: stored by the kind's own argument names.
                entries[spec.canonical if spec.role == "arg" else spec.name] = bound[spec.name]

    return defaults


def input_shape(sink: DiagnosticSink, budget: Budget, decl: syntax.InputDecl | None, override: Shape | None) -> Shape | None:
    """The input: `override` (--input, the API's `input=`) or the `input` line; None after an error."""
    shape = declared_input_shape(sink, budget, decl, override)
    if shape is not None:
        channels_last_warning(sink, shape, None if override is not None or decl is None else decl.pos)
    return shape


def channels_last_warning(sink: DiagnosticSink, shape: Shape, pos: Position | None) -> None:
    """`input 224x224x3` checks as 224 channels of width 3: almost surely an HxWxC image."""
    if not shape.is_image:
        return
    first, height, last = shape
    if last in (1, 3, 4) and first >= 16 and height >= 4 and first > last:
        where = "input" if pos is not None else "--input"
        sink.warning(
            f"{where} {shape} looks channels-last; cnndsl takes CxHxW: did you mean {last}x{first}x{height}?",
            pos,
            f"write the channels first: `{last}x{first}x{height}` (channels x height x width)",
        )


def declared_input_shape(
    sink: DiagnosticSink, budget: Budget, decl: syntax.InputDecl | None, override: Shape | None
) -> Shape | None:
    if override is not None:
        return override if budget.check_input(override, None, given=True) else None
    if decl is None:
        sink.error(
            "no `input` line",
            Position(1, 1),
            "add `input CxHxW` (for example `input 3x224x224`) or `input N`, or pass --input",
        )
        return None
    if len(decl.dims) not in (1, 2, 3, 4):
        sink.error(
            f"`input` takes N, CxL, CxHxW or CxDxHxW; got {len(decl.dims)} dimensions",
            decl.pos,
            "a flat vector `input 784`, a 1-D signal `input 1x8000`, an image `input 3x224x224`, "
            "a 3-D volume or video `input 3x16x112x112`",
        )
        return None
    if any(d < 1 for d in decl.dims):
        sink.error("input sizes must be positive", decl.pos)
        return None
    shape = Shape(decl.dims)
    return shape if budget.check_input(shape, decl.pos, given=False) else None
