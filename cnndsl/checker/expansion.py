"""Expansion and inference: the Checker walks the program's elements, expanding block calls
and repetitions, evaluating arguments, inferring shapes and building the IR.

Every problem is reported to a DiagnosticSink with its position; checking goes on past
errors where it can (an unknown shape poisons what follows, but names and arguments
are still checked). Resource limits are the budget's (`budget.Budget`), enforced before
anything large is built.
"""

from __future__ import annotations

import gc
import sys
from collections import ChainMap
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

from .. import ast
from ..errors import DiagnosticSink, Position, Severity, TooManyErrors
from ..ir import Layer, Node, Parallel, Sequence
from ..layers import KINDS, LayerError, LayerKind, MergeKind, lookup
from ..layers.base import REQUIRED, ArgSpec, check_input_rank, check_spelling_rank, format_value
from ..limits import MAX_ERRORS
from ..names import module_names
from ..shapes import Shape, Sizes, Window
from .binding import Binder, Defaults
from .budget import Abort, Budget
from .functions import define_functions, whole_count
from .header import collect_defaults, input_shape, layer_names, network_params, split_program
from .values import POISON, Scope, Value, call_text, evaluate, free_names, names_text, plain, report_errors, suggest

MERGES = {name.lower(): kind for name, kind in KINDS.items() if isinstance(kind, MergeKind)}


@dataclass
class State:
    """What flows between elements: the shape (None once unknown) and the receptive field."""

    shape: Shape | None
    field: Sizes = (1, 1)
    """Per spatial axis of the input ((L,), (H, W), (D, H, W)); (1, 1) for a flat input, as ever."""
    effective_stride: Sizes = (1, 1)


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
        self.defaults: Defaults = {}
        self.budget = Budget(sink, self.blocks)
        self.binder = Binder(sink)
        self._block_infos: dict[str, BlockInfo] = {}
        self._network_values: dict[str, Value] = {}
        self._unrun_checked: set[int] = set()
        """The ids of the repetitions (AST nodes, alive during the check) whose body was checked without running it."""
        """The network's parameters, and the file's functions (`functions.define_functions`)."""

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
        header = split_program(self.program, self.sink)
        self.blocks.update(header.blocks)
        network, input_decl, body = header.network, header.input, header.body
        params = network_params(self.sink, network, self.param_overrides)
        self._network_values = define_functions(header.functions, params) if header.functions else params
        self.budget.set_constants(self.program, self._network_values)
        if header.defaults is not None:
            self.defaults = collect_defaults(self.sink, self.binder, header.defaults)
        shape = input_shape(self.sink, self.budget, input_decl, self.input_override)
        if not body:
            self.sink.error(
                "the network has no layers",
                input_decl.pos if input_decl else Position(1, 1),
                "add layers after the header, for example `Conv(32, 3), ReLU`",
            )
            return None
        scope = Scope(self._network_values)
        ones = (1,) * (shape.spatial_rank if shape is not None and shape.has_space else 2)
        state = State(shape, ones, ones)
        children = self._sequence(body, scope, state, "")
        if shape is None or state.shape is None or self.sink.has_errors:
            return None
        if self.budget.leaf_count == 0:
            self.sink.error(
                "the network has no layers: every element of it is empty or repeated 0 times",
                body[0].pos,
                "a network needs at least one layer (`Identity` passes its input through)",
            )
            return None
        name = network.name if network else self.default_name
        root = self._make_sequence(
            "", "", None, body[0].pos if body else Position(1, 1), shape, state.shape, children, "network", name
        )
        self._logits_warning(root)
        return CheckResult(name, shape, root, dict(params))

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

    # -- structure ---------------------------------------------------------------------

    def _sequence(self, items: Iterable[ast.Element], scope: Scope, state: State, path: str) -> list[Node]:
        self.budget.count_node(scope, None)
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
            self.budget.last_pos = item.pos
            node = self._element(item, scope, state, name, _join(path, name), 0)
            if node is not None:
                nodes.append(node)
        return nodes

    def _element(self, el: ast.Element, scope: Scope, state: State, name: str, path: str, depth: int) -> Node | None:
        self.budget.check_nesting(depth, el.pos)
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
            **_totals(children),
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
        field, effective_stride = _widest(ends)
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
        spatial = [s for s in ends if s.shape is not None and s.shape.has_space and s.shape.spatial == out.spatial]
        field, effective_stride = _widest(spatial or ends)
        merge = self._new_layer(kind, {}, name, path, label, el.pos, shapes[0], out, scope, field, effective_stride)
        state.shape, state.field, state.effective_stride = out, field, effective_stride
        return Parallel(
            name,
            path,
            label,
            el.pos,
            start,
            out,
            **_totals(branches),
            branches=branches,
            merge=merge,
        )

    def _repeat(
        self, el: ast.Repeat, scope: Scope, state: State, name: str, path: str, label: str | None, depth: int
    ) -> Node | None:
        value = report_errors(self.sink, scope, lambda: evaluate(el.count, scope, state.shape))
        count = None if value is POISON else whole_count(value)
        if value is not POISON and (count is None or count < 0):
            if count is None:
                message = f"a repetition count must be a whole number; got {format_value(plain(value))}"
                hint = "round it: `x round(...)`, `x floor(...)` or `x ceil(...)`"
            else:
                message = f"a repetition count cannot be negative; got {count}"
                hint = "`x 0` repeats nothing: the repetition passes its input through"
            self.sink.error(message, el.count.pos, hint, scope.notes())
            count = None
        if count is not None:
            self.budget.check_repeat_count(count, el.count.pos, scope)
        if count:
            per_iteration, _ = self.budget.min_size(el.body, depth + 1)
            self.budget.check_repeat(self.budget.leaf_count, per_iteration, count, True, el.pos, scope)
        start = state.shape
        iterations: list[Node] = []
        if not count:
            # Never run (`x 0`), or its count is wrong: the body is still checked, for the mistakes
            # that do not depend on its input (a misspelt layer), once per repetition in the source:
            # checks that build nothing would escape the expansion estimate (blocks of `B x 0, B x 0`
            # would double at each level). `x 0` passes its input through.
            if id(el) not in self._unrun_checked:
                self._unrun_checked.add(id(el))
                unrun = _with_index(scope, el.index_name, POISON)
                self._element(el.body, unrun, State(None), "0", _join(path, "0"), depth + 1)
            if count is None:
                state.shape = None
                return None
        for index in range(count):
            before = self.budget.leaf_count
            inner = _with_index(scope, el.index_name, index)
            node = self._element(el.body, inner, state, str(index), _join(path, str(index)), depth + 1)
            if node is not None:
                iterations.append(node)
            if index == 0:
                self.budget.check_repeat(before, self.budget.leaf_count - before, count, False, el.pos, scope)
            if state.shape is None:
                break
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
        hint = suggest(call.name, [*layer_names(), *self.blocks]) or "`cnndsl layers` lists every layer kind; or define a `block`"
        self.sink.error(f"unknown layer or block `{call.name}`", call.pos, hint, scope.notes())
        for arg in call.args:  # still check the argument expressions
            self._try_eval(arg.value, scope, state.shape)
        state.shape = None
        return None

    # -- blocks ------------------------------------------------------------------------

    def _block_call(
        self, block: ast.BlockDef, call: ast.Call, scope: Scope, state: State, name: str, path: str, label: str | None
    ) -> Node | None:
        text = call_text(call)
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
        self.budget.check_block_depth(call, scope)
        self.budget.count_bindings(block, call, scope)
        self.budget.refuse_oversized(block, call, scope)
        info = self._block_info(block)
        signature = info.signature
        bound = self.binder.bind_names(block.name, info.specs, signature, call, case_sensitive=True)
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
                if param.name in bound:
                    local[param.name] = report_errors(
                        self.sink, scope, partial(evaluate, bound[param.name].value, scope, state.shape)
                    )
                elif param.name in constants:
                    local[param.name] = constants[param.name]
                elif param.default is not None:
                    local[param.name] = report_errors(
                        self.sink, scope, partial(self._default_value, block, param, values, scope, state.shape)
                    )
                else:
                    self.sink.error(
                        f"block `{block.name}` needs `{param.name}`",
                        call.pos,
                        f"the block's parameters: {signature}",
                        scope.notes(),
                    )
                    local[param.name] = POISON
                if local[param.name] is POISON:
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
            format_value(plain(values[a.name if a.name else block.params[i].name]))
            if a.name is None
            else f"{a.name}={format_value(plain(values[a.name]))}"
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
        value = evaluate(param.default, Scope(values, scope.calls), shape)
        info = self._block_info(block)
        free = free_names(param.default)
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

    # -- layers ------------------------------------------------------------------------

    def _layer(
        self, kind: LayerKind, call: ast.Call, scope: Scope, state: State, name: str, path: str, label: str | None
    ) -> Layer | None:
        shape = state.shape
        bound_args = self.binder.layer_args(kind, call, scope, shape, self.defaults, self._network_values)
        if bound_args is None or shape is None:
            state.shape = None
            return None
        args, arg_pos = bound_args.values, bound_args.positions
        try:
            check_spelling_rank(kind, shape, call.name)  # `Conv1d` on an image
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
        if not self.binder.check_declared_inputs(kind, call, bound_args.inputs, shape, scope):
            state.shape = out  # the output does not depend on the wrong in_channels: go on checking
            return None
        self.budget.check_output(kind, out, call.pos, scope)
        if any(d < 1 for d in out):
            self.sink.error(f"{kind.name}: the output would be {out}, with a size below 1", call.pos, None, scope.notes())
            state.shape = None
            return None
        self._fit_warnings(kind, args, shape, call, scope)
        field, effective_stride = kind.receptive(args, shape, state.field, state.effective_stride)
        layer = self._new_layer(kind, args, name, path, label, call.pos, shape, out, scope, field, effective_stride)
        state.shape, state.field, state.effective_stride = out, field, effective_stride
        return layer

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
        field: Sizes,
        effective_stride: Sizes,
    ) -> Layer:
        self.budget.count_layer(scope, pos)
        params = kind.param_count(args, shape)
        self.budget.check_params(kind, params, pos, scope)
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
        words = AXIS_WORDS[shape.spatial_rank]
        for axis, (size, word) in enumerate(zip(shape.spatial, words, strict=True)):
            dropped = window.dropped_pixels(size, axis)
            if dropped:
                problems.append((f"{window.arithmetic(size, axis)} leaves the last {dropped} input", word))
        if problems:
            # Axes with the same arithmetic are said once: `... leaves the last 1 input rows and columns unread`.
            merged: dict[str, list[str]] = {}
            for text, word in problems:
                merged.setdefault(text, []).append(word)
            problems_text = [f"{text} {' and '.join(axis_words)} unread" for text, axis_words in merged.items()]
            severity: Severity = "error" if self.strict else "warning"
            general = "change pad, stride or kernel so that (N - F + 2P)/S + 1 is whole, or crop the input"
            fix = _fit_fix(window, shape.spatial)
            self.sink.add(
                severity,
                f"{kind.name} doesn't fit its input {shape}: " + "; ".join(problems_text),
                call.pos,
                f"{fix} (or {general})" if fix else general,
                scope.notes(),
            )

    def _try_eval(self, expr: ast.Expr, scope: Scope, shape: Shape | None) -> None:
        """Check an expression whose value is not needed (the arguments of an unknown layer)."""
        report_errors(self.sink, scope, partial(evaluate, expr, scope, shape))


def _totals(children: Iterable[Node]) -> dict[str, int]:
    """A container's params, buffers and MACs: its children's, summed (a merge has none of its own)."""
    params = buffers = macs = 0
    for child in children:
        params, buffers, macs = params + child.params, buffers + child.buffers, macs + child.macs
    return {"params": params, "buffers": buffers, "macs": macs}


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


AXIS_WORDS = {1: ("samples",), 2: ("rows", "columns"), 3: ("frames", "rows", "columns")}
"""What a fit warning calls the input's positions along each spatial axis, by the number of axes."""


def _widest(states: list[State]) -> tuple[Sizes, Sizes]:
    """The largest receptive field and effective stride over merged branches, per axis."""
    axes = range(len(states[0].field))
    return (
        tuple(max(s.field[a] for s in states) for a in axes),
        tuple(max(s.effective_stride[a] for s in states) for a in axes),
    )


def _fit_fix(window: Window, sizes: Sizes) -> str | None:
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
        return texts[0] if len(set(texts)) == 1 else " and ".join(texts)

    def setting(name: str, values: Sizes) -> str:
        return f"{name}={values[0]}" if len(set(values)) == 1 else f"{name}=({', '.join(map(str, values))})"

    def bumped(values: Sizes, delta: int) -> Sizes:
        """`values` changed by `delta` on the axes that drop pixels."""
        drops = [bool(window.dropped_pixels(size, axis)) for axis, size in enumerate(sizes)]
        return tuple(v + delta if drop else v for v, drop in zip(values, drops, strict=True))

    for extra in range(1, max(window.stride) + 1):
        candidate = replace(window, pad=bumped(window.pad, extra))
        if all(2 * candidate.pad[axis] <= candidate.span(axis) for axis in range(len(sizes))) and fits(candidate):
            return f"{setting('pad', candidate.pad)} gives {arithmetic(candidate)}"
    for delta in (1, -1, 2, -2):
        candidate = replace(window, kernel=bumped(window.kernel, delta))
        if min(candidate.kernel) >= 1 and fits(candidate):
            return f"{setting('kernel', candidate.kernel)} gives {arithmetic(candidate)}"
    return None


def _with_index(scope: Scope, index: str | None, value: Value) -> Scope:
    """The scope of an iteration of `x N as i`: `i` is the iteration's number (POISON when the body is only checked)."""
    if index is None:
        return scope
    # ChainMap only reads the scope's values: a read-only mapping serves.
    return Scope(ChainMap({index: value}, cast("MutableMapping[str, Value]", scope.values)), scope.calls)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
