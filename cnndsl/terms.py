"""The network's parameters through the IR: how terms flow from layer to layer, and the
network-level terms of a checked network, composed from what the checker recorded.

The checker records each number's term (`cnndsl.expr`) over the parameters in scope where it
is written (`Layer.terms`): inside a block, the block's own (`param("block:c")`) and its input
channels (`param("in_channels:")`), beside the network's; and on each block call, the terms of
its parameters over its caller's scope (`Sequence.call_terms`, `in_channels_term`). Code
generation writes one class per block from these. The network-level terms (each number over
the network's parameters alone: what the network's constructor and cnndsl.weights_match
read) follow by composition: `network_terms` substitutes each call's terms into its body's,
level by level, and runs the flow rules below (`output_terms`, `merged_terms`, which the
checker runs too) along the network's data flow. Nothing is checked again; only a network with
parameters has network-level terms, and they are made on demand (`Network.terms`), not while
checking.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

from .expr import BLOCK_PARAMETER, IN_CHANNELS, LayerExprs, Term, binary, opaque, params_of, substitute
from .ir import Layer, Node, Parallel, Reference, Sequence
from .layers.base import LayerKind
from .shapes import Shape

NOT_SIZES = frozenset({"out", "groups", "multiplier", "bias", "p"})
"""Arguments that never change a layer's output height and width, nor (in `resolve`) another
argument: a parameter reaching only these leaves the image size and the other arguments alone."""


SIZE_SETTING = frozenset({"GlobalAvgPool", "GlobalMaxPool", "AdaptiveAvgPool", "AdaptiveMaxPool"})
"""Kinds whose output height and width their arguments alone decide, whatever their input's."""

CHANNEL_PRESERVING = frozenset({"activation", "norm", "pool", "regularization", "identity"})
"""Families whose kinds keep their input's channels (a flat input's features)."""
SHAPE_PRESERVING = frozenset({"ChannelShuffle"})
"""Kinds of other families that keep their input's channels too."""


def output_terms(
    kind: LayerKind,
    args: Mapping[str, Any],
    terms: Mapping[str, Term],
    shape: Shape,
    out: Shape,
    channels: Term,
    size: frozenset[str],
) -> tuple[Term, frozenset[str]]:
    """The term of a layer's output channels (features) and the parameters its image size may depend on."""
    reaching = frozenset().union(*(params_of(t) for t in terms.values()))
    size_reaching = frozenset().union(*(params_of(t) for name, t in terms.items() if name not in NOT_SIZES))
    if not out.is_image:
        out_size: frozenset[str] = frozenset()
    elif kind.name in SIZE_SETTING:
        out_size = size_reaching
    else:
        out_size = size | size_reaching
    term: Term
    if "out" in args and out[0] == args["out"]:
        term = terms.get("out", out[0])
    elif (
        (kind.family in CHANNEL_PRESERVING or kind.name in SHAPE_PRESERVING)
        and out[0] == shape[0]
        and out.is_image == shape.is_image
    ):
        term = channels
    elif kind.name == "DWConv":
        term = binary("*", channels, terms.get("multiplier", args.get("multiplier")))
    elif kind.name == "Chunk":
        term = binary("//", channels, terms.get("chunks", args.get("chunks")))
    elif kind.name in ("PixelShuffle", "PixelUnshuffle"):
        factor = terms.get("factor", args.get("factor"))
        square = binary("*", factor, factor)
        term = binary("//" if kind.name == "PixelShuffle" else "*", channels, square)
    elif kind.name == "Flatten" and shape.is_image and not size:
        term = binary("*", channels, shape[1] * shape[2])
    elif kind.name == "Flatten" and not shape.is_image:
        term = channels
    else:  # no rule here: constant unless a parameter reaches the layer
        reached = reaching | params_of(channels) | size
        term = opaque(reached, out[0]) if reached else out[0]
    if not params_of(term):
        term = out[0]
    return term, out_size


def merged_terms(op: str, ends: list[tuple[Term, frozenset[str]]], out: Shape) -> tuple[Term, frozenset[str]]:
    """A merge's output channels term and size parameters, from its branches' (Add and Mul: the first
    branch's channels, all being equal; Concat: their sum)."""
    size = frozenset().union(*(s for _, s in ends)) if out.is_image else frozenset()
    if op == "Concat":
        term: Term = 0
        for channels, _ in ends:
            term = binary("+", term, channels) if term != 0 or params_of(term) else channels
    elif op in ("Add", "Mul"):
        term = ends[0][0]
    else:
        reached = frozenset().union(*(params_of(c) for c, _ in ends))
        term = opaque(reached, out[0]) if reached else out[0]
    return (term if params_of(term) else out[0]), size


class NetworkTerms(NamedTuple):
    """A network's terms over its own parameters alone (see the module docstring)."""

    layers: dict[Layer, LayerExprs]
    """Each layer (and merge) that a network parameter reaches: its arguments', input's and output's terms."""
    calls: dict[Sequence, dict[str, Term]]
    """Each block call that a network parameter reaches: the terms of the arguments it gives, keyed by
    keyword, or by position ("0", "1", ...) for positional ones."""


class _Flow(NamedTuple):
    """What reaches a node's input: its channels' term (None: the shape's number) and the parameters its size depends on."""

    channels: Term
    size: frozenset[str]


_CONSTANT = _Flow(None, frozenset())


def network_terms(root: Sequence) -> NetworkTerms:
    """The network-level terms of a checked tree whose network has parameters (see the module docstring).

    It follows the checker's flow of terms exactly: a block call's body continues from its caller's
    channels and size, a reference from its source's, a merge from its branches'."""
    composer = _Composer(NetworkTerms({}, {}), {}, {})
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20_000))  # one level of recursion per level of nesting, and a few more
    try:
        composer.node(root, {}, _CONSTANT)
    finally:
        sys.setrecursionlimit(old_limit)
    return composer.result


class _Composer(NamedTuple):
    result: NetworkTerms
    inputs: dict[Node, _Flow]
    outputs: dict[Node, _Flow]

    def node(self, node: Node, scope: Mapping[str, Term], flow: _Flow) -> _Flow:
        """The flow out of `node` from the flow into it; `scope` gives the network-level term of each
        name its recorded terms read besides the network's parameters (the innermost block's)."""
        self.inputs[node] = flow
        if isinstance(node, Layer):
            out = self.layer(node, scope, flow)
        elif isinstance(node, Parallel):
            out = self.merge(node, scope, flow)
        elif isinstance(node, Reference):
            out = self.inputs[node.source] if node.of_input else self.outputs[node.source]
        else:
            assert isinstance(node, Sequence)
            if node.role == "block":
                scope = self.call(node, scope, flow)
            out = flow
            for child in node.children:
                out = self.node(child, scope, out)
        self.outputs[node] = out
        return out

    def call(self, node: Sequence, scope: Mapping[str, Term], flow: _Flow) -> dict[str, Term]:
        """The scope of a block call's body: its parameters' and input channels' network-level terms."""
        assert node.call_terms is not None and node.block_args is not None
        inner = {BLOCK_PARAMETER + name: _in_scope(term, scope, node.block_args[name]) for name, term in node.call_terms.items()}
        inner[IN_CHANNELS] = flow.channels if flow.channels is not None else node.in_shape[0]
        if any(params_of(inner[BLOCK_PARAMETER + name]) for name in node.call_terms):
            self.result.calls[node] = {key: inner[BLOCK_PARAMETER + name] for key, name in node.call_keys.items()}
        return inner

    def layer(self, layer: Layer, scope: Mapping[str, Term], flow: _Flow) -> _Flow:
        recorded = layer.terms
        args: dict[str, Term] = {}
        if recorded is not None:
            for name, term in recorded.args.items():
                term = _in_scope(term, scope, layer.args[name])
                if params_of(term):
                    args[name] = term
        channels = flow.channels if flow.channels is not None else layer.in_shape[0]
        out, out_size = output_terms(layer.kind, layer.args, args, layer.in_shape, layer.out_shape, channels, flow.size)
        if args or flow.channels is not None or flow.size:
            self.result.layers[layer] = LayerExprs(args, channels, flow.size, out, out_size)
        return _Flow(out if params_of(out) else None, out_size)

    def merge(self, node: Parallel, scope: Mapping[str, Term], flow: _Flow) -> _Flow:
        ends = [self.node(branch, scope, flow) for branch in node.branches]
        terms = [
            (end.channels if end.channels is not None else branch.out_shape[0], end.size)
            for end, branch in zip(ends, node.branches, strict=True)
        ]
        channels, size = merged_terms(node.op, terms, node.out_shape)
        if params_of(channels) or size or any(end.channels is not None or end.size for end in ends):
            self.result.layers[node.merge] = LayerExprs({}, terms[0][0], terms[0][1], channels, size)
        return _Flow(channels if params_of(channels) else None, size)


def _in_scope(term: Term, scope: Mapping[str, Term], value: Any) -> Term:
    """A recorded term over the network's parameters alone (`value`, the number it has, where none reaches it)."""
    return substitute(term, scope, value, whole_opaque=False) if scope else term
