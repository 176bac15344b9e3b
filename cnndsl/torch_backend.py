"""Lower a checked network to a PyTorch module that mirrors the IR tree.

A Sequence becomes an `nn.Sequential` whose submodules are named by the children's names,
a Parallel becomes its merge's container (cnndsl.torch_modules.Add/Concat/Mul) with the
branches as submodules `0`, `1`, ..., and a Layer becomes the module its kind's
`torch_call` describes. So a layer's weight has the state_dict key `f"{path}.weight"`
(the checker already named every node so that its path is a valid module path: see
cnndsl.names).

This module imports torch only inside its functions: `cnndsl check` must never load it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import CnnDslError
from .ir import Layer, Node, Parallel, Sequence, walk
from .layers.base import LayerError
from .resources import check_size, network_error

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .network import Network
    from .weights import Preprocess, WeightsSource


def inplace_allowed(previous: Node | None) -> bool:
    """Whether an activation may overwrite its input: only a fresh tensor nothing else reads.

    Conv, BatchNorm and Linear outputs qualify (they are not saved for backward and only
    the next sibling reads them), and so does a merge of two or more branches; the first
    element of a sequence does not (its input may be a branch's shared input, or the
    caller's tensor), nor the output of an activation (ReLU and Sigmoid save their output).
    """
    if isinstance(previous, Layer):
        return previous.kind.family in ("conv", "norm", "linear")
    if isinstance(previous, Parallel):
        return len(previous.branches) >= 2
    return False


def fresh_output(node: Node) -> bool:
    """Whether a node's output is a new tensor that autograd does not keep (so a merge may add into it)."""
    while isinstance(node, Sequence):
        if not node.children:
            return False
        node = node.children[-1]
    return isinstance(node, Layer) and node.kind.family in ("conv", "norm", "linear")


def merge_inplace(node: Parallel) -> bool:
    """Whether the merge may accumulate into its first branch's output."""
    return len(node.branches) >= 2 and fresh_output(node.branches[0])


def leaf_inplace(network: Network) -> dict[int, bool]:
    """id(layer) -> whether its activation may run in place (see `inplace_allowed`)."""
    flags: dict[int, bool] = {}
    for node, _ in walk(network.root):
        if isinstance(node, Sequence):
            previous: Node | None = None
            for child in node.children:
                if isinstance(child, Layer):
                    flags[id(child)] = inplace_allowed(previous)
                previous = child
    return flags


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's CPU generator for the block without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _deep_recursion() -> Iterator[None]:
    # Trees may nest a few hundred levels (the checker allows it); building recurses per level.
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def build_module(
    network: Network, seed: int | None = None, max_bytes: int | None = None, weights: WeightsSource | None = None
) -> nn.Module:
    """The network as an `nn.Module` tree that mirrors the IR (see the module docstring).

    Modules are created in execution order, as the generated source creates them, so the
    same seed gives the same initial weights in both (and in the NumPy backend, whose
    initialisers draw from PyTorch's generator definition: cnndsl.numpy_ops.TorchRandom).
    `weights` (a file or a state_dict, see cnndsl.weights) replaces them; preprocessing
    stored with them becomes the module's first step (`install_preprocess`).
    """
    check_size(network, max_bytes)
    if seed is not None:
        from .numpy_ops import check_seed

        try:
            seed = check_seed(seed)
        except ValueError as err:
            raise network_error(network, str(err), None) from None
    try:
        import torch  # noqa: F401  (fail here, with a clear message, if torch is missing)
    except ImportError:
        raise network_error(
            network, "the torch target needs PyTorch, which is not installed", None, "pip install 'cnndsl[torch]'"
        ) from None
    inplace = leaf_inplace(network)
    with seeded(seed), _deep_recursion():
        module = _build(network, network.root, inplace)
    if weights is not None:
        load_weights(network, module, weights)
    return module


def load_weights(network: Network, module: nn.Module, source: WeightsSource) -> None:
    """Load weights (keys and shapes checked, every difference named) and install their preprocessing, if any."""
    import numpy as np
    import torch

    from .numpy_backend import check_weights
    from .weights import read_weights

    weights = read_weights(source)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    arrays = check_weights(network, expected, weights.state_dict)
    module.load_state_dict({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()})
    if weights.preprocess is not None:
        weights.preprocess.check_for(network, weights.source)
        install_preprocess(module, weights.preprocess, len(network.input_shape) + 1)


def install_preprocess(module: nn.Module, preprocess: Preprocess, batch_ndim: int) -> None:
    """Make `module` standardise its input first: `(x - input_mean) / input_std`, per channel.

    The statistics are non-persistent buffers (they follow `.to(device)`, and the
    state_dict keeps the keys of the layers alone) and a forward pre-hook applies them,
    as the generated class's `forward` does in its first line.
    """
    import torch

    mean, std = preprocess.broadcast(batch_ndim, "float32")
    module.register_buffer("input_mean", torch.from_numpy(mean.copy()), persistent=False)
    module.register_buffer("input_std", torch.from_numpy(std.copy()), persistent=False)
    module.register_forward_pre_hook(standardise_input)


def standardise_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The forward pre-hook of `install_preprocess` (a module-level function, so the module still pickles)."""
    x = args[0]
    return ((x - module.input_mean) / module.input_std, *args[1:])


def _build(network: Network, node: Node, inplace: dict[int, bool]) -> nn.Module:
    from torch import nn

    if isinstance(node, Layer):
        return lower_layer(network, node, inplace.get(id(node), False))
    if isinstance(node, Parallel):
        branches = [_build(network, branch, inplace) for branch in node.branches]
        return node.merge.kind.torch_merge(branches, merge_inplace(node))  # type: ignore[attr-defined]
    assert isinstance(node, Sequence)
    if not node.children:
        return nn.Identity()  # an empty branch: no state, so the keys are unaffected
    container = nn.Sequential()
    for child in node.children:
        module = _build(network, child, inplace)
        try:
            container.add_module(child.name, module)
        except KeyError:  # an attribute that this PyTorch has and names.MODULE_ATTRIBUTES lacks
            raise network_error(
                network,
                f"the label `{child.name}` is the name of an nn.Module attribute in this PyTorch",
                child.pos,
                "choose another label",
            ) from None
    return container


def lower_layer(network: Network, layer: Layer, inplace: bool = False) -> nn.Module:
    """One leaf's module; every failure becomes a CnnDslError that points at the layer."""
    try:
        return layer.kind.torch_module(layer.args, layer.in_shape, inplace)
    except CnnDslError as err:  # the registry's "not supported by the torch backend"
        message = err.errors[0].message if err.errors else str(err)
        raise network_error(network, message, layer.pos, "see the layer table in LANGUAGE.md for the torch target") from None
    except LayerError as err:
        raise network_error(network, err.message, layer.pos, err.hint) from None
    except (RuntimeError, ValueError, TypeError, MemoryError) as err:
        raise network_error(
            network,
            f"PyTorch could not build {layer.describe} at `{layer.path}`: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            layer.pos,
        ) from None
