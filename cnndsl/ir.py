"""The checked intermediate representation that every backend walks.

A tree of nodes. Every node knows its module path (which is also its PyTorch module
path and state_dict prefix), its input and output shapes, its totals and its source
position. Leaves are `Layer`s; `Sequence`s run their children in order; a `Parallel`
runs its branches on the same input and combines them with its merge layer; a
`Reference` (`@name`) yields the tensor of an earlier node instead of its input.

The tree says what reads what: a node reads its input (the previous sibling's output, or
its parent's input for a first child), except a Reference, which reads its source. The
data edges that follow are explicit in `program` (every step with the steps it reads),
which every backend runs or prints: the NumPy register machine, the torch module of a
network that is a graph, the generated `forward`, the summary's and drawing's skip edges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from .errors import Position
from .expr import LayerExprs
from .layers.base import LayerKind
from .shapes import Shape, Sizes


@dataclass(eq=False)
class Node:
    name: str
    """Last component of the path: the label, or the index within the parent."""
    path: str
    """Dotted module path from the root ("" for the root itself)."""
    label: str | None
    pos: Position
    in_shape: Shape
    out_shape: Shape
    params: int = 0
    buffers: int = 0
    macs: int = 0

    def leaves(self) -> Iterator[Layer]:
        raise NotImplementedError

    def children_nodes(self) -> list[Node]:
        return []


@dataclass(eq=False)
class Layer(Node):
    """One layer: a registry kind with its resolved arguments."""

    kind: LayerKind = field(default=None)  # type: ignore[assignment]
    args: dict[str, Any] = field(default_factory=dict)
    receptive_field: Sizes = (1, 1)
    effective_stride: tuple[Fraction, ...] = (Fraction(1), Fraction(1))
    """Input pixels per output pixel, per axis: a fraction after layers that grow the map (1/2 after Upsample(2))."""
    """Effective stride: input pixels between neighbouring outputs."""
    terms: LayerExprs | None = None
    """How the parameters in scope where it is written reach its arguments and input (cnndsl.expr): inside
    a block, the block's own (`param("block:c")`, `param("in_channels:")`) and the network's; elsewhere
    the network's. None when none does. Over the network's parameters alone: `Network.terms` (cnndsl.terms)."""
    arg_refs: dict[str, Reference] = field(default_factory=dict)
    """The arguments that name a tensor (`Upsample(like=@skip)`), by argument name: References
    outside the tree. The layer reads only their shapes, known when checking (its `args` hold
    what they gave, `size`), so no backend needs the tensors at run time; they are data edges
    all the same, which `program` records (`Step.shape_inputs`) and summaries and drawings show."""

    def leaves(self) -> Iterator[Layer]:
        yield self

    @property
    def describe(self) -> str:
        return self.kind.describe(self.args)

    @property
    def activation_elements(self) -> int:
        return 0 if self.kind.is_view else self.out_shape.numel


@dataclass(eq=False)
class Reference(Node):
    """`@name`: the output of `source` (with `of_input`, the input of `source`, a body: `@input`).

    It has no module and no state; in a sequence, what follows continues from its tensor.
    """

    source: Node = field(default=None)  # type: ignore[assignment]
    of_input: bool = False

    def leaves(self) -> Iterator[Layer]:
        return iter(())

    @property
    def target_text(self) -> str:
        """`@label` as written (the source's label, or `input`)."""
        return "@input" if self.of_input else f"@{self.source.label or self.source.path}"


SequenceRole = Literal["network", "group", "block", "repeat"]


@dataclass(eq=False)
class Sequence(Node):
    """Children run one after another: the network, a group, a block call or a repetition."""

    role: SequenceRole = "group"
    children: list[Node] = field(default_factory=list)
    title: str = ""
    """What the source wrote: `Basic(64)`, `x 2`, `[...]`."""
    block: str | None = None
    block_args: dict[str, Any] | None = None
    call_terms: dict[str, Any] | None = field(default=None, init=False)
    """For a block call: the term (cnndsl.expr) of every block parameter in the caller's scope (see
    `Layer.terms`), by name in definition order; the terms inside the block read its own parameters."""
    call_keys: dict[str, str] = field(default_factory=dict, init=False)
    """For a block call: the arguments the call gave, in order, keyed by keyword or by position ("0",
    "1", ...), each with the parameter it binds."""
    in_channels_term: Any = field(default=None, init=False)
    """For a block call: the term of its input channels in the caller's scope."""
    count_term: Any = field(default=None, init=False)
    """For a repetition: the count's term in its scope."""
    reads_index: bool = field(default=False, init=False)
    """For a repetition: whether it names its index (`x n as i`), so that its iterations may differ
    by more than what the count's term says."""

    def leaves(self) -> Iterator[Layer]:
        for child in self.children:
            yield from child.leaves()

    def children_nodes(self) -> list[Node]:
        return self.children


@dataclass(eq=False)
class Parallel(Node):
    """Branches on the same input, then the merge layer (Add, Concat or Mul)."""

    branches: list[Sequence] = field(default_factory=list)
    merge: Layer = field(default=None)  # type: ignore[assignment]
    condition_terms: tuple[Any, ...] = field(default=(), init=False)
    """For a merge with conditional branches (`| Identity if shortcut`) where terms are recorded (inside
    a block, or in a network with parameters): the terms of their conditions, over the innermost block's
    parameters as `Layer.terms` are, which decide which branches exist (those left out are not in `branches`)."""

    @property
    def op(self) -> str:
        return self.merge.kind.name

    def leaves(self) -> Iterator[Layer]:
        for branch in self.branches:
            yield from branch.leaves()
        yield self.merge

    def children_nodes(self) -> list[Node]:
        return list(self.branches)


def walk(node: Node) -> Iterator[tuple[Node, int]]:
    """Every node with its depth, parents before children (iteratively: trees can be deep)."""
    stack: list[tuple[Node, int]] = [(node, 0)]
    while stack:
        current, depth = stack.pop()
        yield current, depth
        stack.extend((child, depth + 1) for child in reversed(current.children_nodes()))


@dataclass(eq=False)
class Step:
    """One step of a network's data flow: a layer or a merge, the registers it reads, the one it writes."""

    layer: Layer
    inputs: list[int]
    output: int
    shape_inputs: list[int] = field(default_factory=list)
    """Registers whose shape alone the step reads (`Upsample(like=@skip)`, see `Layer.arg_refs`)."""


@dataclass
class Program:
    """The data flow of a network as steps on numbered registers (register 0 is the network input).

    `produced` maps every node to the register of its output and `consumed` to the register it
    reads: the explicit data edges (a Reference's `consumed` is its source's register; the
    references among a layer's arguments are its step's `shape_inputs`).
    """

    steps: list[Step]
    outputs: list[int]
    produced: dict[Node, int]
    consumed: dict[Node, int]
    register_count: int

    def reads(self, node: Node) -> list[int]:
        """The registers a node reads: its input; a merge, each branch's output."""
        if isinstance(node, Parallel):
            return [self.produced[branch] for branch in node.branches]
        return [self.consumed[node]]


def program(root: Sequence, outputs: list[Reference] | None = None) -> Program:
    """The steps in execution order (iteratively: trees can be deep); `outputs` default to the root's output."""
    steps: list[Step] = []
    produced: dict[Node, int] = {}
    consumed: dict[Node, int] = {}
    counter = 0
    # An explicit stack of (node, phase): phase 0 enters a node, phase 1 finishes it.
    stack: list[tuple[Node, int]] = [(root, 0)]
    current = 0  # the register flowing along the current sequence
    while stack:
        node, phase = stack.pop()
        if phase == 0:
            consumed[node] = current
            if isinstance(node, Reference):
                current = consumed[node.source] if node.of_input else produced[node.source]
                produced[node] = current
                continue
            if isinstance(node, Layer):
                counter += 1
                shape_inputs = [consumed[ref.source] if ref.of_input else produced[ref.source] for ref in node.arg_refs.values()]
                steps.append(Step(node, [current], counter, shape_inputs))
                current = produced[node] = counter
                continue
            stack.append((node, 1))
            if isinstance(node, Parallel):
                for branch in reversed(node.branches):
                    stack.append((branch, 0))
                    stack.append((node, 2))  # phase 2: the branch starts from the merge's input
            else:
                assert isinstance(node, Sequence)
                stack.extend((child, 0) for child in reversed(node.children))
        elif phase == 2:
            current = consumed[node]
        elif isinstance(node, Parallel):
            counter += 1
            steps.append(Step(node.merge, [produced[branch] for branch in node.branches], counter))
            current = produced[node] = produced[node.merge] = counter
            consumed[node.merge] = consumed[node]
        else:
            produced[node] = current
    registers = (
        [consumed[ref.source] if ref.of_input else produced[ref.source] for ref in outputs] if outputs else [produced[root]]
    )
    return Program(steps, registers, produced, consumed, counter + 1)
