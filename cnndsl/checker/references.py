"""Labels as names of tensors: the namespaces that `@name` references and `output` lines read.

The labels of one body (the network's, or one block call's) form one namespace. A label is
visible once its element completes, to everything after it in the body, nested groups and
branches included; inside a repetition it names the current iteration's node, after it the
last one. A block body sees only its own labels and `@input` (the call's input).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import syntax
from ..errors import DiagnosticSink, Position
from ..ir import Node, Reference
from .values import suggest

if TYPE_CHECKING:
    from .expansion import State

INPUT = "input"
"""`@input`: the input of the enclosing body."""


@dataclass
class Entry:
    """One label of a namespace: its node and the state after it, once the element is complete."""

    pos: Position
    node: Node | None = None
    state: State | None = None
    done: bool = False
    """False while the element is being checked (a reference from inside it is too early)."""
    iterations: list[tuple[Node, State]] | None = None
    """A labelled repetition's iterations (for `@name*`)."""
    absent: str | None = None
    """Why the labelled element is not built (it is in a merge branch whose condition is false, or
    in a repetition run 0 times): a reference to it is an error that says so."""


@dataclass
class Namespace:
    """The labels of one body."""

    block: str | None
    """The block whose call this body is; None for the network."""
    input_state: State
    declared: dict[str, Position]
    """Every label the body's text defines (to tell "later" from "unknown")."""
    parent: Namespace | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    input_refs: list[Reference] = field(default_factory=list)
    """`@input` references, whose source (the body's node) exists only once the body is built."""

    @property
    def where(self) -> str:
        return f"block `{self.block}`" if self.block else "the network"


def declared_labels(items: Iterable[syntax.Element]) -> dict[str, Position]:
    """The labels a body's text defines, first position of each (block calls are other bodies: not entered)."""
    found: dict[str, Position] = {}
    stack: list[syntax.Element] = list(items)
    while stack:
        el = stack.pop()
        if isinstance(el, syntax.Labeled):
            found.setdefault(el.label, el.pos)
            stack.append(el.body)
        elif isinstance(el, syntax.Group):
            stack.extend(el.items)
        elif isinstance(el, syntax.Merge):
            for branch in el.branches:
                stack.extend(branch.items)
        elif isinstance(el, syntax.Repeat):
            stack.append(el.body)
    return found


def define(sink: DiagnosticSink, namespace: Namespace, label: str, pos: Position) -> Entry:
    """Start a labelled element; a second element with the same label in one namespace is an error."""
    entry = namespace.entries.get(label)
    # The same element again is the next iteration of a repetition: the label moves on to it.
    if entry is not None and entry.pos != pos:
        sink.error(
            f"label `{label}` is defined twice in {namespace.where}",
            pos,
            f"the first is at line {entry.pos.line}, column {entry.pos.column}; "
            f"a label names one tensor (`@{label}`) and one module, so labels in one body must differ",
        )
    entry = namespace.entries[label] = Entry(pos)
    return entry


def unresolved(sink: DiagnosticSink, namespace: Namespace, ref: syntax.Reference, notes: list[str], written: str = "") -> None:
    """Report why `@name` (or `written`, the `output` line's name) names no computed tensor here:
    too early, across a block boundary, or unknown."""
    label, written = ref.label, written or f"@{ref.label}{'*' if ref.every else ''}"
    entry = namespace.entries.get(label)
    if entry is not None and entry.absent is not None:
        sink.error(
            f"`{written}` refers to `{label}`, which is not built: {entry.absent}",
            ref.pos,
            f"`{label}` (line {entry.pos.line}, column {entry.pos.column}) exists only where it is built; "
            "refer to it under the same condition, or to an element that always exists",
            notes,
        )
        return
    if entry is not None and not entry.done:
        sink.error(
            f"`{written}` refers to the element it is part of: `{label}` is not computed yet",
            ref.pos,
            f"a reference reads a finished tensor; `{label}` (line {entry.pos.line}, column {entry.pos.column}) "
            f"is still being computed here; `@input` is this body's input",
            notes,
        )
        return
    later = namespace.declared.get(label)
    if later is not None:
        sink.error(
            f"`{written}` refers to `{label}`, which is computed later (line {later.line}, column {later.column})",
            ref.pos,
            "a reference reads only tensors computed before it; move the labelled element up",
            notes,
        )
        return
    outer = namespace.parent
    while outer is not None:
        if label in outer.entries or label in outer.declared:
            sink.error(
                f"`{written}`: the label `{label}` belongs to {outer.where}, outside block `{namespace.block}`",
                ref.pos,
                "a block sees only its own labels and `@input`, its call's input; "
                "pass the tensor in: make it the call's input, or write the merge outside the block",
                notes,
            )
            return
        outer = outer.parent
    known = [INPUT, *(name for name, e in namespace.entries.items() if e.done)]
    hint = suggest(label, known) or "label an element (`name: Conv(64, 3)`) to refer to its tensor by name"
    sink.error(f"unknown label `{label}` in `{written}`", ref.pos, hint, notes)
