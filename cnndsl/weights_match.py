"""Weights by structure: a foreign state_dict (torchvision, timm, any module with the same structure) onto the network's keys.

A state_dict is grouped into parametrised layers: the tensors that share a key prefix
(`layer1.0.conv1.weight`, `layer1.0.conv1.bias` -> layer `layer1.0.conv1`), in the order the
keys come. PyTorch lists a module's keys in registration order, which for the torchvision
classification models equals execution order (tests/test_twins.py checks the whole zoo), so
the foreign layers are paired with the network's parametrised layers in execution order,
comparing each pair's kind (conv, linear, batchnorm, ... from the tensor names and the
weight's rank) and shapes. Where a module registers the branches of a merge in another order
than they run (a shortcut before the main path), the branches are tried in every order; the
one order that fits is taken, and two that fit are an ambiguity, refused. When the keys'
order does not fit at all (safetensors stores keys sorted), `recover_order` finds one in the
key tree: each submodule's layers together, numbered submodules in their order, named ones in
the order that fits (key order deciding between equal shapes: `conv1` before `conv2`).

A layer whose shapes differ only because a network parameter or the input changed it (the
classifier head of `--set num_classes=10`) keeps its initial weights and is reported as
re-initialised; which layers those are is read from the IR (`changed_layers`: how each parameter
reaches each layer, `Network.terms`), without checking the source again. Any other
disagreement is refused with a CnnDslError naming the layer on each side and how they
differ, unless `allow_partial`: then what agrees at the start and at the end is matched, and
the rest is reported (ours: unmatched, keeping initial weights; theirs: skipped). When theirs has
more layers and their order does not fit, the order is first recovered leaving out whole submodules
of theirs (a decoder's fixed weights, an auxiliary head): only those are then skipped.

The matching reads only keys and shapes: it imports no torch.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnDslError
from .expr import LayerExprs, evaluate, params_of
from .ir import Layer, Node, Parallel, Reference, Sequence
from .layers.base import MergeKind
from .shapes import Shape as TensorShape
from .torch_plan import deep_recursion
from .weights import PREPROCESS_PREFIX, Weights, weights_error

if TYPE_CHECKING:
    from .network import Network

Shape = tuple[int, ...]
MAX_PERMUTED_BRANCHES = 5
"""Merges with more branches (that hold weights) than this are only tried in their own order (5! = 120 orders)."""
OPTIONAL_TENSORS = frozenset({"num_batches_tracked"})
"""Tensors a checkpoint may lack (older PyTorch saved no BatchNorm counter): ours are kept."""


@dataclass(frozen=True)
class LayerTensors:
    """One parametrised layer of a state_dict: its key prefix and its tensors' shapes."""

    prefix: str
    shapes: dict[str, Shape]

    @property
    def kind(self) -> str:
        """conv, linear, batchnorm, affine (a 1-D weight: LayerNorm, GroupNorm, ...) or other, from names and ranks."""
        if {"running_mean", "running_var"} <= set(self.shapes):
            return "batchnorm"
        weight = self.shapes.get("weight")
        if weight is None:
            return "other"
        return {4: "conv", 3: "conv1d", 2: "linear", 1: "affine"}.get(len(weight), "other")

    def describe(self) -> str:
        """`layer1.0.conv1` (conv, weight 64x64x3x3)."""
        weight = self.shapes.get("weight")
        shape = f", weight {_shape_text(weight)}" if weight is not None else ""
        return f"`{self.prefix}` ({self.kind}{shape})"


def _shape_text(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def group_layers(shapes: Mapping[str, Shape]) -> list[LayerTensors]:
    """The state_dict's keys grouped by module prefix, in the order of their first key (preprocessing entries left out)."""
    groups: dict[str, dict[str, Shape]] = {}
    for key, shape in shapes.items():
        if key.startswith(PREPROCESS_PREFIX):
            continue
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix, {})[name] = tuple(int(d) for d in shape)
    return [LayerTensors(prefix, tensors) for prefix, tensors in groups.items()]


def shapes_of(state_dict: Mapping[str, Any]) -> dict[str, Shape]:
    """Key -> shape of a mapping of arrays or tensors (anything with a `.shape`), or of shapes (tuples)."""
    return {
        str(key): tuple(int(d) for d in (value if isinstance(value, tuple) else getattr(value, "shape", ())))
        for key, value in state_dict.items()
    }


def difference(ours: LayerTensors, theirs: LayerTensors) -> str | None:
    """How two layers differ (kind, tensor names, shapes), or None when the weights fit."""
    if ours.kind != theirs.kind:
        return f"a {ours.kind} layer against a {theirs.kind} layer"
    missing = [n for n in ours.shapes if n not in theirs.shapes and n not in OPTIONAL_TENSORS]
    extra = [n for n in theirs.shapes if n not in ours.shapes]
    if missing or extra:
        parts = ([f"{', '.join(missing)} missing"] if missing else []) + ([f"{', '.join(extra)} extra"] if extra else [])
        return "tensors differ: " + "; ".join(parts)
    shapes = [
        f"{name} {_shape_text(theirs.shapes[name])} instead of {_shape_text(shape)}"
        for name, shape in ours.shapes.items()
        if name in theirs.shapes and theirs.shapes[name] != shape
    ]
    return "shapes differ: " + ", ".join(shapes) if shapes else None


# ---------------------------------------------------------------------------- the report


@dataclass
class MatchReport:
    """What structural matching did: which layer got which weights, and what it left alone."""

    source: str
    matched: list[tuple[str, str]] = field(default_factory=list)
    """(our layer's path, their layer's prefix), in execution order."""
    reinitialised: list[tuple[str, str, str]] = field(default_factory=list)
    """(ours, theirs, how the shapes differ): a network parameter changed the layer, so it keeps its initial weights."""
    unmatched: list[str] = field(default_factory=list)
    """Our layers without a counterpart (kept at their initial weights; only with allow_partial)."""
    skipped: list[str] = field(default_factory=list)
    """Their layers not used (only with allow_partial)."""

    def lines(self, limit: int = 8) -> list[str]:
        """The report as `cnndsl` prints it: one summary line, then the re-initialised, unmatched and skipped layers."""
        counts = (
            f"{len(self.matched)} layers matched, {len(self.reinitialised)} re-initialised, "
            f"{len(self.unmatched)} unmatched, {len(self.skipped)} skipped"
        )
        out = [f"weights from {self.source} matched by structure: {counts}"]
        for ours, theirs, how in self.reinitialised:
            out.append(f"  re-initialised {ours} (was {theirs}: {how}; a network parameter changed it)")
        for title, names in (("unmatched (initial weights)", self.unmatched), ("skipped from the weights", self.skipped)):
            if names:
                shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
                out.append(f"  {title}: {shown}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---------------------------------------------------------------------------- matching


@dataclass
class _Mismatch(Exception):
    ours: LayerTensors | None
    theirs: LayerTensors | None
    how: str


class _Ambiguous(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Matcher:
    own: dict[str, LayerTensors]
    """Our parametrised layers by path."""
    foreign: list[LayerTensors]
    changed: set[str]
    """Paths of our layers that a network parameter (or the input shape) changed."""

    def layers_under(self, node: Node) -> Iterator[LayerTensors]:
        for leaf in node.leaves():
            if leaf.path in self.own:
                yield self.own[leaf.path]

    def fits(self, ours: LayerTensors, theirs: LayerTensors) -> tuple[bool, str | None]:
        """(usable, how the shapes differ): a pair that fits, a re-initialised head, or neither (_Mismatch)."""
        how = difference(ours, theirs)
        if how is None:
            return True, None
        if how.startswith("shapes differ") and ours.prefix in self.changed:
            return False, how
        raise _Mismatch(ours, theirs, how)

    def align(self, node: Node, at: int, pairs: list[tuple[LayerTensors, LayerTensors, str | None]]) -> int:
        """Pair the layers under `node` with the foreign layers from index `at`; returns the next index."""
        if isinstance(node, Layer):
            ours = self.own.get(node.path)
            if ours is None:
                return at
            if at >= len(self.foreign):
                raise _Mismatch(ours, None, "the weights have no more layers")
            usable, how = self.fits(ours, self.foreign[at])
            pairs.append((ours, self.foreign[at], how if not usable else None))
            return at + 1
        if isinstance(node, Reference):  # `@name` reads a tensor computed elsewhere: it holds no weights
            return at
        if isinstance(node, Sequence):
            for child in node.children:
                at = self.align(child, at, pairs)
            return at
        if isinstance(node, Reference):  # `@name` reads a tensor: no weights of its own
            return at
        assert isinstance(node, Parallel)
        return self.align_branches(node, at, pairs)

    def align_branches(self, node: Parallel, at: int, pairs: list[tuple[LayerTensors, LayerTensors, str | None]]) -> int:
        weighted = [b for b in node.branches if any(True for _ in self.layers_under(b))]
        try:
            attempt: list[tuple[LayerTensors, LayerTensors, str | None]] = []
            end = self.align_all(weighted, at, attempt)
        except _Mismatch as first:
            if len(weighted) < 2 or len(weighted) > MAX_PERMUTED_BRANCHES:
                raise
            fitting: list[tuple[tuple[Sequence, ...], int, list[tuple[LayerTensors, LayerTensors, str | None]]]] = []
            for order in itertools.permutations(weighted):
                trial: list[tuple[LayerTensors, LayerTensors, str | None]] = []
                try:
                    fitting.append((order, self.align_all(list(order), at, trial), trial))
                except _Mismatch:
                    continue
            if not fitting:
                raise first from None
            if len(fitting) > 1:
                raise _Ambiguous(
                    f"the branches of `{node.path or node.name}` fit the weights in {len(fitting)} orders "
                    f"(starting at their layer `{self.foreign[at].prefix}`)"
                ) from None
            _, end, attempt = fitting[0]
        pairs.extend(attempt)
        return end

    def align_all(self, nodes: list[Sequence], at: int, pairs: list[tuple[LayerTensors, LayerTensors, str | None]]) -> int:
        for node in nodes:
            at = self.align(node, at, pairs)
        return at


def changed_parameters(network: Network) -> set[str]:
    """The network parameters whose value differs from the one the source writes (or that have none written)."""
    written = network.written_parameters
    return {name for name, value in network.parameters.items() if name not in written or not _same(written[name], value)}


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type (`--set width=64.0` is not the written `64`)."""
    return type(a) is type(b) and a == b


def changed_layers(network: Network) -> set[str]:
    """Paths of the layers whose weights' shapes a changed network parameter or --input changed, read from the IR.

    The network's data flow (`Network.program`) is run once on shapes as the source writes them: each layer
    whose arguments read a changed parameter (`Network.terms`) gets them computed with the written values
    (`cnndsl.expr.evaluate`), and its output shape inferred again from its written input; where nothing it
    reads changed, its shapes are the IR's. A layer is reshaped when its weights' and buffers' sizes differ
    between the two: a changed stride or dropout rate reshapes none, nor does a smaller image before a
    global pool. Where a written value is unknown (a parameter without a default, an argument that reads it
    through a `def` function or a condition, an inference that fails), every layer it reaches counts as
    reshaped: a shape difference there is excused, never a layer refused that a setting changed.
    A parameter that decides which layers exist (a repetition count) cannot be followed this way: the
    layers are our own, and weights of another count disagree, as the refusal then says (`_refusal`).
    """
    changed = changed_parameters(network)
    if not changed and network.written_input == network.input_shape:
        return set()
    written = network.written_parameters
    current: dict[int, TensorShape | None] = {0: network.input_shape}
    before: dict[int, TensorShape | None] = {0: network.written_input}
    reshaped: set[str] = set()
    terms = network.terms.layers
    for step in network.program().steps:
        layer = step.layer
        exprs = terms.get(layer)
        shapes = [before.get(register) for register in step.inputs]
        current[step.output] = layer.out_shape
        args: dict[str, Any] | None = layer.args
        if exprs is not None and any(params_of(term) & changed for term in exprs.args.values()):
            try:
                args = dict(layer.args)
                args.update((name, evaluate(term, written)) for name, term in exprs.args.items() if params_of(term) & changed)
            except Exception:  # noqa: BLE001 - an opaque term, a parameter without a written value, 1 / 0: unknown
                args = None
        unchanged_input = all(shape == current.get(register) for shape, register in zip(shapes, step.inputs, strict=True))
        shape_reads_unchanged = all(before.get(r) == current.get(r) for r in step.shape_inputs)
        if args is layer.args and unchanged_input and shape_reads_unchanged:
            before[step.output] = layer.out_shape
            continue
        out: TensorShape | None = None
        if args is not None and None not in shapes and shape_reads_unchanged:
            out = _inferred(layer, args, [shape for shape in shapes if shape is not None])
        elif args is not None and network.written_input == network.input_shape:
            out = _recorded_output(layer, exprs, changed, written)
        before[step.output] = out
        if (layer.params or layer.buffers) and (
            out is None or args is None or _sizes(layer, args, shapes[0]) != _sizes(layer, layer.args, layer.in_shape)
        ):
            reshaped.add(layer.path)
    return reshaped


def _recorded_output(layer: Layer, exprs: LayerExprs | None, changed: set[str], written: Mapping[str, Any]) -> TensorShape | None:
    """The layer's written output shape from its output terms alone (`exprs`, see `Network.terms`; its input's
    is unknown), or None: a `Conv(8, 1)` after a layer of unknown width still gives 8 channels of the same size."""
    if exprs is None:
        return layer.out_shape  # no parameter reaches it at all
    if exprs.out_size & changed:
        return None
    try:
        channels = evaluate(exprs.out, written) if params_of(exprs.out) & changed else layer.out_shape[0]
    except Exception:  # noqa: BLE001 - as in changed_layers
        return None
    return TensorShape((channels, *layer.out_shape[1:])) if type(channels) is int and channels > 0 else None


def _inferred(layer: Layer, args: dict[str, Any], inputs: list[TensorShape]) -> TensorShape | None:
    """The layer's output for these arguments and inputs (a merge's: its branches'), None where inference refuses them."""
    try:
        if isinstance(layer.kind, MergeKind):
            return layer.kind.merge(inputs)
        return layer.kind.infer(args, inputs[0])
    except Exception:  # noqa: BLE001 - any failure of a layer's rule on other values: the shape is unknown
        return None


def _sizes(layer: Layer, args: dict[str, Any], shape: TensorShape | None) -> tuple[int, int] | None:
    """How many weights and buffer entries the layer holds with these arguments and input."""
    if shape is None:
        return None
    try:
        return layer.kind.param_count(args, shape), layer.kind.buffer_count(args, shape)
    except Exception:  # noqa: BLE001 - as in _inferred
        return None


def match_weights(
    network: Network,
    expected: Mapping[str, Shape],
    foreign: Mapping[str, Any],
    source: str = "<state_dict>",
    allow_partial: bool = False,
    reinitialise: bool = True,
    ordered: bool = True,
) -> tuple[dict[str, str], MatchReport]:
    """Our key -> their key for every tensor that gets weights, and the report (see the module docstring).

    `expected` is our state_dict's key -> shape (keys grouped by layer path), `foreign` their
    state_dict (anything with shapes). `reinitialise=False` refuses changed heads too (exporting
    to a template must fit it exactly). `ordered=False` says the keys are not in the module's
    order (safetensors stores them sorted): the order is then recovered from the key tree.
    """
    own_layers = group_layers(expected)
    own = {layer.prefix: layer for layer in own_layers}
    theirs = group_layers(shapes_of(foreign))
    if not ordered:
        theirs.sort(key=lambda layer: _natural(layer.prefix))
    changed = changed_layers(network) if reinitialise else set()
    matcher = _Matcher(own, theirs, changed)
    report = MatchReport(source)
    pairs: list[tuple[LayerTensors, LayerTensors, str | None]] = []
    try:
        sequence = [own[layer.path] for layer in network.layers if layer.path in own]
        try:
            pairs = _align_everything(matcher, network)
        except (_Mismatch, _Ambiguous) as failure:
            if isinstance(failure, _Ambiguous) and ordered:
                raise  # the saving module's order is known and more than one reading of it fits
            recovered = recover_order(matcher, sequence, theirs)
            if recovered is None:
                raise
            matcher.foreign = recovered
            pairs = _align_everything(matcher, network)
        else:
            # Layers taken as re-initialised may be the sign of a wrong order (sorted keys): an order
            # that re-initialises fewer wins.
            reinitialised = sum(1 for pair in pairs if pair[2] is not None)
            recovered = recover_order(matcher, sequence, theirs) if reinitialised else None
            if recovered is not None:
                trial = _Matcher(own, recovered, changed)
                alternative = _align_everything(trial, network)  # fits: the order was recovered against ours
                if sum(1 for pair in alternative if pair[2] is not None) < reinitialised:
                    matcher, pairs = trial, alternative
    except _Mismatch as mismatch:
        if not allow_partial:
            raise _refusal(network, mismatch, len(own_layers), len(theirs), source, reinitialise) from None
        # Their extra layers may be whole submodules ours lacks, registered in another order than they run
        # (Ultralytics' C2f registers cv2 before the bottlenecks it runs first; its Detect head ends with the
        # DFL decoder's fixed weights): an order that pairs all of ours, leaving out only those, wins.
        sequence = [own[layer.path] for layer in network.layers if layer.path in own]
        recovered = recover_order(matcher, sequence, theirs, spare=len(theirs) - len(sequence))
        if recovered is not None:
            matcher.foreign = recovered
        pairs = _partial(matcher, network, own_layers, recovered or theirs, report)
    except _Ambiguous as ambiguous:
        if not allow_partial:
            raise weights_error(
                f"cannot match the weights from {source} to network {network.name} by structure: {ambiguous.message}",
                "save the weights from a module whose branches are registered in the order they run",
                source,
            ) from None
        pairs = _partial(matcher, network, own_layers, theirs, report)
    mapping: dict[str, str] = {}
    for ours, their_layer, how in pairs:
        if how is not None:
            report.reinitialised.append((ours.prefix, their_layer.prefix, how))
            continue
        report.matched.append((ours.prefix, their_layer.prefix))
        for name in ours.shapes:
            if name in their_layer.shapes:
                mapping[_key(ours.prefix, name)] = _key(their_layer.prefix, name)
    return mapping, report


def _align_everything(matcher: _Matcher, network: Network) -> list[tuple[LayerTensors, LayerTensors, str | None]]:
    pairs: list[tuple[LayerTensors, LayerTensors, str | None]] = []
    end = matcher.align(network.root, 0, pairs)
    if end < len(matcher.foreign):
        extra = len(matcher.foreign) - end
        raise _Mismatch(None, matcher.foreign[end], f"the weights have {extra} more layers than the network")
    return pairs


def _natural(prefix: str) -> list[tuple[int, int | str]]:
    """A sort key that puts `layer1.2` before `layer1.10` (numbers compare as numbers)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in prefix.split(".")]


@dataclass(eq=False)
class _Tree:
    """Their module tree: a module's own tensors (a layer) and its submodules, in preference order."""

    layer: LayerTensors | None = None
    children: dict[str, _Tree] = field(default_factory=dict)
    size: int = 0
    """Layers in the subtree."""


def _tree(layers: list[LayerTensors]) -> _Tree:
    root = _Tree()
    for layer in layers:
        node = root
        node.size += 1
        for part in layer.prefix.split(".") if layer.prefix else []:
            node = node.children.setdefault(part, _Tree())
            node.size += 1
        node.layer = layer
    return root


MAX_ORDER_STEPS = 200_000
"""Work allowed to recover an order (each step tries one submodule at one position)."""


def _items(node: _Tree) -> tuple[_Tree, ...]:
    """The numbered submodules of `node` (an nn.Sequential's or nn.ModuleList's items), in their numeric order."""
    return tuple(child for name, child in sorted(node.children.items(), key=lambda i: _natural(i[0])) if name.isdigit())


def _list_items(node: _Tree) -> tuple[_Tree, ...]:
    """The items of `node` when it is a list and nothing else (no tensors or named submodules of its own); else ()."""
    items = _items(node)
    return items if node.layer is None and len(items) == len(node.children) else ()


def recover_order(
    matcher: _Matcher, ours: list[LayerTensors], theirs: list[LayerTensors], spare: int = 0
) -> list[LayerTensors] | None:
    """Their layers in an order that fits ours, keeping each submodule's layers together and numbered submodules
    (nn.Sequential, nn.ModuleList) in their numeric order; named submodules are tried in `theirs`' order, which
    decides between equal shapes (`conv1` before `conv2`). None when no order fits (or the search is too long).

    The items of sibling lists may interleave: a U-Net registers its decoder's upsamplings (`ups.0`, `ups.1`, ...)
    apart from its convolutions (`convs.0`, ...) and runs `ups.0`, `convs.0`, `ups.1`, ... (so does a feature pyramid's
    `inner_blocks` and `layer_blocks`). Each item stays whole, and its list's order is kept; the order that keeps each
    list together is tried first.

    This is how weights whose keys come sorted (safetensors) or whose module registers submodules in
    another order than it runs them find their order. With `spare`, up to that many of their layers may be
    left out, whole submodules at a time (a decoder's fixed weights, an auxiliary head that ours lacks): they
    come last in the order returned, after the layers that pair with ours, and placing a submodule is
    preferred to leaving it out.
    """
    root = _tree(theirs)
    left_out = root.size - len(ours)
    if not 0 <= left_out <= spare:
        return None
    steps = [0]
    Found = tuple[list[LayerTensors], list[LayerTensors]]  # (placed, in our order; left out)
    subtrees: dict[tuple[int, int, int], Found | None] = {}
    placements: dict[tuple[tuple[tuple[int, int], ...], int, int, int], Found | None] = {}
    own_leaves: dict[int, _Tree] = {}
    """A module's own tensors as a leaf of their own, made once per module (placements key on its id)."""

    def fits(position: int, layer: LayerTensors) -> bool:
        if position >= len(ours):
            return False
        try:
            matcher.fits(ours[position], layer)
        except _Mismatch:
            return False
        return True

    def subtree(node: _Tree, at: int, skip: int) -> Found | None:
        """`node`'s layers placed from our position `at`, leaving out exactly `skip` of them (the whole node, or
        whole submodules inside it)."""
        if skip == node.size:
            return [], _subtree_layers(node)
        key = (id(node), at, skip)
        if key not in subtrees:
            subtrees[key] = None
            if skip < node.size and at + node.size - skip <= len(ours):
                if not node.children:  # a module with tensors and no submodules (skip is 0 here)
                    if node.layer is not None and fits(at, node.layer):
                        subtrees[key] = ([node.layer], [])
                    return subtrees[key]
                # A module's own tensors are tried first, then among its submodules: torchvision's CNBlock
                # registers its layer scale before its block, and uses it after.
                own: tuple[_Tree, ...] = ()
                if node.layer is not None:
                    own = (own_leaves.setdefault(id(node), _Tree(node.layer, {}, 1)),)
                named = [_list_items(child) or (child,) for name, child in node.children.items() if not name.isdigit()]
                subtrees[key] = place(tuple(chain for chain in (own, _items(node), *named) if chain), at, skip, -1)
        return subtrees[key]

    def place(chains: tuple[tuple[_Tree, ...], ...], at: int, skip: int, last: int) -> Found | None:
        """Place the chains' items from `at`, each chain in its order, leaving out exactly `skip` layers; `last` (-1:
        none) is the chain whose item was placed just before, tried first so that a list stays together unless only
        an interleaving fits."""
        if not chains:
            return ([], []) if skip == 0 else None
        key = (tuple((id(chain[0]), len(chain)) for chain in chains), at, skip, last)
        if key in placements:
            return placements[key]
        placements[key] = None
        for index in ([last] if last >= 0 else []) + [i for i in range(len(chains)) if i != last]:
            chain = chains[index]
            if len(chain) > 1:  # the chain keeps its index: its next item is tried first
                remaining, following = chains[:index] + (chain[1:],) + chains[index + 1 :], index
            else:
                remaining, following = chains[:index] + chains[index + 1 :], -1
            for inside in range(min(skip, chain[0].size) + 1):  # leaving out nothing first
                steps[0] += 1
                if steps[0] > MAX_ORDER_STEPS:
                    return None
                first = subtree(chain[0], at, inside)
                if first is None:
                    continue
                rest = place(remaining, at + len(first[0]), skip - inside, following)
                if rest is not None:
                    placements[key] = (first[0] + rest[0], first[1] + rest[1])
                    return placements[key]
        return None

    result = subtree(root, 0, left_out)
    return result[0] + result[1] if result is not None else None


def _subtree_layers(node: _Tree) -> list[LayerTensors]:
    """Every layer of a subtree, its own first, then its submodules' in their order."""
    own = [node.layer] if node.layer is not None else []
    return own + [layer for child in node.children.values() for layer in _subtree_layers(child)]


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _partial(
    matcher: _Matcher, network: Network, own_layers: list[LayerTensors], theirs: list[LayerTensors], report: MatchReport
) -> list[tuple[LayerTensors, LayerTensors, str | None]]:
    """allow_partial: pair what fits from the start and from the end, in execution order; report the rest."""
    order = [matcher.own[layer.path] for layer in network.layers if layer.path in matcher.own]

    def usable(ours: LayerTensors, their_layer: LayerTensors) -> str | None | bool:
        try:
            fits, how = matcher.fits(ours, their_layer)
        except _Mismatch:
            return False
        return None if fits else how

    head: list[tuple[LayerTensors, LayerTensors, str | None]] = []
    while len(head) < min(len(order), len(theirs)):
        verdict = usable(order[len(head)], theirs[len(head)])
        if verdict is False:
            break
        head.append((order[len(head)], theirs[len(head)], verdict if isinstance(verdict, str) else None))
    tail: list[tuple[LayerTensors, LayerTensors, str | None]] = []
    while len(head) + len(tail) < min(len(order), len(theirs)):
        ours, their_layer = order[-1 - len(tail)], theirs[-1 - len(tail)]
        verdict = usable(ours, their_layer)
        if verdict is False:
            break
        tail.append((ours, their_layer, verdict if isinstance(verdict, str) else None))
    report.unmatched.extend(layer.prefix for layer in order[len(head) : len(order) - len(tail)])
    report.skipped.extend(layer.prefix for layer in theirs[len(head) : len(theirs) - len(tail)])
    return head + tail[::-1]


def _refusal(network: Network, mismatch: _Mismatch, ours: int, theirs: int, source: str, loading: bool) -> CnnDslError:
    own = f"our {mismatch.ours.describe()}" if mismatch.ours is not None else "the network has no more layers"
    other = f"their {mismatch.theirs.describe()}" if mismatch.theirs is not None else "the weights have no more layers"
    counts = f" (the network has {ours} parametrised layers, the weights {theirs})" if ours != theirs else ""
    if loading:
        message = f"the weights from {source} do not fit network {network.name} by structure"
        hint = "were they saved from this architecture? --allow-partial (allow_partial=True) loads the layers that fit"
        structural = [name for name in network.parameters if name in changed_parameters(network) & network.structural_parameters]
        if structural:
            # A repetition count (or what it reads) follows no layer's expression: the layer list itself changed.
            written = network.written_parameters
            values = ", ".join(
                f"{name}={_value_text(network.parameters[name])} "
                f"({'written: ' + _value_text(written[name]) if name in written else 'no default'})"
                for name in structural
            )
            hint = (
                f"{values} may change which layers the network has, so weights for the network as written need not fit: "
                "load weights saved with the same value, or --allow-partial (allow_partial=True) to load the layers that fit"
            )
    else:
        message = f"network {network.name} does not fit the layout of {source}"
        hint = "the template must have the network's shapes: give it the same parameters, e.g. module:callable(num_classes=10)"
    return weights_error(f"{message}: {own} against {other}: {mismatch.how}{counts}", hint, source)


def _value_text(value: Any) -> str:
    """A parameter's value as the source would write it (a word as itself)."""
    return str(getattr(value, "text", value)) if not isinstance(value, (bool, float)) else repr(value).lower()


def remap(mapping: Mapping[str, str], foreign: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Our state_dict: their tensors where `mapping` says, our current ones elsewhere (re-initialised, unmatched)."""
    return {key: foreign[mapping[key]] if key in mapping else value for key, value in current.items()}


def own_layout(
    network: Network, current: Mapping[str, Any], weights: Weights, allow_partial: bool = False
) -> tuple[Mapping[str, Any], MatchReport | None]:
    """The weights keyed as `current` (our state_dict): unchanged when they hold every key of ours, else matched by structure.

    Our tensors that get no weights keep their `current` values. When matching fails and the
    weights hold at least half of our keys, they are taken as our own layout with mistakes,
    which the caller's key-by-key check names more precisely.
    """
    given = weights.state_dict
    present = sum(1 for key in current if key in given)
    if present == len(current):
        return given, None
    try:
        with deep_recursion():
            mapping, report = match_weights(
                network, shapes_of(current), given, weights.source, allow_partial, ordered=weights.ordered
            )
    except CnnDslError:
        if 2 * present >= len(current):
            return given, None
        raise
    return remap(mapping, given, current), report


# ---------------------------------------------------------------------------- weights out in another layout


def template_shapes(template: str | Mapping[str, Any]) -> tuple[dict[str, Shape], str, Any, bool]:
    """(key -> shape, a name for messages, the state_dict's `_metadata` or None, whether the keys are in module order)
    of a layout template: a state_dict mapping, a weights file, or `module:callable` (optionally with literal
    keyword arguments, `torchvision.models:resnet50(num_classes=10)`), imported and called, whose
    `state_dict()` is the template."""
    from .weights import read_weights

    if isinstance(template, Mapping):
        return shapes_of(template), "<state_dict>", getattr(template, "_metadata", None), True
    if ":" in template and not Path(template).exists():
        state = _call_factory(template).state_dict()
        return shapes_of(state), template, getattr(state, "_metadata", None), True
    weights = read_weights(template)
    return shapes_of(weights.state_dict), weights.source, None, weights.ordered


def _call_factory(spec: str) -> Any:
    """`package.module:callable(k=literal, ...)` imported and called; every failure is one clear CnnDslError."""
    import ast
    import importlib

    module_name, _, call = spec.partition(":")
    name, _, arguments = call.partition("(")
    hint = "give a weights file, or module:callable such as torchvision.models:resnet50 or torchvision.models:resnet50(num_classes=10)"
    kwargs: dict[str, Any] = {}
    if arguments:
        try:
            parsed = ast.parse(f"f({arguments}", mode="eval").body
            assert isinstance(parsed, ast.Call) and not parsed.args
            kwargs = {str(k.arg): ast.literal_eval(k.value) for k in parsed.keywords}
        except (SyntaxError, ValueError, AssertionError):
            raise weights_error(f"cannot read the arguments of {spec}: only keyword=literal arguments", hint, spec) from None
    try:
        target: Any = importlib.import_module(module_name.strip())
        for part in name.strip().split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise weights_error(f"cannot find the layout template {spec}: {err}", hint, spec) from None
    try:
        made = target(**kwargs)
    except Exception as err:  # the factory is foreign code: any failure becomes one message
        raise weights_error(f"calling {spec} failed: {type(err).__name__}: {err}", hint, spec) from None
    if not callable(getattr(made, "state_dict", None)):
        raise weights_error(f"{spec} made a {type(made).__name__}, which has no state_dict()", hint, spec)
    return made


def to_layout(
    network: Network, state_dict: Mapping[str, Any], template: str | Mapping[str, Any], allow_partial: bool = False
) -> tuple[dict[str, Any], MatchReport]:
    """Our weights (keyed as our state_dict) under the template's keys, in the template's order, for
    `load_state_dict(..., strict=True)` on the template's module. The shapes must agree exactly (a
    head changed by a parameter too: pass the template the same parameter); with `allow_partial`,
    what fits is written and the rest reported."""
    shapes, source, metadata, ordered = template_shapes(template)
    with deep_recursion():
        mapping, report = match_weights(
            network, shapes_of(state_dict), shapes, source, allow_partial, reinitialise=False, ordered=ordered
        )
    theirs = {their: ours for ours, their in mapping.items()}
    out: dict[str, Any] = OrderedDict((key, state_dict[theirs[key]]) for key in shapes if key in theirs)
    if metadata is not None:
        # Module versions, as nn.Module.state_dict() records them: some modules' loaders need them
        # (torchvision's MNASNet refuses a state_dict without its version).
        out._metadata = metadata  # type: ignore[attr-defined]
    return out, report
