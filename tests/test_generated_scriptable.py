"""The helper classes (cnndsl.torch_modules) and so both torch targets work with torch.jit.script
and torch.export, as a reviewer would try them: every helper, in the generated file and in memory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_checks import one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl
from cnndsl import torch_modules
from cnndsl.codegen_torch import identifier
from cnndsl.network import Network

EVERY_HELPER = """network Net(width=8)
input 4x8x8
stem: [conv: Conv(width, 3, pad=1), bn: BatchNorm, ReLU]
Add[ Conv(width, 3, pad=1), BatchNorm, StochasticDepth(0.1) | ]
Add[ Conv(width, 1), LayerNorm, Scale(init=0.5) | Identity | ], ReLU
Concat[ Chunk(2, 0) | Chunk(2, 1), Conv(width / 2, 1) ], ChannelShuffle(2), PointwiseFC(width)
Mul[ | GlobalAvgPool, Conv(width, 1), Sigmoid ]
GlobalAvgPool, Flatten, FC(3)
"""


def generated_file_class(network: Network, folder: Path) -> type[nn.Module]:
    """The generated class imported from a file, as a user imports it (TorchScript reads the source)."""
    path = folder / f"{network.name.lower()}_generated.py"
    path.write_text(network.torch_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return getattr(module, identifier(network.name, "Network"))


def _modules(folder: Path) -> list[tuple[str, nn.Module]]:
    network = cnndsl.parse(EVERY_HELPER)
    torch.manual_seed(0)
    generated = generated_file_class(network, folder)()
    return [("generated", generated.eval()), ("in memory", network.to_torch(seed=0).eval())]


def test_the_network_uses_every_helper() -> None:
    source = cnndsl.parse(EVERY_HELPER).torch_source()
    for name in torch_modules.HELPERS:
        assert f"class {name}(" in source or f"def {name}(" in source, name


@pytest.mark.parametrize("index", [0, 1])
def test_torch_jit_script_and_export(index: int, tmp_path: Path) -> None:
    label, module = _modules(tmp_path)[index]
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = module(x)
        scripted = torch.jit.script(module)
        assert torch.allclose(scripted(x), expected, atol=1e-6), label
        exported = torch.export.export(module, (x,))
        assert torch.allclose(exported.module()(x), expected, atol=1e-6), label
    assert list(scripted.state_dict()) == list(module.state_dict())


def test_zoo_networks_script(tmp_path: Path) -> None:
    for name in ("resnet18", "shufflenet_v2_x1_0", "squeezenet1_1"):
        network = cnndsl.load(name)
        module = generated_file_class(network, tmp_path)().eval()
        x = torch.randn(1, *network.input_shape)
        with torch.no_grad():
            assert torch.allclose(torch.jit.script(module)(x), module(x), atol=1e-5), name
