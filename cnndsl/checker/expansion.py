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
from typing import NamedTuple, cast

from .. import receptive, syntax
from ..errors import DiagnosticSink, Position, Severity, TooManyErrors
from ..expr import BLOCK_PARAMETER, IN_CHANNELS, LayerExprs, Term, params_of, substitute
from ..expr import param as parameter_term
from ..ir import Layer, Node, Parallel, Reference, Sequence, SequenceRole, walk
from ..layers import KINDS, LayerError, LayerKind, MergeKind, lookup
from ..layers.base import REQUIRED, ArgSpec, TensorRef, check_input_rank, check_spelling_rank, format_value
from ..layers.upsample import ConvTranspose
from ..limits import MAX_ERRORS
from ..names import GROUP_STEM, REFERENCE_STEM, REPEAT_STEM, element_names, snake_case
from ..receptive import Field
from ..shapes import Shape, Sizes, Window
from ..terms import merged_terms, output_terms
from .binding import Binder, Defaults
from .budget import Abort, Budget
from .functions import define_functions, whole_count
from .header import (
    collect_defaults,
    input_shape,
    layer_names,
    network_params,
    split_program,
    written_input_shape,
    written_params,
)
from .references import INPUT, Entry, Namespace, declared_labels, define, unresolved
from .symbolic import resolved_terms, term_of
from .values import POISON, Scope, Value, Word, call_text, evaluate, free_names, names_text, plain, report_errors, suggest

MERGES = {name.lower(): kind for name, kind in KINDS.items() if isinstance(kind, MergeKind)}


@dataclass
class State:
    """What flows between elements: the shape (None once unknown) and the receptive field."""

    shape: Shape | None
    field: Field = receptive.identity(2)
    """Per spatial axis of the input ((L,), (H, W), (D, H, W)); two axes for a flat input, as ever."""
    channels: Term = None
    """The term of the shape's channels (features) when a network parameter reaches them (checker/symbolic.py)."""
    size: frozenset[str] = frozenset()
    """The network parameters the image's height and width may depend on."""

    def channels_term(self) -> Term:
        return self.channels if self.channels is not None else (self.shape[0] if self.shape is not None else None)

    def copy(self) -> State:
        return State(self.shape, self.field, self.channels, self.size)


class Site(NamedTuple):
    """Where a node stands: its name, module path, label and source position."""

    name: str
    path: str
    label: str | None
    pos: Position


class Heading(NamedTuple):
    """What a sequence is: its role, the title the source wrote, and for a block call the block and its arguments."""

    role: SequenceRole
    title: str
    block: str | None = None
    block_args: dict[str, Value] | None = None


class Inferred(NamedTuple):
    """A layer's input and output shapes and its receptive field, once inferred."""

    in_shape: Shape
    out_shape: Shape
    field: Field


@dataclass
class BlockInfo:
    """A block's signature, made once; and its defaults that are the same at every call, once evaluated."""

    signature: str
    specs: tuple[ArgSpec, ...]
    by_name: dict[str, syntax.Param]
    required: list[syntax.Param]
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
    outputs: list[Reference] | None = None
    """The `output` line's tensors, in order; None: the body's last element."""
    structural: frozenset[str] = frozenset()
    """Parameters that decide what the IR's expressions cannot say: a repetition count (which layers
    exist), or another parameter's default. Code generation cannot vary them."""
    written_params: dict[str, Value] | None = None
    """The parameters' values as the source writes them (header.written_params)."""
    written_input: Shape | None = None
    """The `input` line's shape (header.written_input_shape)."""


class Checker:
    def __init__(
        self,
        program: syntax.Program,
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
        self.blocks: dict[str, syntax.BlockDef] = {}
        self.defaults: Defaults = {}
        self.budget = Budget(sink, self.blocks)
        self.binder = Binder(sink)
        self._block_infos: dict[str, BlockInfo] = {}
        self._network_values: dict[str, Value] = {}
        self._symbols: dict[str, Term] = {}
        """Each network parameter's term (itself); empty without parameters: then no term is built."""
        self._structural: set[str] = set()
        self._symbolic = False
        """Whether terms are recorded here (cnndsl.checker.symbolic): inside a block call, over the block's own
        parameters and input channels (`param("block:c")`, `param("in_channels:")`), from which code generation
        writes one class per block; outside blocks, when the network has parameters."""
        self._reach: dict[str, frozenset[str]] = {}
        """Inside a block call of a network with parameters: the network parameters that reach each of the
        block's own terms' names (`block:c`, `in_channels:`), for the parameters that decide a repetition count."""
        self._unrun_checked: set[int] = set()
        """The ids of the repetitions and merge branches (AST nodes, alive during the check) whose body was
        checked without building it (`x 0`, a branch whose condition is false)."""
        """The network's parameters, and the file's functions (`functions.define_functions`)."""
        self._namespace: Namespace | None = None
        self._declared_by_block: dict[str, dict[str, Position]] = {}
        self._own_terms_by_block: dict[str, dict[str, Term]] = {}
        # The element names of each sequence in the text, by the identity of its AST items (kept
        # alive beside the names, so an id is never reused): they depend on the text alone, and a
        # block body or a repeated group is expanded once per call or iteration.
        self._names_by_items: dict[int, tuple[object, list[str]]] = {}

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
        self._symbols = {name: parameter_term(name) for name, value in params.items() if value is not POISON}
        self._symbolic = bool(self._symbols)
        if network is not None:  # a default that reads another parameter ties the two together
            for declared in network.params:
                names = free_names(declared.default) if declared.default is not None else set()
                read = (set(params) if names is None else names) & params.keys() - {declared.name}
                if read:
                    self._structural |= {declared.name, *read}
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
        scope = Scope(self._network_values, symbols=self._symbols)
        state = State(shape, receptive.identity(shape.spatial_rank if shape is not None and shape.has_space else 2))
        namespace = self._namespace = Namespace(None, state.copy(), declared_labels(body))
        children = self._sequence(body, scope, state, "")
        outputs = self._outputs(header.output, namespace, scope) if header.output is not None else None
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
        site = Site("", "", None, body[0].pos if body else Position(1, 1))
        root = self._make_sequence(site, shape, state.shape, children, Heading("network", name))
        for ref in [*namespace.input_refs, *(outputs or [])]:
            if ref.of_input:
                ref.source = root
        if outputs is None:
            self._logits_warning(root)
        written = written_params(network, self.param_overrides, params)
        written_input = written_input_shape(input_decl) if self.input_override is not None else shape
        return CheckResult(name, shape, root, dict(params), outputs, frozenset(self._structural), written, written_input)

    def _outputs(self, decl: syntax.OutputDecl, namespace: Namespace, scope: Scope) -> list[Reference] | None:
        """The `output` line's tensors: labels of the network's body (or `input`), each a Reference outside the tree."""
        outputs: list[Reference] = []
        seen: dict[str, Position] = {}
        complete = True
        for item in decl.names:
            if item.label in seen:
                first = seen[item.label]
                self.sink.error(
                    f"`{item.label}` is an output twice",
                    item.pos,
                    f"it is already listed at line {first.line}, column {first.column}; list each output once",
                )
                complete = False
                continue
            seen[item.label] = item.pos
            listed = self._output_listed(item, scope)
            # Resolved even when its condition is false: a misspelt name is an error whatever the parameters.
            ref = self._resolve(
                syntax.Reference(item.label, False, item.pos),
                namespace,
                State(None),
                item.label,
                "",
                scope,
                f"output {item.label}",
            )
            if ref is None or listed is None:
                complete = False
            elif listed:
                outputs.append(ref)
        if complete and not outputs:
            self.sink.error(
                "the `output` line lists no output: every name's condition is false",
                decl.pos,
                "list the network's main output without a condition (`output logits, aux if aux`)",
            )
            return None
        return outputs if complete else None

    def _output_listed(self, item: syntax.OutputName, scope: Scope) -> bool | None:
        """Whether an `output` name is listed: its condition's value (true without one), None after an error."""
        if item.condition is None:
            return True
        condition = item.condition
        value = report_errors(self.sink, scope, lambda: evaluate(condition, scope, None))
        if value is POISON:
            return None
        if not isinstance(value, bool):
            example = f"a boolean parameter or a comparison: `{item.label} if aux`, `{item.label} if heads > 0`"
            # An unknown name reads as a bare word: most likely a misspelt parameter.
            known = suggest(value.text, scope.values) if isinstance(value, Word) else None
            self.sink.error(
                f"the condition of output `{item.label}` must be true or false; got {format_value(plain(value))}",
                condition.pos,
                known or example,
            )
            return None
        return value

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

    def _sequence(
        self, items: tuple[syntax.Element, ...] | list[syntax.Element], scope: Scope, state: State, path: str
    ) -> list[Node]:
        self.budget.count_node(scope, None)
        cached = self._names_by_items.get(id(items))
        if cached is None:
            written = list(items)
            names = element_names(
                [item.label if isinstance(item, syntax.Labeled) else None for item in written], [_stem(item) for item in written]
            )
            cached = self._names_by_items[id(items)] = (items, names)
        nodes: list[Node] = []
        for item, name in zip(items, cached[1], strict=True):
            self.budget.last_pos = item.pos
            node = self._element(item, scope, state, name, _join(path, name), 0)
            if node is not None:
                nodes.append(node)
        return nodes

    def _element(self, el: syntax.Element, scope: Scope, state: State, name: str, path: str, depth: int) -> Node | None:
        self.budget.check_nesting(depth, el.pos)
        label = None
        label_pos = el.pos
        while isinstance(el, syntax.Labeled):
            if label is not None:
                self.sink.error("an element has two labels", el.pos, "give each element one label")
            label = el.label
            el = el.body
        if label is None or self._namespace is None:
            return self._unlabeled(el, scope, state, name, path, label, depth, None)
        entry = define(self.sink, self._namespace, label, label_pos)
        iterations: list[tuple[Node, State]] | None = [] if isinstance(el, syntax.Repeat) else None
        node = self._unlabeled(el, scope, state, name, path, label, depth, iterations)
        entry.node, entry.state, entry.done, entry.iterations = node, state.copy(), True, iterations
        return node

    def _unlabeled(
        self,
        el: syntax.Element,
        scope: Scope,
        state: State,
        name: str,
        path: str,
        label: str | None,
        depth: int,
        iterations: list[tuple[Node, State]] | None,
    ) -> Node | None:
        if isinstance(el, syntax.Reference):
            if label is not None:
                self.sink.error(
                    f"a reference cannot be labelled: `@{el.label}` already has the name `{el.label}`",
                    el.pos,
                    f"write `@{el.label}` where you would write `@{label}`",
                    scope.notes(),
                )
            if el.every:
                self.sink.error(
                    f"`@{el.label}*` stands only as a whole branch of a merge",
                    el.pos,
                    f"it yields one tensor per iteration: `Concat[@a | @{el.label}*]`",
                    scope.notes(),
                )
                state.shape = None
                return None
            assert self._namespace is not None
            return self._resolve(el, self._namespace, state, name, path, scope)
        if isinstance(el, syntax.Call):
            return self._call(el, scope, state, name, path, label)
        if isinstance(el, syntax.Group):
            start = state.shape
            children = self._sequence(el.items, scope, state, path)
            return self._finish_sequence(Site(name, path, label, el.pos), start, state, children, Heading("group", "[...]"))
        if isinstance(el, syntax.Merge):
            return self._merge(el, scope, state, name, path, label, depth)
        if isinstance(el, syntax.Repeat):
            return self._repeat(el, scope, state, name, path, label, depth, iterations)
        raise AssertionError(f"unknown element {el!r}")

    def _finish_sequence(
        self, site: Site, start: Shape | None, state: State, children: list[Node], heading: Heading
    ) -> Sequence | None:
        """The sequence of `children` from `start` to the state's shape; None when either is unknown (after an error)."""
        if start is None or state.shape is None:
            return None
        return self._make_sequence(site, start, state.shape, children, heading)

    @staticmethod
    def _make_sequence(site: Site, start: Shape, out: Shape, children: list[Node], heading: Heading) -> Sequence:
        return Sequence(
            site.name,
            site.path,
            site.label,
            site.pos,
            start,
            out,
            **_totals(children),
            role=heading.role,
            children=children,
            title=heading.title,
            block=heading.block,
            block_args=heading.block_args,
        )

    def _merge(
        self, el: syntax.Merge, scope: Scope, state: State, name: str, path: str, label: str | None, depth: int
    ) -> Node | None:
        kind = MERGES.get(el.op.lower())
        if kind is None:
            hint = suggest(el.op, [k.name for k in MERGES.values()]) or "`name[ a | b ]` is a merge: Add, Concat or Mul"
            self.sink.error(f"unknown merge `{el.op}`", el.pos, hint)
        start = state.shape
        branches: list[Sequence] = []
        ends: list[State] = []
        condition_terms: list[Term] = []
        index = 0
        for branch in el.branches:
            if branch.condition is not None:
                present = self._branch_present(branch.condition, scope, state, condition_terms)
                if present is None:
                    ends.append(State(None))  # the error is reported; the merge's shape is unknown
                    continue
                if not present:
                    self._leave_out(branch, scope, path)
                    continue
            every = branch.items[0] if len(branch.items) == 1 and isinstance(branch.items[0], syntax.Reference) else None
            if every is not None and every.every:
                for node, end in self._every_iteration(every, scope):
                    ends.append(end.copy())
                    if start is not None and node is not None:
                        ref = Reference(
                            "0", _join(_join(path, str(index)), "0"), None, every.pos, start, node.out_shape, source=node
                        )
                        branches.append(
                            Sequence(str(index), _join(path, str(index)), None, every.pos, start, node.out_shape, children=[ref])
                        )
                    index += 1
                continue
            branch_state = State(start, state.field, state.channels, state.size)
            children = self._sequence(branch.items, scope, branch_state, _join(path, str(index)))
            ends.append(branch_state)
            site = Site(str(index), _join(path, str(index)), None, branch.pos)
            node = self._finish_sequence(site, start, branch_state, children, Heading("group", "branch"))
            if node is not None:
                branches.append(node)
            index += 1
        if kind is not None and el.branches and not ends:
            self.sink.error(
                f"every branch of {kind.name}[...] is left out: each one's condition is false",
                el.pos,
                f"a merge needs a branch: give one no condition (`{kind.name}[a | b if flag]` keeps `a` always)",
                scope.notes(),
            )
        if kind is None or start is None or not ends or any(s.shape is None for s in ends):
            state.shape = None
            return None
        shapes = [s.shape for s in ends if s.shape is not None]
        field = receptive.union([s.field for s in ends])
        try:
            out = kind.merge(shapes)
        except LayerError as err:
            notes = _branch_notes(branches, err.branch) if err.branch is not None else []
            # A transposed convolution one pixel short of its skip (an odd size halved) says which output_pad fits.
            fix = _transposed_fix(branches, err.branch) if err.branch is not None else None
            merge_hint = f"{err.hint}: {fix}" if fix and err.hint else fix or err.hint
            self.sink.error(err.message, el.pos, merge_hint, [*notes, *scope.notes()])
            # Go on with the shape the merge would give once fixed: later mistakes are independent of this one.
            state.shape, state.field = err.recovered, field
            return None
        # A branch that broadcasts (a squeeze-excitation gate's 1x1 map) scales the other
        # branches' pixels without moving where they come from: only full-size branches count.
        spatial = [s for s in ends if s.shape is not None and s.shape.has_space and s.shape.spatial == out.spatial]
        field = receptive.union([s.field for s in spatial or ends])
        merge = self._new_layer(kind, {}, Site(name, path, label, el.pos), Inferred(shapes[0], out, field), scope)
        if self._symbolic:
            channels, size = merged_terms(kind.name, [(s.channels_term(), s.size) for s in ends], out)
            if params_of(channels) or size or any(s.channels is not None or s.size for s in ends):
                merge.terms = LayerExprs({}, ends[0].channels_term(), ends[0].size, channels, size)
            state.channels, state.size = (channels if params_of(channels) else None), size
        state.shape, state.field = out, field
        node = Parallel(
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
        node.condition_terms = tuple(condition_terms)
        return node

    def _branch_present(self, condition: syntax.Expr, scope: Scope, state: State, terms: list[Term]) -> bool | None:
        """Whether a merge branch with `if condition` is present: the condition's value, None after an error.
        A network parameter it reads decides which layers exist: it is structural, as a repetition count's."""
        value = report_errors(self.sink, scope, lambda: evaluate(condition, scope, state.shape))
        if value is POISON:
            return None
        if not isinstance(value, bool):
            # An unknown name reads as a bare word: most likely a misspelt parameter.
            example = "a boolean parameter or a comparison: `Add[a | Identity if shortcut]`, `| b if depth > 1`"
            if isinstance(value, Word):
                example = suggest(value.text, scope.values) or f"`{value.text}` names no parameter here; {example}"
            self.sink.error(
                f"the condition of a merge branch must be true or false; got {format_value(plain(value))}",
                condition.pos,
                example,
                scope.notes(),
            )
            return None
        if self._symbolic:
            term = term_of(condition, scope, state.shape, state.channels_term())
            self._structural |= {p for p in params_of(term) if ":" not in p}
            terms.append(term)
        return value

    def _absent_labels(self, items: Iterable[syntax.Element], reason: str) -> None:
        """Mark the labels of elements that are not built, so that a reference to one says why."""
        if self._namespace is None:
            return
        for label, pos in declared_labels(items).items():
            self._namespace.entries[label] = Entry(pos, None, State(None), True, absent=reason)

    def _leave_out(self, branch: syntax.Group, scope: Scope, path: str) -> None:
        """A branch whose condition is false builds nothing. Its body is still checked once, for the
        mistakes that do not depend on its input (a misspelt layer), as an unrun `x 0`'s is; its
        labels name no tensor (`absent_labels`)."""
        if id(branch) not in self._unrun_checked:
            self._unrun_checked.add(id(branch))
            every = branch.items[0] if len(branch.items) == 1 and isinstance(branch.items[0], syntax.Reference) else None
            if every is not None and every.every:
                self._every_iteration(every, scope)  # `@m*` stands as a whole branch: only its label to check
            else:
                self._sequence(branch.items, scope, State(None), _join(path, "absent"))
        self._absent_labels(branch.items, "its merge branch's condition is false")

    def _every_iteration(self, ref: syntax.Reference, scope: Scope) -> list[tuple[Node | None, State]]:
        """`@m*`: every iteration of the labelled repetition `m`, each with its state (one poisoned entry when wrong)."""
        assert self._namespace is not None
        entry = self._namespace.entries.get(ref.label)
        if entry is None or not entry.done or entry.absent is not None:
            unresolved(self.sink, self._namespace, ref, scope.notes())
            return [(None, State(None))]
        if entry.iterations is None:
            self.sink.error(
                f"`@{ref.label}*` needs a repetition, and `{ref.label}` labels no `x N`",
                ref.pos,
                f"`@{ref.label}` is its one tensor; `@name*` is every iteration of `name: [...] x n`",
                scope.notes(),
            )
            return [(None, State(None))]
        if entry.node is None or not entry.iterations:
            return [(None, State(None))]
        return [(node, end) for node, end in entry.iterations]

    def _resolve(
        self, ref: syntax.Reference, namespace: Namespace, state: State, name: str, path: str, scope: Scope, written: str = ""
    ) -> Reference | None:
        """`@label`: a Reference to the label's node (or to the body's input); the state continues from it."""
        in_shape = state.shape
        if ref.label == INPUT:
            found: Entry | None = Entry(ref.pos, None, namespace.input_state, True)
        else:
            found = namespace.entries.get(ref.label)
            if found is None or not found.done or found.absent is not None:
                unresolved(self.sink, namespace, ref, scope.notes(), written)
                state.shape = None
                return None
        assert found is not None and found.state is not None
        state.shape, state.field = found.state.shape, found.state.field
        state.channels, state.size = found.state.channels, found.state.size
        if state.shape is None or (ref.label != INPUT and found.node is None):
            state.shape = None  # the labelled element had an error, already reported
            return None
        node = Reference(
            name,
            path,
            None,
            ref.pos,
            in_shape or state.shape,
            state.shape,
            # `@input`'s source is the body's node, made once the body is complete (see input_refs).
            source=cast(Node, found.node),
            of_input=ref.label == INPUT,
        )
        if node.of_input:
            namespace.input_refs.append(node)
        return node

    def _repeat(
        self,
        el: syntax.Repeat,
        scope: Scope,
        state: State,
        name: str,
        path: str,
        label: str | None,
        depth: int,
        iterations_out: list[tuple[Node, State]] | None = None,
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
        count_term: Term = count
        if count is not None:
            self.budget.check_repeat_count(count, el.count.pos, scope)
            if self._symbolic:  # the count decides which layers exist: no expression says that
                count_term = term_of(el.count, scope, state.shape, state.channels_term())
                self._structural |= self._network_params(count_term)
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
            if count == 0:
                self._absent_labels([el.body], "it is in a repetition run 0 times")
            if count is None:
                state.shape = None
                return None
        for index in range(count):
            before = self.budget.leaf_count
            inner = _with_index(scope, el.index_name, index)
            node = self._element(el.body, inner, state, str(index), _join(path, str(index)), depth + 1)
            if node is not None:
                iterations.append(node)
                if iterations_out is not None:
                    iterations_out.append((node, state.copy()))
            if index == 0:
                self.budget.check_repeat(before, self.budget.leaf_count - before, count, False, el.pos, scope)
            if state.shape is None:
                break
        node = self._finish_sequence(Site(name, path, label, el.pos), start, state, iterations, Heading("repeat", f"x {count}"))
        if node is not None:
            node.count_term = count_term if params_of(count_term) else count
            node.reads_index = el.index_name is not None
        return node

    def _call(self, call: syntax.Call, scope: Scope, state: State, name: str, path: str, label: str | None) -> Node | None:
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
        self, block: syntax.BlockDef, call: syntax.Call, scope: Scope, state: State, name: str, path: str, label: str | None
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
            todo: Iterable[syntax.Param] = block.params
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
        symbols: Mapping[str, Term] = self._symbols
        caller_terms: dict[str, Term] = {}
        entry_channels, entry_size = state.channels_term(), state.size
        outer_symbolic, outer_reach = self._symbolic, self._reach
        if ok:  # the body's terms over the block's own parameters and input channels (Layer.terms)
            bound_terms = self._block_symbols(block, bound, values, scope, state) if outer_symbolic else {}
            caller_terms = {p.name: bound_terms.get(p.name, local[p.name]) for p in block.params}
            if self._symbols:
                reach = {BLOCK_PARAMETER + p: self._network_params(term) for p, term in caller_terms.items()}
                reach[IN_CHANNELS] = self._network_params(entry_channels)  # both over the caller's names
                self._reach = reach
            own_terms = self._own_terms_by_block.get(block.name)
            if own_terms is None:  # the same for every call: made once (a block of many parameters is called many times)
                own_terms = self._own_terms_by_block[block.name] = {
                    p.name: parameter_term(BLOCK_PARAMETER + p.name) for p in block.params
                }
            symbols = ChainMap(own_terms, self._symbols)
            state.channels, state.size = parameter_term(IN_CHANNELS), frozenset()
            self._symbolic = True
        inner = Scope(values, (*scope.calls, (block.name, text, call.pos)), symbols)
        start = state.shape
        if not ok:
            state.shape = None
        body = block.body
        while isinstance(body, syntax.Labeled):
            body = body.body
        items = body.items if isinstance(body, syntax.Group) else (block.body,)
        declared = self._declared_by_block.get(block.name)
        if declared is None:
            declared = self._declared_by_block[block.name] = declared_labels(items)
        outer = self._namespace
        namespace = self._namespace = Namespace(block.name, state.copy(), declared, outer)
        try:
            if isinstance(body, syntax.Group):
                children = self._sequence(body.items, inner, state, path)
            else:  # one element, named as the only element of a sequence is
                own_label = block.body.label if isinstance(block.body, syntax.Labeled) else None
                own = element_names([own_label], [_stem(block.body)])[0]
                node = self._element(block.body, inner, state, own, _join(path, own), 0)
                children = [node] if node is not None else []
        finally:
            self._namespace = outer
            self._symbolic, self._reach = outer_symbolic, outer_reach
        if ok:
            self._leave_block(caller_terms, entry_channels, entry_size, state)
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
        site = Site(name, path, label, call.pos)
        node = self._finish_sequence(site, start, state, children, Heading("block", title, block.name, args))
        for ref in namespace.input_refs:
            if node is not None:
                ref.source = node
        if node is not None:
            node.call_terms = caller_terms
            node.call_keys = {(a.name or str(i)): (a.name or block.params[i].name) for i, a in enumerate(call.args)}
            node.in_channels_term = entry_channels
        return node

    def _network_params(self, term: Term) -> frozenset[str]:
        """The network parameters that reach a term recorded here (through the block's own names, `_reach`)."""
        found: set[str] = set()
        for name in params_of(term):
            found |= self._reach.get(name, frozenset()) if ":" in name else {name}
        return frozenset(found)

    @staticmethod
    def _leave_block(block_terms: Mapping[str, Term], entry_channels: Term, entry_size: frozenset[str], state: State) -> None:
        """The state after a block call: its terms over the caller's parameters again."""
        # Only the names the output's terms read: a call binds every parameter, the output reads few.
        read = state.size | (params_of(state.channels_term()) if state.shape is not None else frozenset())
        values: dict[str, Term] = {
            name: block_terms[name.removeprefix(BLOCK_PARAMETER)]
            for name in read
            if name.startswith(BLOCK_PARAMETER) and name.removeprefix(BLOCK_PARAMETER) in block_terms
        }
        values[IN_CHANNELS] = entry_channels
        if state.shape is not None:
            channels = substitute(state.channels_term(), values, state.shape[0])
            state.channels = channels if params_of(channels) else None
        size = set(entry_size)  # what the input's size depended on may still reach the output's
        for name in state.size:
            size |= params_of(values[name]) if name in values else {name}
        state.size = frozenset(size)

    def _block_symbols(
        self,
        block: syntax.BlockDef,
        bound: Mapping[str, syntax.Arg] | None,
        values: Mapping[str, Value],
        scope: Scope,
        state: State,
    ) -> Mapping[str, Term]:
        """The terms of a call's block parameters (beside their values), shadowing the network's."""
        local: dict[str, Term] = {}
        symbols = ChainMap(local, self._symbols)
        channels = state.channels_term()
        for param in block.params:
            if bound is not None and param.name in bound:
                local[param.name] = term_of(bound[param.name].value, scope, state.shape, channels)
            elif param.default is not None:
                default_scope = Scope(values, scope.calls, symbols)
                local[param.name] = term_of(param.default, default_scope, state.shape, channels)
        return symbols

    def _default_value(
        self, block: syntax.BlockDef, param: syntax.Param, values: Mapping[str, Value], scope: Scope, shape: Shape | None
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

    def _block_info(self, block: syntax.BlockDef) -> BlockInfo:
        """What every call of `block` needs, made once per block."""
        info = self._block_infos.get(block.name)
        if info is None:
            signature = f"{block.name}({names_text([p.name + ('=...' if p.default else '') for p in block.params])})"
            specs = tuple(ArgSpec(p.name, "float", REQUIRED if p.default is None else p.default) for p in block.params)
            required = [p for p in block.params if p.default is None]
            by_name: dict[str, syntax.Param] = {}
            for param in block.params:
                by_name.setdefault(param.name, param)
            info = self._block_infos[block.name] = BlockInfo(
                signature, specs, by_name, required, len(block.params) - len(required), {}
            )
        return info

    # -- layers ------------------------------------------------------------------------

    def _layer(
        self, kind: LayerKind, call: syntax.Call, scope: Scope, state: State, name: str, path: str, label: str | None
    ) -> Layer | None:
        shape = state.shape
        symbolic = self._symbolic
        bound_args = self.binder.layer_args(
            kind,
            call,
            scope,
            shape,
            self.defaults,
            self._network_values,
            self._symbols if symbolic else None,
            state.channels_term() if symbolic else None,
        )
        # References among the arguments are checked even after an earlier error left the shape unknown.
        arg_refs = self._tensor_arguments(kind, bound_args.values, scope, shape, path) if bound_args is not None else None
        if bound_args is None or arg_refs is None or shape is None:
            state.shape = None
            return None
        args, arg_pos = bound_args.values, bound_args.positions
        for arg_name, ref in arg_refs.items():
            args[arg_name] = TensorRef(f"@{args[arg_name].label}", ref.out_shape)
        before = args
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
        field = kind.receptive(args, shape, state.field)
        layer = self._new_layer(kind, args, Site(name, path, label, call.pos), Inferred(shape, out, field), scope)
        layer.arg_refs = arg_refs
        if symbolic:
            self._record_terms(layer, kind, before, bound_args.terms, state)
        state.shape, state.field = out, field
        return layer

    @staticmethod
    def _record_terms(layer: Layer, kind: LayerKind, before: Mapping[str, Value], terms: dict[str, Term], state: State) -> None:
        """The layer's expressions (cnndsl.expr.LayerExprs) and what reaches the next layer's input."""
        assert state.shape is not None
        arg_terms = resolved_terms(before, layer.args, terms) if terms else {}
        channels = state.channels_term()
        out_channels, out_size = output_terms(kind, layer.args, arg_terms, state.shape, layer.out_shape, channels, state.size)
        if arg_terms or state.channels is not None or state.size:
            layer.terms = LayerExprs(arg_terms, channels, state.size, out_channels, out_size)
        state.channels = out_channels if params_of(out_channels) else None
        state.size = out_size

    def _tensor_arguments(
        self, kind: LayerKind, args: dict[str, Value], scope: Scope, shape: Shape | None, path: str
    ) -> dict[str, Reference] | None:
        """The arguments that name a tensor (`like=@skip`), resolved in the layer's body as `@skip` is
        there (unknown, not yet computed, across a block: the same positioned errors); None after an error."""
        refs: dict[str, Reference] = {}
        for spec in kind.signature:
            written = args.get(spec.name) if spec.type == "reference" else None
            if not isinstance(written, syntax.Reference):
                continue
            assert self._namespace is not None
            ref = self._resolve(
                written, self._namespace, State(shape), spec.name, _join(path, spec.name), scope, f"{spec.name}=@{written.label}"
            )
            if ref is None:
                return None
            refs[spec.name] = ref
        return refs

    def _new_layer(self, kind: LayerKind, args: dict[str, Value], site: Site, inferred: Inferred, scope: Scope) -> Layer:
        shape, out, field = inferred
        self.budget.count_layer(scope, site.pos)
        params = kind.param_count(args, shape)
        self.budget.check_params(kind, params, site.pos, scope)
        return Layer(
            site.name,
            site.path,
            site.label,
            site.pos,
            shape,
            out,
            params=params,
            buffers=kind.buffer_count(args, shape),
            macs=kind.macs(args, shape, out),
            kind=kind,
            args=args,
            receptive_field=receptive.sizes(field),
            effective_stride=receptive.strides(field),
        )

    def _fit_warnings(self, kind: LayerKind, args: dict[str, Value], shape: Shape, call: syntax.Call, scope: Scope) -> None:
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

    def _try_eval(self, expr: syntax.Expr, scope: Scope, shape: Shape | None) -> None:
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
        # The last layer that changed the shape, or a reference after it (which gives its source's shape).
        changed = [n for n, _ in walk(branch) if isinstance(n, Reference) or (isinstance(n, Layer) and n.out_shape != n.in_shape)]
        if changed and isinstance(changed[-1], Reference):
            ref = changed[-1]
            notes.append(
                f"branch {index} gives {branch.out_shape}: `{ref.target_text}` at line {ref.pos.line}, column {ref.pos.column} is {ref.out_shape}"
            )
        elif changed:
            layer = changed[-1]
            assert isinstance(layer, Layer)
            # A transposed convolution shows its arithmetic, as a window's "doesn't fit" shows the lecture's.
            how = f": {layer.kind.size_arithmetic(layer.args, layer.in_shape)}" if isinstance(layer.kind, ConvTranspose) else ""
            notes.append(
                f"branch {index} gives {branch.out_shape}: `{layer.describe}` at line {layer.pos.line}, "
                f"column {layer.pos.column} turns {layer.in_shape} into {layer.out_shape}{how}"
            )
        else:
            notes.append(f"branch {index} gives {branch.out_shape}: it keeps the shape of the merge's input")
    return notes


def _transposed_fix(branches: list[Sequence], odd: int) -> str | None:
    """The output_pad that makes a branch ending in ConvTranspose match branch 0's height and width, if one does."""
    if odd >= len(branches) or not branches or not branches[0].out_shape.has_space:
        return None
    # The last layer that changed the shape (or a reference, which gives its source's), as _branch_notes finds it.
    changed = [
        n for n, _ in walk(branches[odd]) if isinstance(n, Reference) or (isinstance(n, Layer) and n.out_shape != n.in_shape)
    ]
    layer = changed[-1] if changed else None
    if not isinstance(layer, Layer) or not isinstance(layer.kind, ConvTranspose):
        return None
    return layer.kind.size_fix(layer.args, layer.in_shape, branches[0].out_shape.spatial)


AXIS_WORDS = {1: ("samples",), 2: ("rows", "columns"), 3: ("frames", "rows", "columns")}
"""What a fit warning calls the input's positions along each spatial axis, by the number of axes."""


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
    values = ChainMap({index: value}, cast("MutableMapping[str, Value]", scope.values))
    symbols = ChainMap({index: value}, cast("MutableMapping[str, Value]", scope.symbols)) if scope.symbols else scope.symbols
    return Scope(values, scope.calls, symbols)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _stem(el: syntax.Element) -> str:
    """What an unlabelled element of a sequence is named after (cnndsl.names): its layer kind's
    attribute_stem, its block's name in snake_case, or the stem of a group, repetition or reference."""
    if isinstance(el, syntax.Call):
        kind = lookup(el.name)
        return kind.attribute_stem if kind is not None else snake_case(el.name)
    if isinstance(el, syntax.Merge):
        merge = MERGES.get(el.op.lower())
        return merge.attribute_stem if merge is not None else snake_case(el.op)
    if isinstance(el, syntax.Group):
        return GROUP_STEM
    if isinstance(el, syntax.Repeat):
        return REPEAT_STEM
    if isinstance(el, syntax.Reference):
        return REFERENCE_STEM
    return ""  # a labelled element: its label names it
