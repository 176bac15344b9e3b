"""Every file in architectures/ through the PyTorch target: counts, shapes, generated source, torchvision.

The zoo grows; these tests take whatever `architectures/*.cnn` (and `examples/*.cnn`)
holds. A zoo file whose stem is a model in tests/data/torchvision_ref.json
(CNNDSL_REFERENCE overrides the path; the zoo names files after torchvision's models) is
also compared with torchvision's parameter and buffer totals and its sorted list of
state_dict tensor shapes.

Every network is built and run on the `meta` device (PyTorch's own shape functions, no
memory, no initialisation); the smaller ones also run with real tensors at a small input
size that they accept, so the whole zoo stays fast on two CPU cores.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from torch_checks import assert_counts_match, assert_forward_matches, generated_class, leaf_output_shapes, one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl
from cnndsl.layers import MergeKind

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "architectures").glob("*.cnn")) + sorted((ROOT / "examples").glob("*.cnn"))
REFERENCE_FILE = Path(os.environ.get("CNNDSL_REFERENCE", ROOT / "tests" / "data" / "torchvision_ref.json"))
REFERENCE = json.loads(REFERENCE_FILE.read_text())["models"]
SMALL_SIDES = (32, 64, 96)
"""Input sides tried for the forward checks before falling back to the file's own input."""
REAL_FORWARD_PARAM_LIMIT = 6_000_000
"""Networks up to this size also run with real tensors (initialising big ones costs seconds);
every network runs on the meta device."""


def _ids(path: Path) -> str:
    return path.stem if path.parent.name == "architectures" else f"{path.parent.name}/{path.stem}"


def _checks(path: Path) -> bool:
    # For choosing parameters at collection: a file with errors (the zoo is being written)
    # must fail its own tests, not stop this module from being collected.
    return cnndsl.check_source(path.read_bytes(), str(path))[0] is not None


def small_network(path: Path) -> cnndsl.Network:
    """The network at the smallest tried input that it accepts (same channels), else as written."""
    network = cnndsl.load(path)
    if not network.input_shape.is_image:
        return network
    channels = network.input_shape.channels
    for side in SMALL_SIDES:
        if side >= min(network.input_shape.spatial):
            break
        checked, _ = cnndsl.check_source(path.read_bytes(), str(path), (channels, side, side))
        if checked is not None:
            return checked
    return network


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_module_matches_the_ir(path: Path) -> None:
    network = cnndsl.load(path)
    with torch.device("meta"):
        module = network.to_torch()
    assert_counts_match(network, module)


REFERENCED = [p for p in ZOO if p.parent.name == "architectures" and p.stem in REFERENCE]


def test_the_zoo_and_its_references_are_in_the_repository() -> None:
    assert len(ZOO) >= 27 and len(REFERENCED) == 24


@pytest.mark.parametrize("path", REFERENCED, ids=_ids)
def test_module_matches_torchvision(path: Path) -> None:
    network = cnndsl.load(path)
    with torch.device("meta"):
        module = network.to_torch()
    reference = REFERENCE[path.stem]
    assert sum(p.numel() for p in module.parameters()) == reference["params"]
    assert sum(b.numel() for b in module.buffers()) == reference["buffers"]
    shapes = sorted(tuple(t.shape) for t in module.state_dict().values())
    assert shapes == sorted(tuple(s) for s in reference["param_shapes"].values())
    assert list(network.output_shape) == reference["output"][1:]


@cache
def source_of(path: Path) -> str:
    """Generated once per file: several tests read it, and generation re-checks the file per parameter."""
    return cnndsl.load(path).torch_source()


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_generated_source_has_the_same_state_dict(path: Path) -> None:
    network = cnndsl.load(path)
    with torch.device("meta"):
        memory = network.to_torch().state_dict()
        generated = generated_class(network, source_of(path))().state_dict()
    assert [(k, tuple(v.shape)) for k, v in generated.items()] == [(k, tuple(v.shape)) for k, v in memory.items()]


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_leaf_output_shapes_match_the_ir(path: Path) -> None:
    # On the meta device: PyTorch's own shape functions, at the file's full input size, in
    # no time and no memory. The test below repeats this with real tensors on small networks.
    network = cnndsl.load(path)
    with torch.device("meta"):
        module = network.to_torch()
        x = torch.empty(1, *network.input_shape)
        shapes = leaf_output_shapes(network, module, x)
        out = module(x)
    # The graph module adds a merge's branches itself: no merge module runs (the layers reading it check its shape).
    ran = [layer for layer in network.layers if not (network.is_graph and isinstance(layer.kind, MergeKind))]
    assert {layer.path: tuple(layer.out_shape) for layer in ran} == shapes
    first = out[0] if isinstance(out, tuple) else out
    assert tuple(first.shape) == (1, *network.output_shape)


@pytest.mark.parametrize("path", [p for p in ZOO if _checks(p) and cnndsl.load(p).params <= REAL_FORWARD_PARAM_LIMIT], ids=_ids)
def test_real_forward_and_generated_source_compute_the_same(path: Path) -> None:
    network = small_network(path)
    memory = network.to_torch(seed=0).eval()
    x = assert_forward_matches(network, memory)
    generated = generated_class(network)().eval()
    generated.load_state_dict(memory.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(generated(x), memory(x), rtol=0, atol=0)


@pytest.mark.parametrize("path", [p for p in ZOO if _checks(p) and "num_classes" in cnndsl.load(p).parameters], ids=_ids)
def test_generated_constructor_takes_num_classes(path: Path) -> None:
    network = cnndsl.load(path)
    expected = cnndsl.load(path, num_classes=7)
    with torch.device("meta"):
        model = generated_class(network, source_of(path))(num_classes=7)
        out = model(torch.empty(1, *network.input_shape, device="meta"))
    assert tuple(out.shape) == (1, 7)
    assert sum(p.numel() for p in model.parameters()) == expected.params
