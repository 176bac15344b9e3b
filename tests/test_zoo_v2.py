"""The 1-D and 3-D zoo files (M5 on raw audio, R3D-18 on video) against their references.

Ground truth is tests/data/architectures_v2.json (see tests/data/README.md): counts, output
shapes, every weighted leaf's output shape and every state_dict shape, recorded from
torchvision (R3D-18) and from a plain-PyTorch M5 written from the paper.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnndsl

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "architectures_v2.json"
ZOO_V2 = {"m5": "m5", "r3d_18": "r3d_18"}
"""File stem -> model key in architectures_v2.json."""
WEIGHTED = {
    "Conv1d",
    "Conv3d",
    "Conv3DSimple",
    "BatchNorm1d",
    "BatchNorm3d",
    "Linear",
}  # Conv3DSimple: torchvision's nn.Conv3d in R3D blocks


@cache
def reference(key: str) -> dict[str, Any]:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))["models"][key]


@cache
def load(stem: str) -> cnndsl.Network:
    return cnndsl.load(ROOT / "architectures" / f"{stem}.cnn")


@pytest.mark.parametrize("stem", sorted(ZOO_V2))
def test_counts_and_shapes_match_the_reference(stem: str) -> None:
    net, ref = load(stem), reference(ZOO_V2[stem])
    assert (net.params, net.buffers) == (ref["params"], ref["buffers"])
    assert list(net.input_shape) == ref["input"][1:]
    assert [list(net.output_shape)] == [shape[1:] for shape in ref["outputs"]]


@pytest.mark.parametrize("stem", sorted(ZOO_V2))
def test_weighted_layers_have_the_reference_output_shapes_in_order(stem: str) -> None:
    net, ref = load(stem), reference(ZOO_V2[stem])
    expected = [tuple(shapes[0][1:]) for _, kind, shapes in ref["leaf_outputs"] if kind in WEIGHTED]
    actual = [tuple(layer.out_shape) for layer in net.layers if layer.kind.name in ("Conv", "BatchNorm", "FC")]
    assert actual == expected


@pytest.mark.parametrize("stem", sorted(ZOO_V2))
def test_state_dict_shapes_match_the_reference_in_order(stem: str) -> None:
    torch = pytest.importorskip("torch")
    net, ref = load(stem), reference(ZOO_V2[stem])
    with torch.device("meta"):
        state = net.to_torch().state_dict()
    assert [tuple(t.shape) for t in state.values()] == [tuple(s) for s in ref["param_shapes"].values()]


def test_m5_is_the_same_function_as_a_plain_pytorch_m5() -> None:
    """M5 as torchaudio's tutorial writes it, random weights loaded positionally: equal outputs in eval, NumPy too."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class M5(nn.Module):
        def __init__(self, n_input: int = 1, n_output: int = 35, stride: int = 16, n_channel: int = 32) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(n_input, n_channel, kernel_size=80, stride=stride)
            self.bn1 = nn.BatchNorm1d(n_channel)
            self.pool1 = nn.MaxPool1d(4)
            self.conv2 = nn.Conv1d(n_channel, n_channel, kernel_size=3)
            self.bn2 = nn.BatchNorm1d(n_channel)
            self.pool2 = nn.MaxPool1d(4)
            self.conv3 = nn.Conv1d(n_channel, 2 * n_channel, kernel_size=3)
            self.bn3 = nn.BatchNorm1d(2 * n_channel)
            self.pool3 = nn.MaxPool1d(4)
            self.conv4 = nn.Conv1d(2 * n_channel, 2 * n_channel, kernel_size=3)
            self.bn4 = nn.BatchNorm1d(2 * n_channel)
            self.pool4 = nn.MaxPool1d(4)
            self.fc1 = nn.Linear(2 * n_channel, n_output)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv, bn, pool in (
                (self.conv1, self.bn1, self.pool1),
                (self.conv2, self.bn2, self.pool2),
                (self.conv3, self.bn3, self.pool3),
                (self.conv4, self.bn4, self.pool4),
            ):
                x = pool(torch.relu(bn(conv(x))))
            return self.fc1(torch.flatten(nn.functional.adaptive_avg_pool1d(x, 1), 1))

    twin = M5()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tensor in twin.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)  # BN variances stay positive
    twin.eval()
    net = load("m5")
    ours = net.to_torch().eval()
    ours.load_state_dict(dict(zip(ours.state_dict(), twin.state_dict().values(), strict=True)))
    x = torch.randn(2, 1, 8000, generator=generator)
    with torch.no_grad():
        expected = twin(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=0)
    numpy_model = net.to_numpy({key: value.numpy() for key, value in ours.state_dict().items()})
    y = numpy_model(x.numpy())
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-4, atol=1e-4 * float(np.abs(expected.numpy()).max()))
