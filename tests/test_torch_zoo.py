"""Every file in architectures/ through the PyTorch target: counts, shapes, generated source, torchvision.

The zoo grows; these tests take whatever `architectures/*.cnn` holds. A file whose stem is a
model in ../shared/reference/torchvision_ref.json (the zoo names files after torchvision's
models) is also compared with torchvision's parameter and buffer totals and its sorted
list of state_dict tensor shapes.

Modules are built on the `meta` device for the counts (no memory, no initialisation), and
the forward checks run at a small input size where the network accepts one, so the whole
zoo stays fast on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_checks import assert_counts_match, assert_forward_matches, generated_class

import cnndsl

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "architectures").glob("*.cnn"))
REFERENCE_FILE = ROOT.parent / "shared" / "reference" / "torchvision_ref.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text())["models"] if REFERENCE_FILE.exists() else {}
SMALL_SIDES = (32, 64, 96)
"""Input sides tried for the forward checks before falling back to the file's own input."""
EQUAL_OUTPUT_PARAM_LIMIT = 15_000_000
"""Above this, initialising real weights twice costs seconds; structure and keys are still compared."""

pytestmark = pytest.mark.skipif(not ZOO, reason="architectures/ holds no .cnn files")


def _ids(path: Path) -> str:
    return path.stem


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


def zeroed(module: nn.Module) -> nn.Module:
    """Real storage without initialisation: `to_empty` from meta, then zeros (shapes are what matters)."""
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.zero_()
    return module


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_module_matches_the_ir_and_torchvision(path: Path) -> None:
    network = cnndsl.load(path)
    with torch.device("meta"):
        module = network.to_torch()
    assert_counts_match(network, module)
    shapes = sorted(tuple(t.shape) for t in module.state_dict().values())
    reference = REFERENCE.get(path.stem)
    if reference is not None:
        assert network.params == reference["params"]
        assert network.buffers == reference["buffers"]
        assert shapes == sorted(tuple(s) for s in reference["param_shapes"].values())
        assert list(network.output_shape) == reference["output"][1:]


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_generated_source_has_the_same_state_dict(path: Path) -> None:
    network = cnndsl.load(path)
    with torch.device("meta"):
        memory = network.to_torch().state_dict()
        generated = generated_class(network)().state_dict()
    assert [(k, tuple(v.shape)) for k, v in generated.items()] == [(k, tuple(v.shape)) for k, v in memory.items()]


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_leaf_output_shapes_match_the_ir(path: Path) -> None:
    network = small_network(path)
    with torch.device("meta"):
        module = network.to_torch()
    assert_forward_matches(network, zeroed(module), batch=1)


@pytest.mark.parametrize("path", ZOO, ids=_ids)
def test_generated_source_computes_the_same_outputs(path: Path) -> None:
    network = small_network(path)
    if network.params > EQUAL_OUTPUT_PARAM_LIMIT:
        pytest.skip(f"{network.params:,} parameters: compared by structure and keys only")
    memory = network.to_torch(seed=0).eval()
    generated = generated_class(network)().eval()
    generated.load_state_dict(memory.state_dict())
    x = torch.randn(2, *network.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), memory(x), rtol=0, atol=0)


@pytest.mark.parametrize("path", [p for p in ZOO if "num_classes" in cnndsl.load(p).parameters], ids=_ids)
def test_generated_constructor_takes_num_classes(path: Path) -> None:
    network = cnndsl.load(path)
    expected = cnndsl.load(path, num_classes=7)
    with torch.device("meta"):
        model = generated_class(network)(num_classes=7)
        out = model(torch.empty(1, *network.input_shape, device="meta"))
    assert tuple(out.shape) == (1, 7)
    assert sum(p.numel() for p in model.parameters()) == expected.params
