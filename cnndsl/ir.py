"""The checked intermediate representation that every backend walks.

A tree of nodes. Every node knows its module path (which is also its PyTorch module
path and state_dict prefix), its input and output shapes, its totals and its source
position. Leaves are `Layer`s; `Sequence`s run their children in order; a `Parallel`
runs its branches on the same input and combines them with its merge layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import Position
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
    effective_stride: Sizes = (1, 1)
    """Effective stride: input pixels between neighbouring outputs."""

    def leaves(self) -> Iterator[Layer]:
        yield self

    @property
    def describe(self) -> str:
        return self.kind.describe(self.args)

    @property
    def activation_elements(self) -> int:
        return 0 if self.kind.is_view else self.out_shape.numel


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
