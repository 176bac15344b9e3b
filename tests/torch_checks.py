"""Checks shared by the PyTorch-target tests: the IR against a real module, and generated source loading."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cnndsl import Network
from cnndsl.ir import Layer
from cnndsl.layers import MergeKind


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for these tiny tensors: on a busy machine OpenMP threads that wait
    for each other make small convolutions ten times slower, and one thread costs nothing here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_generated(source: str, name: str = "generated_model") -> types.ModuleType:
    """Execute generated source as a fresh module (it must need nothing but torch)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def generated_class(network: Network, source: str | None = None) -> type[nn.Module]:
    from cnndsl.codegen_torch import identifier

    module = load_generated(source if source is not None else network.torch_source())
    return getattr(module, identifier(network.name, "Network"))


def compiled_with_weights(network: Network, weights: Path, folder: Path, **options: Any) -> nn.Module:
    """The stand-alone file `cnndsl compile FILE --weights W --weights-out net.safetensors` writes, imported,
    with the weights file it wrote loaded strictly (in eval mode)."""
    from cnndsl.compiler import compile_network
    from cnndsl.weights import read_weights

    source_path, weights_path = folder / "net.py", folder / "net.safetensors"
    compile_network(network, "torch", source_path, weights_path, weights=weights, **options)
    generated = generated_class(network, source_path.read_text())().eval()
    state = {key: torch.from_numpy(value) for key, value in read_weights(weights_path).state_dict.items()}
    generated.load_state_dict(state, strict=True)
    return generated


def hooked_layers(network: Network) -> list[Layer]:
    """The leaf layers that run as a module of their own: all of them, except a graph network's merges (its
    module adds or concatenates the branches' tensors itself; the outputs check those)."""
    return [layer for layer in network.layers if not (network.is_graph and isinstance(layer.kind, MergeKind))]


def outputs_of(out: Any) -> tuple[torch.Tensor, ...]:
    """A module's outputs as a tuple: one tensor, or the tuple of a network with an `output` line."""
    return out if isinstance(out, tuple) else (out,)


def leaf_output_shapes(network: Network, module: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Each hooked layer's actual output shape (batch excluded), from forward hooks on the modules at its path.

    A merge layer has its Parallel's path, so its hook sits on the merge container.
    """
    modules = dict(module.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for layer in hooked_layers(network):
        target = modules[layer.path]

        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor, path: str = layer.path) -> None:
            shapes[path] = tuple(out.shape[1:])

        handles.append(target.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def assert_counts_match(network: Network, module: nn.Module) -> None:
    """Parameter and buffer totals, and every layer's share of the state_dict, equal the IR's."""
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    assert params == network.params, (params, network.params)
    assert buffers == network.buffers, (buffers, network.buffers)
    state = module.state_dict()
    per_prefix: dict[str, int] = {}
    for key, tensor in state.items():
        prefix = key.rsplit(".", 1)[0]
        per_prefix[prefix] = per_prefix.get(prefix, 0) + tensor.numel()
    expected = {layer.path: layer.params + layer.buffers for layer in network.layers if layer.params + layer.buffers}
    assert per_prefix == expected


def assert_forward_matches(network: Network, module: nn.Module, batch: int = 2) -> torch.Tensor:
    """Output shape and every leaf's output shape equal the inferred ones; returns the output."""
    x = torch.randn(batch, *network.input_shape)
    module.eval()
    shapes = leaf_output_shapes(network, module, x)
    for layer in hooked_layers(network):
        assert shapes[layer.path] == tuple(layer.out_shape), (layer.path, layer.describe, shapes[layer.path], layer.out_shape)
    with torch.no_grad():
        out = outputs_of(module(x))
    assert [tuple(y.shape) for y in out] == [(batch, *shape) for shape in network.output_shapes]
    return x
