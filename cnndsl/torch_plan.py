"""The one lowering of the IR to PyTorch: a plan of the module tree that both torch targets build.

`build_plan` walks the IR once into `ModulePlan`s, one per module of the tree: which class
with which constructor arguments (a `TorchCall`), its submodule name, its children, and
whether it computes in place. `cnndsl.torch_backend.build_module` instantiates the plan
as an `nn.Module`; `cnndsl.codegen_torch.generate_source` prints it as Python source and
copies the helper classes the plan names (`ModulePlan.helpers`). So the two targets make
the same decisions from one walk, with one error translation and one recursion guard.

The plan mirrors the IR node for node: each IR Sequence (the network, a group, a branch,
a block call, a repetition) is one container whose `node` keeps its role, block name,
block arguments and title; each Parallel is one merge container whose children are its
branches; each Layer is one leaf. Nothing is flattened away. A Reference (`@name`) has
no module: it is left out of its sequence (which then names its children, keeping their
indices as the state_dict keys). A network whose data flow leaves the tree
(`Network.is_graph`) runs its steps (cnndsl.ir.program) instead of the containers'
forwards: the in-memory module is a `torch_modules._Graph`, the generated source a class
whose `forward` names the intermediate tensors. Nothing is computed in place there when
its input is read again (by a reference or as an output).

This module imports no torch: generating source must not load it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .errors import CnnDslError, error
from .ir import Layer, Node, Parallel, Reference, Sequence, walk
from .layers.base import LayerError, TorchCall

if TYPE_CHECKING:
    from .network import Network

PlanKind = Literal["layer", "merge", "sequence", "identity"]
"""layer: a leaf built from its kind's TorchCall; merge: a Parallel's container (Add, Concat,
Mul) whose children, its branches, are its first positional arguments; sequence: an
`nn.Sequential` whose children run in order; identity: an empty sequence (an empty branch)."""

SEQUENTIAL = "nn.Sequential"
"""A sequence whose children are named `0`, `1`, ... (nn.Sequential names them so itself)."""
NAMED_SEQUENTIAL = "sequential"
"""A sequence with labelled children: the cnndsl.torch_modules helper that names them."""


@dataclass(eq=False)
class ModulePlan:
    """One module of the tree: what to construct, under which name, from which IR node."""

    name: str
    """Its submodule name in the parent (the IR node's name; "" for the network)."""
    kind: PlanKind
    call: TorchCall
    """The class and the constructor arguments besides the children (a merge's `inplace=True`)."""
    node: Node
    """The IR node it lowers: position for messages, path, shapes, a sequence's role and block."""
    children: list[ModulePlan] = field(default_factory=list)
    inplace: bool = False
    """A leaf: its activation may overwrite its input; a merge: it may accumulate into its
    first branch's output. (The call asks for it only where the class can: ReLU, ReLU6, Add.)"""

    def walk(self) -> Iterator[ModulePlan]:
        """This module and every module below it, parents first, in execution order (iteratively: trees can be deep)."""
        stack = [self]
        while stack:
            plan = stack.pop()
            yield plan
            stack.extend(reversed(plan.children))

    def helpers(self) -> set[str]:
        """The cnndsl.torch_modules helpers (classes and functions) this subtree constructs."""
        return {plan.call.name for plan in self.walk() if not plan.call.name.startswith("nn.")}


# ---- in-place rules ------------------------------------------------------------------------


def inplace_allowed(previous: Node | None, shared: frozenset[Node] = frozenset()) -> bool:
    """Whether an activation may overwrite its input: only a fresh tensor nothing else reads.

    The output of a kind that declares `fresh_output` (Conv, DWConv, BatchNorm, FC: not
    saved for backward, and only the next sibling reads it) qualifies, and so does a merge
    of two or more branches; the first element of a sequence does not (its input may be a
    branch's shared input, or the caller's tensor), nor the output of an activation (ReLU
    and Sigmoid save their output), nor a tensor in `shared` (a reference's source or an output).
    """
    if previous in shared:
        return False
    if isinstance(previous, Layer):
        return previous.kind.fresh_output
    if isinstance(previous, Parallel):
        return len(previous.branches) >= 2
    return False


def ends_in_fresh_output(node: Node) -> bool:
    """Whether a node's output is a new tensor that autograd does not keep (so a merge may add into it)."""
    while isinstance(node, Sequence):
        if not node.children:
            return False
        node = node.children[-1]
    return isinstance(node, Layer) and node.kind.fresh_output


def merge_inplace(node: Parallel) -> bool:
    """Whether the merge may accumulate into its first branch's output."""
    return len(node.branches) >= 2 and ends_in_fresh_output(node.branches[0])


# ---- the walk -------------------------------------------------------------------------------


@contextlib.contextmanager
def deep_recursion() -> Iterator[None]:
    """Room for the recursion that a deep tree needs while it is planned, built or printed.

    Trees may nest several hundred levels (block calls inside brackets inside block calls),
    and every consumer of the plan recurses once or twice per level.
    """
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def layer_call(network: Network, layer: Layer, inplace: bool) -> TorchCall:
    """The layer's TorchCall; a kind without a torch lowering, or a LayerError, becomes a positioned CnnDslError."""
    try:
        return layer.kind.torch_call(layer.args, layer.in_shape, inplace)
    except CnnDslError as err:  # the registry's "not supported by the torch backend"
        message = err.errors[0].message if err.errors else str(err)
        raise error(message, "`cnndsl layers` lists every layer kind", network, layer.pos) from None
    except LayerError as err:
        raise error(err.message, err.hint, network, layer.pos) from None


def shared_tensors(network: Network) -> frozenset[Node]:
    """The nodes whose output is read again after the next element: references' sources and the outputs."""
    sources = [node.source for node, _ in walk(network.root) if isinstance(node, Reference) and not node.of_input]
    sources += [ref.source for ref in network.outputs or () if not ref.of_input]
    return frozenset(sources)


def build_plan(network: Network) -> ModulePlan:
    """The network's module tree (see the module docstring); errors point at the layer."""
    with deep_recursion():
        return _plan(network, network.root, inplace=False, shared=shared_tensors(network) if network.is_graph else frozenset())


def _plan(network: Network, node: Node, inplace: bool, shared: frozenset[Node] = frozenset()) -> ModulePlan:
    # `inplace` is the in-place decision for a Layer (made by its parent sequence).
    if isinstance(node, Layer):
        return ModulePlan(node.name, "layer", layer_call(network, node, inplace), node, inplace=inplace)
    if isinstance(node, Parallel):
        branches = [_plan(network, branch, inplace=False, shared=shared) for branch in node.branches]
        accumulate = merge_inplace(node) and not shared
        call = layer_call(network, node.merge, accumulate)
        return ModulePlan(node.name, "merge", call, node, branches, inplace=accumulate)
    assert isinstance(node, Sequence)
    modules = [child for child in node.children if not isinstance(child, Reference)]
    if not modules:  # an empty branch (or only references): no state, so the keys are unaffected
        return ModulePlan(node.name, "identity", TorchCall("nn.Identity"), node)
    children: list[ModulePlan] = []
    previous: Node | None = None
    for child in node.children:
        if not isinstance(child, Reference):  # only a Layer reads the in-place flag
            children.append(_plan(network, child, inplace_allowed(previous, shared), shared))
        previous = child
    indexed = [child.name for child in modules] == [str(i) for i in range(len(modules))]
    return ModulePlan(node.name, "sequence", TorchCall(SEQUENTIAL if indexed else NAMED_SEQUENTIAL), node, children)
