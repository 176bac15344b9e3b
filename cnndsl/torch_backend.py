"""Build a checked network as a PyTorch module that mirrors the IR tree.

The module tree is `cnndsl.torch_plan.build_plan`'s, instantiated: a sequence becomes an
`nn.Sequential` whose submodules are named by the children's names, a merge becomes its
container (cnndsl.torch_modules.Add/Concat/Mul) with the branches as submodules `0`, `1`,
..., and a leaf becomes the module its TorchCall describes. So a layer's weight has the
state_dict key `f"{path}.weight"` (the checker already named every node so that its path
is a valid module path: see cnndsl.names).

This module imports torch only inside its functions: `cnndsl check` must never load it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import error, needs_torch
from .ir import Layer
from .layers import MergeKind
from .network import check_seed
from .resources import check_size
from .torch_plan import NAMED_SEQUENTIAL, SEQUENTIAL, ModulePlan, build_plan, deep_recursion

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .network import Network
    from .weights import Preprocess, WeightsSource
    from .weights_match import MatchReport


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


def resolve_class(name: str) -> Any:
    """A TorchCall's class: `nn.Conv2d` to torch.nn.Conv2d, `Add` to the cnndsl.torch_modules helper."""
    from torch import nn

    from .torch_modules import HELPERS

    if name.startswith("nn."):
        return getattr(nn, name[3:])
    return HELPERS[name]


def build_module(
    network: Network,
    seed: int | None = None,
    max_bytes: int | None = None,
    weights: WeightsSource | None = None,
    allow_partial: bool = False,
) -> nn.Module:
    """The network as an `nn.Module` tree that mirrors the IR (see the module docstring).

    Modules are created in execution order, as the generated source creates them, so the
    same seed gives the same initial weights in both (and in the NumPy backend, whose
    initialisers draw from PyTorch's generator definition: cnndsl.numpy_ops.TorchRandom).
    `weights` (a file or a state_dict, see cnndsl.weights) replaces them, matched by
    structure when they are in another module's layout (cnndsl.weights_match; the report is
    the module's `weights_report`); preprocessing stored with them becomes the module's first
    step (`install_preprocess`).
    """
    check_size(network, max_bytes)
    seed = check_seed(seed, network, optional=True)
    try:
        import torch  # noqa: F401  (fail here, with a clear message, if torch is missing)
    except ImportError:
        raise needs_torch("the torch target", network) from None
    with deep_recursion():
        plan = build_plan(network)
        with seeded(seed):
            module = _instantiate(network, plan)
    if network.is_graph:
        module = _graph_module(network, module)
    module.__class__ = named_class(type(module), network.name)
    if weights is not None:
        # setattr: nn.Module types its attributes as tensors and submodules; this is neither.
        setattr(module, "weights_report", load_weights(network, module, weights, allow_partial))  # noqa: B010
    return module


def named_class(base: type[nn.Module], name: str) -> type[nn.Module]:
    """A subclass of `base` named `name` (the network's name): `type(module).__name__` and the
    module's repr say which network it is, as a hand-written class would. Made once per pair;
    it pickles and copies as `base` does (see `_reduce_named`)."""
    key = (base, name)
    cls = _NAMED_CLASSES.get(key)
    if cls is None:
        members = {"__module__": base.__module__, "__qualname__": name, "__reduce_ex__": _reduce_named}
        cls = _NAMED_CLASSES[key] = type(name, (base,), members)
    return cls


_NAMED_CLASSES: dict[tuple[type, str], type] = {}


def _reduce_named(module: nn.Module, protocol: int) -> tuple[Any, ...]:
    # pickle and copy cannot find a class made at run time by its name: rebuild it from its base.
    reduced = object.__reduce_ex__(module, max(protocol, 2))
    assert isinstance(reduced, tuple)  # copyreg.__newobj__, (cls,), state, ...: a tuple from protocol 2 on
    rest = reduced[2:]
    base = type(module).__mro__[1]
    return (_new_named, (base, type(module).__name__), *rest)


def _new_named(base: type[nn.Module], name: str) -> nn.Module:
    module: nn.Module = object.__new__(named_class(base, name))
    return module


def load_weights(network: Network, module: nn.Module, source: WeightsSource, allow_partial: bool = False) -> MatchReport | None:
    """Load weights (keys and shapes checked, every difference named) and install their preprocessing, if any.

    Weights in another module's layout (torchvision's, timm's, ...) are matched by structure;
    the report of that matching is returned (None for weights in the module's own layout).
    """
    import numpy as np
    import torch

    from .numpy_backend import check_weights
    from .weights import read_weights
    from .weights_match import own_layout

    weights = read_weights(source)
    current = module.state_dict()
    given, report = own_layout(network, current, weights, allow_partial)
    expected = {key: tuple(value.shape) for key, value in current.items()}
    arrays = check_weights(network, expected, given)
    module.load_state_dict({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()})
    if weights.preprocess is not None:
        weights.preprocess.check_for(network, weights.source)
        install_preprocess(module, weights.preprocess, len(network.input_shape) + 1)
    return report


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
    x, mean, std = args[0], module.get_buffer("input_mean"), module.get_buffer("input_std")
    return ((x - mean) / std, *args[1:])


def _graph_module(network: Network, tree: nn.Module) -> nn.Module:
    """The tree's top-level modules under a `_Graph` that runs the data flow (see torch_plan's docstring)."""
    from .torch_modules import _Graph

    flow = network.program()
    steps = [
        (step.layer.path, step.layer.kind.name if isinstance(step.layer.kind, MergeKind) else "", step.inputs, step.output)
        for step in flow.steps
    ]
    graph = _Graph(steps, flow.outputs)
    for name, child in tree.named_children():
        graph.add_module(name, child)
    return graph


def _instantiate(network: Network, plan: ModulePlan) -> nn.Module:
    # Children first, in order: leaves are created in execution order (containers hold no
    # state), as the generated source's nested constructor calls create them.
    children = [_instantiate(network, child) for child in plan.children]
    call = plan.call
    if plan.kind == "layer":
        return _construct_layer(network, plan)
    if plan.kind in ("merge", "identity"):  # a merge takes its branches first; an identity has none
        return resolve_class(call.name)(*children, *call.args, **dict(call.kwargs))
    assert call.name in (SEQUENTIAL, NAMED_SEQUENTIAL)
    # Both mean an nn.Sequential of the children by name; filled one child at a time so that
    # a name this PyTorch refuses points at its label.
    container = resolve_class(SEQUENTIAL)()
    for child, module in zip(plan.children, children, strict=True):
        try:
            container.add_module(child.name, module)
        except KeyError:  # an attribute that this PyTorch has and names.MODULE_ATTRIBUTES lacks
            raise error(
                f"the label `{child.name}` is the name of an nn.Module attribute in this PyTorch",
                "choose another label",
                network,
                child.node.pos,
            ) from None
    return container


def _construct_layer(network: Network, plan: ModulePlan) -> nn.Module:
    """One leaf's module; a failure inside PyTorch becomes a CnnDslError that points at the layer."""
    layer = plan.node
    assert isinstance(layer, Layer)
    try:
        return resolve_class(plan.call.name)(*plan.call.args, **dict(plan.call.kwargs))
    except (RuntimeError, ValueError, TypeError, MemoryError) as err:
        raise error(
            f"PyTorch could not build {layer.describe} at `{layer.path}`: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            where=network,
            position=layer.pos,
        ) from None
