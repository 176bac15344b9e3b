"""The resource budget: one object that counts what expansion builds and refuses what would exceed a limit.

Layers (`MAX_LAYERS`), layers and groups together (4 x `MAX_LAYERS`), output and parameter
elements (`MAX_ELEMENTS`), block-call depth (`MAX_BLOCK_DEPTH`) and bound block parameters
(`MAX_BLOCK_BINDINGS`), and the expansion estimate: a block call or a repetition that must
expand past the layer budget is refused from a lower bound of its size, before it is
expanded. Every refusal is one positioned error, then `Abort`: checking stops at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from .. import syntax
from ..errors import DiagnosticSink, Position
from ..layers import LayerKind, MergeKind, lookup
from ..limits import MAX_BLOCK_BINDINGS, MAX_BLOCK_DEPTH, MAX_ELEMENTS, MAX_LAYERS, MAX_NESTING
from ..shapes import Shape
from .functions import whole_count
from .values import EvalError, Poisoned, Scope, Value, evaluate, free_names, magnitude

MAX_NODES = 4 * MAX_LAYERS
"""Layers and containers together: thousands of empty branches cannot build an unbounded tree either."""
LAYERS_HINT = "networks are limited to 100,000 layers after expanding blocks and repetition"
SATURATED = 2**63
"""Size estimates stop growing here (they are only compared with the budgets)."""


class Abort(Exception):
    """A resource limit was hit: the error is in the sink; stop checking at once."""


def saturate(n: int) -> int:
    return min(n, SATURATED)


class Budget:
    """What has been built so far, against the limits; `blocks` are the program's block definitions
    (read by the size estimate)."""

    def __init__(self, sink: DiagnosticSink, blocks: dict[str, syntax.BlockDef]) -> None:
        self.sink = sink
        self.blocks = blocks
        self.leaf_count = 0
        self.node_count = 0
        self.binding_count = 0
        self.last_pos = Position(1, 1)
        """The last position expansion reached: where a node-budget error without a position points."""
        self.constants: Mapping[str, Value] = {}
        """Network parameters (and functions) that no block parameter or repetition index hides:
        a repetition count made of them only is known before expanding (`set_constants`)."""
        self._min_size_of_block: dict[str, tuple[int, int]] = {}
        self._min_sizes: dict[int, tuple[syntax.Element, tuple[int, int]]] = {}

    def refuse(self, message: str, pos: Position | None, hint: str | None, scope: Scope | None = None) -> NoReturn:
        self.sink.error(message, pos, hint, scope.notes() if scope is not None else ())
        raise Abort

    # -- counting what is built ---------------------------------------------------------

    def count_node(self, scope: Scope, pos: Position | None) -> None:
        """One more container or layer in the tree."""
        self.node_count += 1
        if self.node_count > MAX_NODES:
            self.refuse(
                f"the network expands to more than {MAX_NODES:,} layers and groups", pos or self.last_pos, LAYERS_HINT, scope
            )

    def count_layer(self, scope: Scope, pos: Position) -> None:
        """One more layer (a leaf or a merge)."""
        self.leaf_count += 1
        self.last_pos = pos
        if self.leaf_count > MAX_LAYERS:
            self.refuse(f"the network expands to more than {MAX_LAYERS:,} layers", pos, LAYERS_HINT, scope)
        self.count_node(scope, pos)

    def count_bindings(self, block: syntax.BlockDef, call: syntax.Call, scope: Scope) -> None:
        """Binding costs one step per parameter and call: bounded, so that a block with thousands
        of defaulted parameters called thousands of times is refused, not slow."""
        self.binding_count += len(block.params)
        if self.binding_count > MAX_BLOCK_BINDINGS:
            self.refuse(
                f"block calls bind more than {MAX_BLOCK_BINDINGS:,} parameters in all "
                f"(`{block.name}` has {len(block.params):,} parameters)",
                call.pos,
                "give blocks fewer parameters, or call them fewer times",
                scope,
            )

    # -- depths and sizes -----------------------------------------------------------------

    def check_nesting(self, depth: int, pos: Position) -> None:
        if depth > MAX_NESTING * 4:
            self.refuse(f"elements nested deeper than {MAX_NESTING * 4} levels", pos, "flatten the structure")

    def check_block_depth(self, call: syntax.Call, scope: Scope) -> None:
        if len(scope.calls) >= MAX_BLOCK_DEPTH:
            self.refuse(f"block calls nested deeper than {MAX_BLOCK_DEPTH}", call.pos, None, scope)

    def check_input(self, shape: Shape, pos: Position | None, given: bool) -> bool:
        """An input shape within `MAX_ELEMENTS` (an error, not an abort: nothing was built yet).
        `given`: it came from --input/the API rather than the `input` line (worded differently)."""
        if shape.numel <= MAX_ELEMENTS:
            return True
        if given:
            self.sink.error(f"the input has more than 2^40 elements ({magnitude(shape.numel)})", pos)
        else:
            self.sink.error(f"the input has {shape.numel:,} elements; the limit is 2^40", pos)
        return False

    def check_output(self, kind: LayerKind, out: Shape, pos: Position, scope: Scope) -> None:
        if out.numel > MAX_ELEMENTS:
            self.refuse(
                f"{kind.name} would produce {out.numel:,} elements ({out}); the limit is 2^40",
                pos,
                "check the channel counts and sizes",
                scope,
            )

    def check_params(self, kind: LayerKind, params: int, pos: Position, scope: Scope) -> None:
        if params > MAX_ELEMENTS:
            self.refuse(f"{kind.name} would have {params:,} parameters; the limit is 2^40", pos, None, scope)

    # -- the expansion estimate -----------------------------------------------------------

    def check_repeat_count(self, count: int, pos: Position, scope: Scope) -> None:
        if count > MAX_LAYERS:
            self.refuse(
                f"repeating {count:,} times exceeds the limit of {MAX_LAYERS:,} layers",
                pos,
                "networks are limited to 100,000 layers after expansion",
                scope,
            )

    def check_repeat(self, before: int, per_iteration: int, count: int, estimated: bool, pos: Position, scope: Scope) -> None:
        """`count` iterations of `per_iteration` layers each, after `before` layers, within MAX_LAYERS
        (`estimated`: a lower bound, before the first iteration is expanded)."""
        if before + per_iteration * count > MAX_LAYERS:
            self.refuse(
                f"this repetition expands to {'at least ' if estimated else ''}{count:,} x {per_iteration:,} = "
                f"{count * per_iteration:,} layers; the limit is {MAX_LAYERS:,}",
                pos,
                "networks are limited to 100,000 layers after expansion",
                scope,
            )

    def refuse_oversized(self, block: syntax.BlockDef, call: syntax.Call, scope: Scope) -> None:
        """Refuse a block call before expanding it when it must exceed the layer or node budget
        (blocks that call the previous one twice double at each level)."""
        leaves, nodes = self.block_min_size(block)
        if self.leaf_count + leaves > MAX_LAYERS or self.node_count + nodes > MAX_NODES:
            at_least = f"{leaves:,} layers" if leaves > MAX_LAYERS else f"{nodes:,} layers and groups"
            if max(leaves, nodes) >= SATURATED:
                at_least = f"more than {SATURATED - 1:,} layers and groups"
            self.refuse(
                f"block `{block.name}` expands to at least {at_least}",
                call.pos,
                f"networks are limited to {MAX_LAYERS:,} layers after expanding blocks and repetition",
                scope,
            )

    def set_constants(self, program: syntax.Program, network_values: Mapping[str, Value]) -> None:
        """The network values every repetition count sees as they are (called once, before expanding)."""
        hidden = {param.name for block in self.blocks.values() for param in block.params}
        stack: list[object] = list(program.items)
        while stack:  # the repetition indexes anywhere in the program
            node = stack.pop()
            if isinstance(node, syntax.Repeat):
                if node.index_name is not None:
                    hidden.add(node.index_name)
                stack.append(node.body)
            elif isinstance(node, (syntax.Labeled, syntax.BlockDef)):
                stack.append(node.body)
            elif isinstance(node, (syntax.Group, syntax.Merge)):
                stack += node.items if isinstance(node, syntax.Group) else node.branches
        self.constants = {name: value for name, value in network_values.items() if name not in hidden}

    def _least_count(self, count: syntax.Expr) -> int:
        """A repetition count known before expanding: a literal, or an expression of network
        parameters that nothing hides; 0 otherwise (`x 0` builds nothing: 0 is a lower bound)."""
        if isinstance(count, syntax.Number):
            value: Value = count.value
        else:
            names = free_names(count)
            if names is None or not names <= self.constants.keys():
                return 0
            try:
                value = evaluate(count, Scope(self.constants), None)
            except (EvalError, Poisoned):
                return 0  # reported when the repetition is expanded
        whole = whole_count(value)
        return max(whole, 0) if whole is not None else 0

    def block_min_size(self, block: syntax.BlockDef) -> tuple[int, int]:
        """(layers, layers and groups) a call of `block` expands to at least, without expanding it."""
        cached = self._min_size_of_block.get(block.name)
        if cached is None:
            self._min_size_of_block[block.name] = (0, 0)  # a recursive call is an error of its own
            cached = self.min_size(block.body, 0)
            self._min_size_of_block[block.name] = cached
        return cached

    def min_size(self, el: syntax.Element, depth: int) -> tuple[int, int]:
        """(layers, layers and groups) `el` expands to at least; each element is sized once."""
        cached = self._min_sizes.get(id(el))
        if cached is not None and cached[0] is el:
            return cached[1]
        size = self._min_size_uncached(el, depth)
        self._min_sizes[id(el)] = (el, size)
        return size

    def _min_size_uncached(self, el: syntax.Element, depth: int) -> tuple[int, int]:
        if depth > MAX_NESTING * 4:  # `_element` refuses this nesting anyway (a lower bound stays one)
            return 0, 0
        while isinstance(el, syntax.Labeled):
            el = el.body
        if isinstance(el, syntax.Call):
            kind = lookup(el.name)
            if kind is not None:
                return (1, 1) if not isinstance(kind, MergeKind) else (0, 0)
            block = self.blocks.get(el.name)
            return self.block_min_size(block) if block is not None else (0, 0)
        if isinstance(el, syntax.Group):
            leaves, nodes = 0, 1
            for item in el.items:
                item_leaves, item_nodes = self.min_size(item, depth + 1)
                leaves, nodes = saturate(leaves + item_leaves), saturate(nodes + item_nodes)
            return leaves, nodes
        if isinstance(el, syntax.Merge):
            leaves, nodes = 1, 1  # the merge itself
            for branch in el.branches:
                if branch.condition is not None:  # left out where the condition is false
                    continue
                branch_leaves, branch_nodes = self.min_size(branch, depth + 1)
                leaves, nodes = saturate(leaves + branch_leaves), saturate(nodes + branch_nodes)
            return leaves, nodes
        if isinstance(el, syntax.Repeat):
            count = self._least_count(el.count)
            leaves, nodes = self.min_size(el.body, depth + 1)
            return saturate(leaves * count), saturate(nodes * count)
        return 0, 0
