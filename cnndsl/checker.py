"""AST to checked IR: expands blocks and repetition, evaluates arguments, infers shapes.

Every problem is reported to a DiagnosticSink with its position; checking goes on past
errors where it can (an unknown shape poisons what follows, but names and arguments
are still checked). Resource limits are enforced before anything large is built.
"""

from __future__ import annotations

import gc
import math
import sys
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import ast
from .errors import DiagnosticSink, Position, Severity, TooManyErrors
from .ir import Layer, Node, Parallel, Sequence
from .layers import KINDS, LayerError, LayerKind, MergeKind, lookup
from .layers.base import REQUIRED, ArgSpec, SameAs, canonical_spelling, check_input_rank, format_value
from .limits import MAX_BLOCK_BINDINGS, MAX_BLOCK_DEPTH, MAX_ELEMENTS, MAX_ERRORS, MAX_LAYERS, MAX_NESTING, MAX_NUMBER
from .names import module_names
from .shapes import Pair, Shape, Window

Value = Any  # int | float | bool | Word | tuple[int, int]
MERGES = {name.lower(): kind for name, kind in KINDS.items() if isinstance(kind, MergeKind)}
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


class Abort(Exception):
    """A resource limit was hit: the error is in the sink; stop checking at once."""


class Poisoned(Exception):
    """A value depends on a shape that an earlier error left unknown: skip silently."""


class EvalError(Exception):
    def __init__(self, message: str, pos: Position, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.pos, self.hint = message, pos, hint


@dataclass(frozen=True)
class Scope:
    """Names visible to an expression and the chain of block calls that led here."""

    values: Mapping[str, Value]
    calls: tuple[tuple[str, str, Position], ...] = ()
    """(block name, call as written, call position), outermost first."""

    def notes(self) -> list[str]:
        return [
            f"in block `{name}`, reached from `{text}` at line {pos.line}, column {pos.column}"
            for name, text, pos in reversed(self.calls)
        ]


@dataclass
class State:
    """What flows between elements: the shape (None once unknown) and the receptive field."""

    shape: Shape | None
    field: Pair = (1, 1)
    effective_stride: Pair = (1, 1)


@dataclass
class BoundArgs:
    """A layer call's arguments, by the kind's own names, before `resolve`."""

    values: dict[str, Value]
    positions: dict[str, Position]
    """Where each argument was given (in the call or in `defaults`), to point errors at it."""
    inputs: list[tuple[ArgSpec, Value, Position]]
    """Input sizes a PyTorch spelling repeated (`Conv2d`'s in_channels), to check after inference."""


@dataclass
class BlockInfo:
    """A block's signature, made once; and its defaults that are the same at every call, once evaluated."""

    signature: str
    specs: tuple[ArgSpec, ...]
    by_name: dict[str, ast.Param]
    required: list[ast.Param]
    defaulted: int
    """How many parameters have a default."""
    constant_defaults: dict[str, Value]
    """Defaults that read no other parameter of the block and not `in_channels`."""


@dataclass
class CheckResult:
    name: str
    input_shape: Shape
    root: Sequence
    params: dict[str, Value]


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


class Checker:
    def __init__(
        self,
        program: ast.Program,
        sink: DiagnosticSink,
        input_override: Shape | None = None,
        params: Mapping[str, Value] | None = None,
        strict: bool = False,
        default_name: str = "Network",
    ) -> None:
        self.program = program
        self.sink = sink
        self.input_override = input_override
        self.param_overrides = dict(params or {})
        self.strict = strict
        self.default_name = default_name
        self.blocks: dict[str, ast.BlockDef] = {}
        self.defaults: dict[str, dict[str, ast.Arg]] = {}
        self.leaf_count = 0
        self.node_count = 0
        self.binding_count = 0
        self._min_size_of_block: dict[str, tuple[int, int]] = {}
        self._block_infos: dict[str, BlockInfo] = {}
        self._min_sizes: dict[int, tuple[ast.Element, tuple[int, int]]] = {}
        self._keyword_index: dict[int, tuple[tuple[ArgSpec, ...], dict[str, str]]] = {}
        self._last_pos = Position(1, 1)
        self._network_values: dict[str, Value] = {}

    # -- entry point -------------------------------------------------------------------

    def run(self) -> CheckResult | None:
        old_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old_limit, 50_000))
        # The IR is a large acyclic tree: cyclic GC passes over it only cost time
        # (they made checking 100,000 layers quadratic).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        self.sink.max_errors = MAX_ERRORS
        try:
            return self._run()
        except (Abort, TooManyErrors):
            return None
        finally:
            self.sink.max_errors = None
            sys.setrecursionlimit(old_limit)
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> CheckResult | None:
        network: ast.NetworkDecl | None = None
        input_decl: ast.InputDecl | None = None
        defaults: ast.DefaultsDecl | None = None
        body: list[ast.Element] = []
        header_rank = {ast.NetworkDecl: 0, ast.InputDecl: 1, ast.DefaultsDecl: 2}
        header_words = {ast.NetworkDecl: "network", ast.InputDecl: "input", ast.DefaultsDecl: "defaults"}
        last_rank = -1
        seen_body = False
        for item in self.program.items:
            if isinstance(item, (ast.NetworkDecl, ast.InputDecl, ast.DefaultsDecl)):
                word = header_words[type(item)]
                rank = header_rank[type(item)]
                if seen_body:
                    self.sink.error(
                        f"`{word}` must come before the blocks and layers",
                        item.pos,
                        "header lines come first, in the order network, input, defaults",
                    )
                elif rank == last_rank:
                    self.sink.error(f"a second `{word}` line", item.pos, "give each header line once")
                elif rank < last_rank:
                    self.sink.error(
                        f"`{word}` is out of order", item.pos, "header lines come first, in the order network, input, defaults"
                    )
                last_rank = max(last_rank, rank)
                if isinstance(item, ast.NetworkDecl):
                    network = network or item
                elif isinstance(item, ast.InputDecl):
                    input_decl = input_decl or item
                else:
                    defaults = defaults or item
                continue
            seen_body = True
            if isinstance(item, ast.BlockDef):
                self._define_block(item)
            else:
                body.append(item)

        params = self._network_params(network)
        self._network_values = params
        if defaults is not None:
            self._collect_defaults(defaults)
        shape = self._input_shape(input_decl)
        if not body:
            self.sink.error(
                "the network has no layers",
                input_decl.pos if input_decl else Position(1, 1),
                "add layers after the header, for example `Conv(32, 3), ReLU`",
            )
            return None
        scope = Scope(params)
        state = State(shape)
        children = self._sequence(body, scope, state, "")
        if shape is None or state.shape is None or self.sink.has_errors:
            return None
        name = network.name if network else self.default_name
        root = self._make_sequence(
            "", "", None, body[0].pos if body else Position(1, 1), shape, state.shape, children, "network", name
        )
        self._logits_warning(root)
        return CheckResult(name, shape, root, dict(params))

    # -- header ------------------------------------------------------------------------

    def _define_block(self, block: ast.BlockDef) -> None:
        if lookup(block.name) is not None:
            self.sink.error(
                f"block `{block.name}` has the name of a built-in layer",
                block.pos,
                "choose another name; layer names are case-insensitive",
            )
            return
        if block.name in self.blocks:
            first = self.blocks[block.name].pos
            self.sink.error(
                f"block `{block.name}` is defined twice",
                block.pos,
                f"the first definition is at line {first.line}, column {first.column}",
            )
            return
        seen: set[str] = set()
        for param in block.params:
            if param.name in seen:
                self.sink.error(f"parameter `{param.name}` appears twice in block `{block.name}`", param.pos)
            seen.add(param.name)
        self.blocks[block.name] = block

    def _network_params(self, network: ast.NetworkDecl | None) -> dict[str, Value]:
        declared = {p.name: p for p in network.params} if network else {}
        values: dict[str, Value] = {}
        for name in self.param_overrides:
            if name not in declared:
                where = network.pos if network else None
                options = names_text(list(declared)) or "none"
                hint = suggest(name, declared) or f"the network's parameters: {options}"
                self.sink.error(f"unknown network parameter `{name}`", where, hint)
        for param in declared.values():
            if param.name in self.param_overrides:
                values[param.name] = self._check_override(param, self.param_overrides[param.name])
            elif param.default is not None:
                try:
                    # `values` holds the parameters before this one; it is only read during the call.
                    values[param.name] = self._eval(param.default, Scope(values), None)
                except EvalError as err:
                    self.sink.error(err.message, err.pos, err.hint)
                    values[param.name] = POISON
                except Poisoned:
                    values[param.name] = POISON
            else:
                self.sink.error(
                    f"network parameter `{param.name}` has no default and was not set",
                    param.pos,
                    f"give it a default (`{param.name}=...`) or set it with --set {param.name}=VALUE",
                )
                values[param.name] = POISON
        return values

    def _check_override(self, param: ast.Param, value: Value) -> Value:
        if isinstance(value, str):
            try:
                value = parse_value(value)
            except ValueError as err:
                self.sink.error(f"network parameter `{param.name}`: {err}", param.pos)
                return POISON
        ok = isinstance(value, (bool, int, float, Word)) or (
            isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not ok:
            shown = type(value).__name__ if isinstance(value, (int, float, tuple)) else _short_repr(value)
            self.sink.error(f"network parameter `{param.name}` must be a number, a boolean or a word; got {shown}", param.pos)
            return POISON
        if isinstance(value, Word) and value.text.lower() != "same":
            # Reported once here; the poisoned value keeps every use of the parameter from repeating it.
            self.sink.error(
                f"network parameter `{param.name}`: `{value.text}` is not a number",
                param.pos,
                f"give `{param.name}` a number, true/false or `same`",
            )
            return POISON
        numbers = value if isinstance(value, tuple) else (value,)
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                self.sink.error(
                    f"network parameter `{param.name}` must be a finite number; got {number}",
                    param.pos,
                    "NaN and infinities make layers compute NaN (or fail when the generated file is imported)",
                )
                return POISON
            if isinstance(number, (int, float)) and not isinstance(number, bool) and abs(number) > MAX_NUMBER:
                self.sink.error(
                    f"network parameter `{param.name}` is too large ({_magnitude(number)}); the limit is 2^62", param.pos
                )
                return POISON
        return value

    def _collect_defaults(self, decl: ast.DefaultsDecl) -> None:
        for call in decl.calls:
            kind = lookup(call.name)
            if kind is None:
                hint = suggest(call.name, self._layer_names()) or "defaults name built-in layers, such as Conv or Pool"
                self.sink.error(f"unknown layer `{call.name}` in defaults", call.pos, hint)
                continue
            entries = self.defaults.setdefault(kind.name, {})
            specs = kind.signature_of(call.name)
            bound = self._bind_names(_owner(kind, call.name), specs, kind.signature_text(call.name), call)
            if bound is None:
                continue
            for spec in specs:
                if spec.name not in bound:
                    continue
                if spec.role == "input":
                    self.sink.error(
                        f"`{spec.name}` cannot be a default: it is the input size, which each layer infers",
                        bound[spec.name].pos,
                        f"remove it from defaults; signature: {kind.signature_text(call.name)}",
                    )
                elif spec.role != "ignored":
                    # Defaults apply to the kind whatever spelling uses them: stored by the kind's own argument names.
                    entries[spec.canonical if spec.role == "arg" else spec.name] = bound[spec.name]

    def _input_shape(self, decl: ast.InputDecl | None) -> Shape | None:
        shape = self._declared_input_shape(decl)
        if shape is not None:
            self._channels_last_warning(shape, None if self.input_override is not None or decl is None else decl.pos)
        return shape

    def _channels_last_warning(self, shape: Shape, pos: Position | None) -> None:
        """`input 224x224x3` checks as 224 channels of width 3: almost surely an HxWxC image."""
        if not shape.is_image:
            return
        first, height, last = shape
        if last in (1, 3, 4) and first >= 16 and height >= 4 and first > last:
            where = "input" if pos is not None else "--input"
            self.sink.warning(
                f"{where} {shape} looks channels-last; cnndsl takes CxHxW: did you mean {last}x{first}x{height}?",
                pos,
                f"write the channels first: `{last}x{first}x{height}` (channels x height x width)",
            )

    def _logits_warning(self, root: Sequence) -> None:
        """A network that ends in Softmax or Sigmoid trains badly with cross-entropy, which expects logits."""
        leaves = list(root.leaves())
        last = leaves[-1] if leaves else None
        if last is not None and last.kind.outputs_probabilities:
            self.sink.warning(
                f"the network ends in {last.kind.name}: cross-entropy expects logits; remove the final {last.kind.name} for training",
                last.pos,
                f"apply {last.kind.name.lower()} to the outputs when you need probabilities (`cnndsl run` prints them for logits)",
            )

    def _declared_input_shape(self, decl: ast.InputDecl | None) -> Shape | None:
        if self.input_override is not None:
            if self.input_override.numel > MAX_ELEMENTS:
                self.sink.error(f"the input has more than 2^40 elements ({_magnitude(self.input_override.numel)})", None)
                return None
            return self.input_override
        if decl is None:
            self.sink.error(
                "no `input` line",
                Position(1, 1),
                "add `input CxHxW` (for example `input 3x224x224`) or `input N`, or pass --input",
            )
            return None
        if len(decl.dims) not in (1, 3):
            self.sink.error(
                f"`input` takes CxHxW or N; got {len(decl.dims)} dimensions",
                decl.pos,
                "for a grey image write 1xHxW, for example `input 1x28x28`",
            )
            return None
        if any(d < 1 for d in decl.dims):
            self.sink.error("input sizes must be positive", decl.pos)
            return None
        shape = Shape(decl.dims)
        if shape.numel > MAX_ELEMENTS:
            self.sink.error(f"the input has {shape.numel:,} elements; the limit is 2^40", decl.pos)
            return None
        return shape

    # -- structure ---------------------------------------------------------------------

    def _sequence(self, items: Iterable[ast.Element], scope: Scope, state: State, path: str) -> list[Node]:
        self._count_node(scope, None)
        items = list(items)
        nodes: list[Node] = []
        labels: dict[str, Position] = {}
        names = module_names([item.label if isinstance(item, ast.Labeled) else str(i) for i, item in enumerate(items)])
        for item, name in zip(items, names, strict=True):
            if isinstance(item, ast.Labeled):
                if item.label in labels:
                    first = labels[item.label]
                    self.sink.error(
                        f"label `{item.label}` is used twice in the same sequence",
                        item.pos,
                        f"the first is at line {first.line}, column {first.column}; labels name modules, so they must differ",
                    )
                labels[item.label] = item.pos
            self._last_pos = item.pos
            node = self._element(item, scope, state, name, _join(path, name), 0)
            if node is not None:
                nodes.append(node)
        return nodes

    def _element(self, el: ast.Element, scope: Scope, state: State, name: str, path: str, depth: int) -> Node | None:
        if depth > MAX_NESTING * 4:
            self.sink.error(f"elements nested deeper than {MAX_NESTING * 4} levels", el.pos, "flatten the structure")
            raise Abort
        label = None
        while isinstance(el, ast.Labeled):
            if label is not None:
                self.sink.error("an element has two labels", el.pos, "give each element one label")
            label = el.label
            el = el.body
        if isinstance(el, ast.Call):
            return self._call(el, scope, state, name, path, label)
        if isinstance(el, ast.Group):
            start = state.shape
            children = self._sequence(el.items, scope, state, path)
            return self._finish_sequence(name, path, label, el.pos, start, state, children, "group", "[...]")
        if isinstance(el, ast.Merge):
            return self._merge(el, scope, state, name, path, label, depth)
        if isinstance(el, ast.Repeat):
            return self._repeat(el, scope, state, name, path, label, depth)
        raise AssertionError(f"unknown element {el!r}")

    def _finish_sequence(
        self,
        name: str,
        path: str,
        label: str | None,
        pos: Position,
        start: Shape | None,
        state: State,
        children: list[Node],
        role: str,
        title: str,
        block: str | None = None,
        block_args: dict[str, Value] | None = None,
    ) -> Sequence | None:
        if start is None or state.shape is None:
            return None
        return self._make_sequence(name, path, label, pos, start, state.shape, children, role, title, block, block_args)

    @staticmethod
    def _make_sequence(
        name: str,
        path: str,
        label: str | None,
        pos: Position,
        start: Shape,
        out: Shape,
        children: list[Node],
        role: Any,
        title: str,
        block: str | None = None,
        block_args: dict[str, Value] | None = None,
    ) -> Sequence:
        return Sequence(
            name,
            path,
            label,
            pos,
            start,
            out,
            params=sum(c.params for c in children),
            buffers=sum(c.buffers for c in children),
            macs=sum(c.macs for c in children),
            role=role,
            children=children,
            title=title,
            block=block,
            block_args=block_args,
        )

    def _merge(
        self, el: ast.Merge, scope: Scope, state: State, name: str, path: str, label: str | None, depth: int
    ) -> Node | None:
        kind = MERGES.get(el.op.lower())
        if kind is None:
            hint = suggest(el.op, [k.name for k in MERGES.values()]) or "`name[ a | b ]` is a merge: Add, Concat or Mul"
            self.sink.error(f"unknown merge `{el.op}`", el.pos, hint)
        start = state.shape
        branches: list[Sequence] = []
        ends: list[State] = []
        for index, branch in enumerate(el.branches):
            branch_state = State(start, state.field, state.effective_stride)
            children = self._sequence(branch.items, scope, branch_state, _join(path, str(index)))
            ends.append(branch_state)
            node = self._finish_sequence(
                str(index), _join(path, str(index)), None, branch.pos, start, branch_state, children, "group", "branch"
            )
            if node is not None:
                branches.append(node)
        if kind is None or start is None or any(s.shape is None for s in ends):
            state.shape = None
            return None
        shapes = [s.shape for s in ends if s.shape is not None]
        field = (max(s.field[0] for s in ends), max(s.field[1] for s in ends))
        effective_stride = (max(s.effective_stride[0] for s in ends), max(s.effective_stride[1] for s in ends))
        try:
            out = kind.merge(shapes)
        except LayerError as err:
            notes = _branch_notes(branches, err.branch) if err.branch is not None else []
            self.sink.error(err.message, el.pos, err.hint, [*notes, *scope.notes()])
            # Go on with the shape the merge would give once fixed: later mistakes are independent of this one.
            state.shape, state.field, state.effective_stride = err.recovered, field, effective_stride
            return None
        # A branch that broadcasts (a squeeze-excitation gate's 1x1 map) scales the other
        # branches' pixels without moving where they come from: only full-size branches count.
        spatial = [s for s in ends if s.shape is not None and s.shape.is_image and s.shape.spatial == out.spatial]
        counted = spatial or ends
        field = (max(s.field[0] for s in counted), max(s.field[1] for s in counted))
        effective_stride = (max(s.effective_stride[0] for s in counted), max(s.effective_stride[1] for s in counted))
        merge = self._new_layer(kind, {}, name, path, label, el.pos, shapes[0], out, scope, field, effective_stride)
        state.shape, state.field, state.effective_stride = out, field, effective_stride
        return Parallel(
            name,
            path,
            label,
            el.pos,
            start,
            out,
            params=sum(b.params for b in branches),
            buffers=sum(b.buffers for b in branches),
            macs=sum(b.macs for b in branches),
            branches=branches,
            merge=merge,
        )

    def _repeat(
        self, el: ast.Repeat, scope: Scope, state: State, name: str, path: str, label: str | None, depth: int
    ) -> Node | None:
        try:
            count = self._eval(el.count, scope, state.shape)
        except EvalError as err:
            self.sink.error(err.message, err.pos, err.hint, scope.notes())
            count = None
        except Poisoned:
            count = None
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            self.sink.error(
                f"a repetition count must be a whole number of at least 1; got {format_value(count)}",
                el.count.pos,
                "for example `[Conv(64, 3), ReLU] x 3`",
                scope.notes(),
            )
            count = None
        if count is not None and count > MAX_LAYERS:
            self.sink.error(
                f"repeating {count:,} times exceeds the limit of {MAX_LAYERS:,} layers",
                el.count.pos,
                "networks are limited to 100,000 layers after expansion",
                scope.notes(),
            )
            raise Abort
        if count:
            per_iteration, _ = self._min_size(el.body, depth + 1)
            if self.leaf_count + per_iteration * count > MAX_LAYERS:
                self.sink.error(
                    f"this repetition expands to at least {count:,} x {per_iteration:,} = {count * per_iteration:,} layers; "
                    f"the limit is {MAX_LAYERS:,}",
                    el.pos,
                    "networks are limited to 100,000 layers after expansion",
                    scope.notes(),
                )
                raise Abort
        start = state.shape
        iterations: list[Node] = []
        for index in range(count or 1):
            before = self.leaf_count
            node = self._element(el.body, scope, state, str(index), _join(path, str(index)), depth + 1)
            if node is not None:
                iterations.append(node)
            if index == 0 and count:
                per_iteration = self.leaf_count - before
                if before + per_iteration * count > MAX_LAYERS:
                    self.sink.error(
                        f"this repetition expands to {count:,} x {per_iteration:,} = {count * per_iteration:,} layers; "
                        f"the limit is {MAX_LAYERS:,}",
                        el.pos,
                        "networks are limited to 100,000 layers after expansion",
                        scope.notes(),
                    )
                    raise Abort
            if state.shape is None or count is None:
                break
        if count is None:
            state.shape = None
            return None
        return self._finish_sequence(name, path, label, el.pos, start, state, iterations, "repeat", f"x {count}")

    def _call(self, call: ast.Call, scope: Scope, state: State, name: str, path: str, label: str | None) -> Node | None:
        kind = lookup(call.name)
        if kind is not None and not isinstance(kind, MergeKind):
            return self._layer(kind, call, scope, state, name, path, label)
        if kind is not None:
            self.sink.error(
                f"`{kind.name}` combines branches and needs them in brackets",
                call.pos,
                f"write `{kind.name}[ a | b ]`",
                scope.notes(),
            )
            state.shape = None
            return None
        block = self.blocks.get(call.name)
        if block is not None:
            return self._block_call(block, call, scope, state, name, path, label)
        hint = (
            suggest(call.name, [*self._layer_names(), *self.blocks])
            or "`cnndsl layers` lists every layer kind; or define a `block`"
        )
        self.sink.error(f"unknown layer or block `{call.name}`", call.pos, hint, scope.notes())
        for arg in call.args:  # still check the argument expressions
            self._try_eval(arg.value, scope, state.shape)
        state.shape = None
        return None

    def _layer_names(self) -> list[str]:
        return [spelling for kind in KINDS.values() for spelling in (kind.name, *kind.aliases)]

    # -- blocks ------------------------------------------------------------------------

    def _block_call(
        self, block: ast.BlockDef, call: ast.Call, scope: Scope, state: State, name: str, path: str, label: str | None
    ) -> Node | None:
        text = _call_text(call)
        if any(b == block.name for b, _, _ in scope.calls):
            chain = " -> ".join([*(b for b, _, _ in scope.calls), block.name])
            self.sink.error(
                f"block `{block.name}` calls itself ({chain})",
                call.pos,
                "blocks may call other blocks, but not recursively",
                scope.notes(),
            )
            state.shape = None
            return None
        if len(scope.calls) >= MAX_BLOCK_DEPTH:
            self.sink.error(f"block calls nested deeper than {MAX_BLOCK_DEPTH}", call.pos, None, scope.notes())
            raise Abort
        # Binding costs one step per parameter and call: bounded, so that a block with
        # thousands of defaulted parameters called thousands of times is refused, not slow.
        self.binding_count += len(block.params)
        if self.binding_count > MAX_BLOCK_BINDINGS:
            self.sink.error(
                f"block calls bind more than {MAX_BLOCK_BINDINGS:,} parameters in all "
                f"(`{block.name}` has {len(block.params):,} parameters)",
                call.pos,
                "give blocks fewer parameters, or call them fewer times",
                scope.notes(),
            )
            raise Abort
        self._refuse_oversized(block, call, scope)
        info = self._block_info(block)
        signature = info.signature
        bound = self._bind_names(block.name, info.specs, signature, call, case_sensitive=True)
        # The block's parameters shadow the network's; the network's are not copied per call.
        local: dict[str, Value] = {}
        values: Mapping[str, Value] = ChainMap(local, self._network_values)
        constants = info.constant_defaults
        ok = bound is not None
        if bound is not None:
            todo: Iterable[ast.Param] = block.params
            if len(constants) == info.defaulted:
                # Every default is known: copy them at once, evaluate only what the call gives.
                local.update(constants)
                todo = [*info.required, *(info.by_name[name] for name in bound if name not in constants)]
                todo += [info.by_name[name] for name in bound if name in constants]
            for param in todo:
                try:
                    if param.name in bound:
                        local[param.name] = self._eval(bound[param.name].value, scope, state.shape)
                    elif param.name in constants:
                        local[param.name] = constants[param.name]
                    elif param.default is not None:
                        local[param.name] = self._default_value(block, param, values, scope, state.shape)
                    else:
                        self.sink.error(
                            f"block `{block.name}` needs `{param.name}`",
                            call.pos,
                            f"the block's parameters: {signature}",
                            scope.notes(),
                        )
                        local[param.name] = POISON
                        ok = False
                except EvalError as err:
                    self.sink.error(err.message, err.pos, err.hint, scope.notes())
                    local[param.name] = POISON
                    ok = False
                except Poisoned:
                    local[param.name] = POISON
                    ok = False
        else:
            local.update({param.name: POISON for param in block.params})
        inner = Scope(values, (*scope.calls, (block.name, text, call.pos)))
        start = state.shape
        if not ok:
            state.shape = None
        body = block.body
        while isinstance(body, ast.Labeled):
            body = body.body
        if isinstance(body, ast.Group):
            children = self._sequence(body.items, inner, state, path)
        else:
            node = self._element(block.body, inner, state, "0", _join(path, "0"), 0)
            children = [node] if node is not None else []
        if not ok:
            return None
        args = local  # not used again here: the IR keeps it as the call's block_args
        # The title shows the arguments the call gave (evaluated), as it gave them; defaults stay implicit.
        given = [
            format_value(_plain(values[a.name if a.name else block.params[i].name]))
            if a.name is None
            else f"{a.name}={format_value(_plain(values[a.name]))}"
            for i, a in enumerate(call.args)
        ]
        title = f"{block.name}({', '.join(given)})" if call.args else block.name
        return self._finish_sequence(name, path, label, call.pos, start, state, children, "block", title, block.name, args)

    def _default_value(
        self, block: ast.BlockDef, param: ast.Param, values: Mapping[str, Value], scope: Scope, shape: Shape | None
    ) -> Value:
        """A parameter's default. One that reads no other parameter of the block and not `in_channels`
        is the same at every call: it is kept in the block's `constant_defaults` and not evaluated again."""
        assert param.default is not None
        value = self._eval(param.default, Scope(values, scope.calls), shape)
        info = self._block_info(block)
        free = _free_names(param.default)
        if free is not None and not free & info.by_name.keys() and all(n.lower() != "in_channels" for n in free):
            info.constant_defaults[param.name] = value
        return value

    def _block_info(self, block: ast.BlockDef) -> BlockInfo:
        """What every call of `block` needs, made once per block."""
        info = self._block_infos.get(block.name)
        if info is None:
            signature = f"{block.name}({names_text([p.name + ('=...' if p.default else '') for p in block.params])})"
            specs = tuple(ArgSpec(p.name, "float", REQUIRED if p.default is None else p.default) for p in block.params)
            required = [p for p in block.params if p.default is None]
            by_name: dict[str, ast.Param] = {}
            for param in block.params:
                by_name.setdefault(param.name, param)
            info = self._block_infos[block.name] = BlockInfo(
                signature, specs, by_name, required, len(block.params) - len(required), {}
            )
        return info

    def _refuse_oversized(self, block: ast.BlockDef, call: ast.Call, scope: Scope) -> None:
        """Refuse a block call before expanding it when it must exceed the layer or node budget
        (blocks that call the previous one twice double at each level)."""
        leaves, nodes = self._block_min_size(block)
        if self.leaf_count + leaves > MAX_LAYERS or self.node_count + nodes > 4 * MAX_LAYERS:
            at_least = f"{leaves:,} layers" if leaves > MAX_LAYERS else f"{nodes:,} layers and groups"
            if max(leaves, nodes) >= _SATURATED:
                at_least = f"more than {_SATURATED - 1:,} layers and groups"
            self.sink.error(
                f"block `{block.name}` expands to at least {at_least}",
                call.pos,
                f"networks are limited to {MAX_LAYERS:,} layers after expanding blocks and repetition",
                scope.notes(),
            )
            raise Abort

    def _block_min_size(self, block: ast.BlockDef) -> tuple[int, int]:
        """(layers, layers and groups) a call of `block` expands to at least, without expanding it."""
        cached = self._min_size_of_block.get(block.name)
        if cached is None:
            self._min_size_of_block[block.name] = (0, 0)  # a recursive call is an error of its own
            cached = self._min_size(block.body, 0)
            self._min_size_of_block[block.name] = cached
        return cached

    def _min_size(self, el: ast.Element, depth: int) -> tuple[int, int]:
        """(layers, layers and groups) `el` expands to at least; each element is sized once."""
        cached = self._min_sizes.get(id(el))
        if cached is not None and cached[0] is el:
            return cached[1]
        size = self._min_size_uncached(el, depth)
        self._min_sizes[id(el)] = (el, size)
        return size

    def _min_size_uncached(self, el: ast.Element, depth: int) -> tuple[int, int]:
        if depth > MAX_NESTING * 4:  # `_element` refuses this nesting anyway (a lower bound stays one)
            return 0, 0
        while isinstance(el, ast.Labeled):
            el = el.body
        if isinstance(el, ast.Call):
            kind = lookup(el.name)
            if kind is not None:
                return (1, 1) if not isinstance(kind, MergeKind) else (0, 0)
            block = self.blocks.get(el.name)
            return self._block_min_size(block) if block is not None else (0, 0)
        if isinstance(el, ast.Group):
            leaves, nodes = 0, 1
            for item in el.items:
                item_leaves, item_nodes = self._min_size(item, depth + 1)
                leaves, nodes = _saturate(leaves + item_leaves), _saturate(nodes + item_nodes)
            return leaves, nodes
        if isinstance(el, ast.Merge):
            leaves, nodes = 1, 1  # the merge itself
            for branch in el.branches:
                branch_leaves, branch_nodes = self._min_size(branch, depth + 1)
                leaves, nodes = _saturate(leaves + branch_leaves), _saturate(nodes + branch_nodes)
            return leaves, nodes
        if isinstance(el, ast.Repeat):
            # A count that is a parameter is at least 1.
            count = el.count.value if isinstance(el.count, ast.Number) and isinstance(el.count.value, int) else 1
            leaves, nodes = self._min_size(el.body, depth + 1)
            return _saturate(leaves * max(count, 1)), _saturate(nodes * max(count, 1))
        return 0, 0

    # -- layers ------------------------------------------------------------------------

    def _layer(
        self, kind: LayerKind, call: ast.Call, scope: Scope, state: State, name: str, path: str, label: str | None
    ) -> Layer | None:
        shape = state.shape
        bound_args = self._layer_args(kind, call, scope, shape)
        if bound_args is None or shape is None:
            state.shape = None
            return None
        args, arg_pos = bound_args.values, bound_args.positions
        try:
            args = kind.resolve(args, shape)
            check_input_rank(kind, args, shape)  # the one place a layer's input rank is enforced
            out = kind.infer(args, shape)
        except LayerError as err:
            self.sink.error(
                err.message,
                arg_pos.get(err.arg or "", call.pos),
                err.hint or f"signature: {kind.signature_text(call.name)}",
                scope.notes(),
            )
            # Where the output is known anyway (FC on an image), later layers are still checked.
            state.shape = err.recovered
            return None
        if not self._check_declared_inputs(kind, call, bound_args.inputs, shape, scope):
            state.shape = out  # the output does not depend on the wrong in_channels: go on checking
            return None
        if out.numel > MAX_ELEMENTS:
            self.sink.error(
                f"{kind.name} would produce {out.numel:,} elements ({out}); the limit is 2^40",
                call.pos,
                "check the channel counts and sizes",
                scope.notes(),
            )
            raise Abort
        if any(d < 1 for d in out):
            self.sink.error(f"{kind.name}: the output would be {out}, with a size below 1", call.pos, None, scope.notes())
            state.shape = None
            return None
        self._fit_warnings(kind, args, shape, call, scope)
        field, effective_stride = kind.receptive(args, shape, state.field, state.effective_stride)
        layer = self._new_layer(kind, args, name, path, label, call.pos, shape, out, scope, field, effective_stride)
        state.shape, state.field, state.effective_stride = out, field, effective_stride
        return layer

    def _count_node(self, scope: Scope, pos: Position | None) -> None:
        # Containers (groups, branches, block calls) count too, against a larger budget, so that
        # thousands of empty branches cannot build an unbounded tree either.
        self.node_count += 1
        if self.node_count > 4 * MAX_LAYERS:
            self.sink.error(
                f"the network expands to more than {4 * MAX_LAYERS:,} layers and groups",
                pos or self._last_pos,
                "networks are limited to 100,000 layers after expanding blocks and repetition",
                scope.notes(),
            )
            raise Abort

    def _new_layer(
        self,
        kind: LayerKind,
        args: dict[str, Value],
        name: str,
        path: str,
        label: str | None,
        pos: Position,
        shape: Shape,
        out: Shape,
        scope: Scope,
        field: Pair,
        effective_stride: Pair,
    ) -> Layer:
        self.leaf_count += 1
        self._last_pos = pos
        if self.leaf_count > MAX_LAYERS:
            self.sink.error(
                f"the network expands to more than {MAX_LAYERS:,} layers",
                pos,
                "networks are limited to 100,000 layers after expanding blocks and repetition",
                scope.notes(),
            )
            raise Abort
        self._count_node(scope, pos)
        params = kind.param_count(args, shape)
        if params > MAX_ELEMENTS:
            self.sink.error(f"{kind.name} would have {params:,} parameters; the limit is 2^40", pos, None, scope.notes())
            raise Abort
        return Layer(
            name,
            path,
            label,
            pos,
            shape,
            out,
            params=params,
            buffers=kind.buffer_count(args, shape),
            macs=kind.macs(args, shape, out),
            kind=kind,
            args=args,
            receptive_field=field,
            effective_stride=effective_stride,
        )

    def _fit_warnings(self, kind: LayerKind, args: dict[str, Value], shape: Shape, call: ast.Call, scope: Scope) -> None:
        window = kind.window(args)
        if window is None:
            return
        problems = []
        for axis, (size, word) in enumerate(zip(shape.spatial, ("rows", "columns"), strict=True)):
            dropped = window.dropped_pixels(size, axis)
            if dropped:
                problems.append(f"{window.arithmetic(size, axis)} leaves the last {dropped} input {word} unread")
        if problems:
            if len(problems) == 2 and problems[0].replace("rows", "") == problems[1].replace("columns", ""):
                problems = [problems[0].replace("rows", "rows and columns")]
            severity: Severity = "error" if self.strict else "warning"
            general = "change pad, stride or kernel so that (N - F + 2P)/S + 1 is whole, or crop the input"
            fix = _fit_fix(window, shape.spatial)
            self.sink.add(
                severity,
                f"{kind.name} doesn't fit its input {shape}: " + "; ".join(problems),
                call.pos,
                f"{fix} (or {general})" if fix else general,
                scope.notes(),
            )

    def _layer_args(self, kind: LayerKind, call: ast.Call, scope: Scope, shape: Shape | None) -> BoundArgs | None:
        """The kind's arguments from a call in the spelling it uses (PyTorch's spellings map theirs
        onto the kind's), then `defaults`, then the signature's defaults."""
        specs = kind.signature_of(call.name)
        owner = _owner(kind, call.name)
        signature = kind.signature_text(call.name)
        bound = self._bind_names(owner, specs, signature, call)
        if bound is None:
            return None
        defaults = self.defaults.get(kind.name, {})
        network_scope = Scope(self._network_values, scope.calls)
        result = BoundArgs({}, {}, [])
        ok = True

        def evaluate(spec: ArgSpec, source: ast.Arg, arg_scope: Scope) -> Value:
            value = self._eval(source.value, arg_scope, shape)
            if isinstance(value, Word) and not (spec.type == "pad" and value.text.lower() == "same"):
                self._number(value, source.value, arg_scope)  # raises "unknown name" with a suggestion
            return self._coerce(owner, spec, value, source.value.pos)

        targeted = {spec.canonical for spec in specs if spec.role == "arg"}
        sources: list[tuple[ArgSpec, ast.Arg, Scope]] = []
        for spec in specs:
            default_key = spec.canonical if spec.role == "arg" else spec.name
            if spec.name in bound:
                sources.append((spec, bound[spec.name], scope))
            elif spec.role in ("arg", "fixed") and default_key in defaults:
                sources.append((spec, defaults[default_key], network_scope))
        # `defaults` given through another spelling, for arguments this spelling does not name.
        for spec in kind.signature:
            if spec.role == "arg" and spec.name not in targeted and spec.name in defaults:
                sources.append((spec, defaults[spec.name], network_scope))
        for spec, source, arg_scope in sources:
            try:
                value = evaluate(spec, source, arg_scope)
            except EvalError as err:
                self.sink.error(err.message, err.pos, err.hint or f"signature: {signature}", scope.notes())
                ok = False
                continue
            except Poisoned:
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
                self.sink.error(
                    f"{owner} needs `{spec.name}` (its {ordinal(index + 1)} argument)",
                    call.pos,
                    f"signature: {signature}",
                    scope.notes(),
                )
                ok = False
        for index, spec in enumerate(kind.signature):
            if spec.role != "arg" or spec.name in result.values or not ok:
                continue
            if isinstance(spec.default, SameAs):
                result.values[spec.name] = result.values.get(spec.default.name)
            elif spec.default is REQUIRED:
                self.sink.error(
                    f"{owner} needs `{spec.name}` (its {ordinal(index + 1)} argument)",
                    call.pos,
                    f"signature: {signature}",
                    scope.notes(),
                )
                ok = False
            else:
                result.values[spec.name] = spec.default
        return result if ok else None

    def _check_declared_inputs(
        self, kind: LayerKind, call: ast.Call, inputs: list[tuple[ArgSpec, Value, Position]], shape: Shape, scope: Scope
    ) -> bool:
        """PyTorch's spellings repeat the input size (`Conv2d(3, 16, 3)`): it must be the inferred one."""
        ok = True
        for spec, value, pos in inputs:
            if value == shape.channels:
                continue
            spelling = _owner(kind, call.name)
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

    def _bind_names(
        self, owner: str, specs: tuple[ArgSpec, ...], signature: str, call: ast.Call, case_sensitive: bool = False
    ) -> dict[str, ast.Arg] | None:
        """Match a call's arguments to parameter names: positional first, then keywords."""
        by_key = self._keyword_names(specs, case_sensitive)
        bound: dict[str, ast.Arg] = {}
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

    def _keyword_names(self, specs: tuple[ArgSpec, ...], case_sensitive: bool) -> dict[str, str]:
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

    # -- values ------------------------------------------------------------------------

    @staticmethod
    def _coerce(owner: str, spec: ArgSpec, value: Value, pos: Position) -> Value:
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
            return EvalError(f"{owner}: `{spec.name}` must be {expected}; got {format_value(_plain(value))}", pos)

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
                    f"{bound_word}, a pair (h, w) of them or `same`"
                    if spec.type == "pad"
                    else f"{bound_word} or a pair (h, w) of them"
                )
            return tuple(ints) if isinstance(value, tuple) else ints[0]
        if spec.type == "bool":
            if not isinstance(value, bool):
                raise fail("true or false")
            return value
        if spec.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail("a number")
            return float(value)
        raise AssertionError(spec.type)

    def _try_eval(self, expr: ast.Expr, scope: Scope, shape: Shape | None) -> None:
        try:
            self._eval(expr, scope, shape)
        except EvalError as err:
            self.sink.error(err.message, err.pos, err.hint, scope.notes())
        except Poisoned:
            pass

    def _eval(self, expr: ast.Expr, scope: Scope, shape: Shape | None, depth: int = 0) -> Value:
        if depth > MAX_EXPR_DEPTH:
            raise EvalError(
                f"expression nested deeper than {MAX_EXPR_DEPTH} levels",
                expr.pos,
                "simplify the expression (a network parameter can hold a computed value)",
            )
        if isinstance(expr, ast.Number):
            return _checked(expr.value, expr.pos)
        if isinstance(expr, ast.Name):
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
        if isinstance(expr, ast.Neg):
            value = self._number(self._eval(expr.operand, scope, shape, depth + 1), expr.operand, scope)
            return -value
        if isinstance(expr, ast.Pair):
            return (self._eval(expr.first, scope, shape, depth + 1), self._eval(expr.second, scope, shape, depth + 1))
        if isinstance(expr, ast.BinOp):
            left = self._number(self._eval(expr.left, scope, shape, depth + 1), expr.left, scope)
            right = self._number(self._eval(expr.right, scope, shape, depth + 1), expr.right, scope)
            if expr.op in ("/", "//", "%") and right == 0:
                raise EvalError(f"division by zero in `{_expr_text(expr)}`", expr.pos)
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
            else:
                result = left % right
            return _checked(result, expr.pos)
        raise AssertionError(f"unknown expression {expr!r}")

    def _number(self, value: Value, expr: ast.Expr, scope: Scope) -> int | float:
        if isinstance(value, Word):
            if value.text[0].isdigit():  # `2x3x3`: sizes as the summary prints them, but three of them
                raise EvalError(
                    f"`{value.text}` is not a value", expr.pos, "a kernel, stride or pad is one number or HxW, such as 3x3"
                )
            names = [name for name, v in scope.values.items() if v is not POISON] + ["in_channels"]
            hint = suggest(value.text, names) or (f"names here: {names_text(names)}" if names else None)
            raise EvalError(f"unknown name `{value.text}`", expr.pos, hint)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvalError(f"arithmetic needs numbers; got {format_value(_plain(value))}", expr.pos)
        return value


def _checked(value: int | float, pos: Position) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError("the expression is not a finite number", pos, "NaN and infinities cannot be layer arguments")
    if abs(value) > MAX_NUMBER:
        raise EvalError(f"the value {_magnitude(value)} is too large; numbers are limited to 2^62", pos)
    return value


def _branch_notes(branches: list[Sequence], odd: int) -> list[str]:
    """Where branch 0 and the disagreeing branch got their shapes: the last layer of each that
    changed the shape (the point where the two parted), or that it keeps its input's shape."""
    notes = []
    for index in (0, odd):
        if index >= len(branches):
            continue
        branch = branches[index]
        changed = [layer for layer in branch.leaves() if layer.out_shape != layer.in_shape]
        if changed:
            layer = changed[-1]
            notes.append(
                f"branch {index} gives {branch.out_shape}: `{layer.describe}` at line {layer.pos.line}, "
                f"column {layer.pos.column} turns {layer.in_shape} into {layer.out_shape}"
            )
        else:
            notes.append(f"branch {index} gives {branch.out_shape}: it keeps the shape of the merge's input")
    return notes


def _fit_fix(window: Window, sizes: Pair) -> str | None:
    """The smallest change that makes (N - F + 2P)/S + 1 whole on both axes, with the lecture's
    arithmetic: `pad=1 gives (7 - 3 + 2*1)/3 + 1 = 3`. More padding first (up to half the
    window, which pooling allows too), then a kernel one or two larger or smaller; None when
    neither helps."""

    def fits(candidate: Window) -> bool:
        for axis, size in enumerate(sizes):
            numerator = size + 2 * candidate.pad[axis] - candidate.span(axis)
            if numerator < 0 or numerator % candidate.stride[axis]:
                return False
        return True

    def arithmetic(candidate: Window) -> str:
        texts = [candidate.arithmetic(size, axis) for axis, size in enumerate(sizes)]
        return texts[0] if texts[0] == texts[1] else " and ".join(texts)

    def setting(name: str, values: Pair) -> str:
        return f"{name}={values[0]}" if values[0] == values[1] else f"{name}=({values[0]}, {values[1]})"

    def bumped(values: Pair, delta: int) -> Pair:
        """`values` changed by `delta` on the axes that drop pixels."""
        drops = [bool(window.dropped_pixels(size, axis)) for axis, size in enumerate(sizes)]
        return (values[0] + delta if drops[0] else values[0], values[1] + delta if drops[1] else values[1])

    for extra in range(1, max(window.stride) + 1):
        candidate = replace(window, pad=bumped(window.pad, extra))
        if all(2 * candidate.pad[axis] <= candidate.span(axis) for axis in (0, 1)) and fits(candidate):
            return f"{setting('pad', candidate.pad)} gives {arithmetic(candidate)}"
    for delta in (1, -1, 2, -2):
        candidate = replace(window, kernel=bumped(window.kernel, delta))
        if min(candidate.kernel) >= 1 and fits(candidate):
            return f"{setting('kernel', candidate.kernel)} gives {arithmetic(candidate)}"
    return None


def _owner(kind: LayerKind, spelling: str) -> str:
    """The name messages use: the spelling when it has a signature of its own (`Conv2d`), else the kind's."""
    return canonical_spelling(spelling) if kind.signature_of(spelling) is not kind.signature else kind.name


def _magnitude(value: int | float) -> str:
    """A number for a message, short and safe: str() of a huge int raises (over 4,300 digits) or floods the screen."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    return f"{value:.3g}"


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, (bytes, bytearray)) else repr(bytes(value[:limit]))
    return text if len(text) <= limit else text[:limit] + "..."


_SATURATED = 2**63
"""Size estimates stop growing here (they are only compared with the budgets)."""


def _saturate(n: int) -> int:
    return min(n, _SATURATED)


def _free_names(expr: ast.Expr) -> set[str] | None:
    """The names an expression reads (None if it is too deep to look at: not cached then)."""
    names: set[str] = set()
    stack: list[tuple[ast.Expr, int]] = [(expr, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPR_DEPTH:
            return None
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Neg):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, ast.Pair):
            stack += [(node.first, depth + 1), (node.second, depth + 1)]
        elif isinstance(node, ast.BinOp):
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
    return names


def _plain(value: Value) -> Value:
    return value.text if isinstance(value, Word) else value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _expr_text(expr: ast.Expr, depth: int = 0) -> str:
    """The expression as written, for notes; `...` below MAX_EXPR_DEPTH levels (the evaluator refuses those)."""
    if depth > MAX_EXPR_DEPTH:
        return "..."
    if isinstance(expr, ast.Number):
        return str(expr.value)
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Neg):
        return f"-{_expr_text(expr.operand, depth + 1)}"
    if isinstance(expr, ast.Pair):
        return f"({_expr_text(expr.first, depth + 1)}, {_expr_text(expr.second, depth + 1)})"
    return f"{_expr_text(expr.left, depth + 1)} {expr.op} {_expr_text(expr.right, depth + 1)}"


def _call_text(call: ast.Call) -> str:
    args = [(f"{a.name}=" if a.name else "") + _expr_text(a.value) for a in call.args]
    return f"{call.name}({', '.join(args)})" if args else call.name
