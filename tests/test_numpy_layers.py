"""Per layer kind: the three backends (NumPy, the in-memory PyTorch module, the generated
PyTorch source) against each other, and a float64 finite-difference check of NumPy's.

Parameterised over the registry: every registered kind must have rows in NUMPY_CASES (a
kind without rows fails `test_every_kind_has_numpy_cases`), so a new kind is covered as
soon as it is registered. The finite-difference check needs no torch.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy_reference import FORWARD_TOLERANCE, compare_with_torch, relative_error, require_torch

import cnndsl
from cnndsl import CnnDslError
from cnndsl.layers import KINDS
from cnndsl.numpy_backend import NumpyModel

# kind -> [(input shape, body)]: windows with stride, padding, dilation, ceil mode, groups,
# depthwise multipliers, flat and image inputs, and every merge with more than one branch.
NUMPY_CASES: dict[str, list[tuple[str, str]]] = {
    "Conv": [
        ("3x7x7", "Conv(4, 3)"),
        ("3x8x7", "Conv(5, 3, stride=2, pad=1, bias=false)"),
        ("2x9x8", "Conv(4, (3, 2), stride=(2, 1), pad=(1, 0), dilation=2)"),
        ("6x6x6", "Conv(9, 3, pad=same, groups=3)"),
        ("4x6x6", "Conv(4, 3, pad=1, groups=4)"),
        ("3x7x7", "Conv(6, 3, stride=2, groups=3, bias=false)"),
        ("3x7x6", "Conv(4, 3, pad=(2, 1), pad_mode=reflect)"),
        ("2x6x7", "Conv(4, 4, stride=1, pad=same, pad_mode=replicate, dilation=1)"),
        ("3x5x6", "Conv(4, (2, 3), pad=same)"),
        ("4x5x5", "Conv2d(4, 4, 3, 2, 2, groups=2, padding_mode=circular)"),
        ("3x17", "Conv(4, 5, stride=3, pad=2, dilation=2)"),
        ("4x9", "Conv1d(4, 6, 3, padding=1, groups=2)"),
        ("2x5x6x7", "Conv(3, (3, 1, 2), stride=(1, 2, 1), pad=(1, 0, 1))"),
        ("2x4x5x5", "Conv3d(2, 4, 3, dilation=(1, 2, 1), bias=false)"),
        ("3x9", "Conv(4, 4, pad=same, pad_mode=reflect)"),  # padding modes and one-sided `same` at ranks 1 and 3
        ("2x4x5x6", "Conv(3, (2, 3, 2), pad=same, pad_mode=circular)"),
        ("2x3x4x4", "Conv3d(2, 3, 3, padding=1, padding_mode=replicate)"),
    ],
    "DWConv": [
        ("4x8x8", "DWConv(3, stride=2, pad=1)"),
        ("3x7x7", "DWConv(3, multiplier=2, bias=false)"),
        ("3x7x9", "DWConv((3, 1), stride=(1, 2), pad=same)"),
        ("3x6x6", "DWConv(4, pad=same, pad_mode=circular, multiplier=2)"),
        ("2x6x7", "DWConv(3, stride=2, pad=1, pad_mode=reflect)"),
        ("3x11", "DWConv(3, stride=2, multiplier=2)"),
        ("2x5x5x6", "DWConv(3, stride=(1, 2, 2), pad=1)"),
        ("2x8", "DWConv(3, stride=2, pad=2, pad_mode=replicate, multiplier=2)"),
        ("2x3x4x5", "DWConv(2, pad=same, pad_mode=reflect)"),
    ],
    "MaxPool": [
        ("3x8x8", "MaxPool(2)"),
        ("2x9x9", "MaxPool(3, stride=2, pad=1)"),
        ("2x8x8", "MaxPool(3, stride=2, ceil=true)"),
        ("2x8x7", "MaxPool((3, 2), stride=(2, 1), pad=(1, 1), ceil=true)"),
        ("3x17", "MaxPool(4)"),
        ("2x10", "MaxPool1d(3, stride=2, padding=1, ceil_mode=true)"),
        ("2x4x6x6", "MaxPool(3, stride=(1, 2, 2), pad=1)"),
        ("2x5x5x4", "MaxPool3d((1, 2, 2), ceil_mode=true)"),
    ],
    "AvgPool": [
        ("3x8x8", "AvgPool(2)"),
        ("2x9x9", "AvgPool(3, stride=2, pad=1)"),
        ("2x8x8", "AvgPool(3, stride=2, pad=1, ceil=true)"),
        ("2x7x6", "AvgPool((3, 2), stride=(2, 1), pad=(1, 1), ceil=true)"),
        ("3x9", "AvgPool(3, stride=2, pad=1, ceil=true)"),
        ("2x5x6x6", "AvgPool3d(2, stride=(1, 2, 2), padding=(1, 0, 1))"),
    ],
    "GlobalAvgPool": [("4x5x3", "GlobalAvgPool"), ("4x7", "GlobalAvgPool"), ("3x3x4x5", "GlobalAvgPool")],
    "AdaptiveAvgPool": [
        ("3x7x7", "AdaptiveAvgPool(3)"),
        ("2x5x9", "AdaptiveAvgPool((2, 4))"),
        ("2x3x4", "AdaptiveAvgPool(5)"),
        ("3x10", "AdaptiveAvgPool1d(4)"),
        ("2x4x5x6", "AdaptiveAvgPool((2, 3, 4))"),
    ],
    "GlobalMaxPool": [("4x5x3", "GlobalMaxPool"), ("3x7", "GlobalMaxPool"), ("2x3x4x5", "GMP")],
    "AdaptiveMaxPool": [
        ("3x7x7", "AdaptiveMaxPool(3)"),
        ("2x5x9", "AdaptiveMaxPool((2, 4))"),
        ("2x3x4", "AdaptiveMaxPool2d(5)"),
        ("3x8x8", "AdaptiveMaxPool(4)"),  # bins that divide the axes: strided views, no gather
        ("3x13", "AdaptiveMaxPool(5)"),
        ("2x12", "AdaptiveMaxPool1d(3)"),
        ("2x75", "AdaptiveMaxPool(2)"),  # bins longer than _SHORT_BIN: one reduction, not a loop over entries
        ("2x4x5x7", "AdaptiveMaxPool((2, 3, 2))"),
        ("2x4x6x6", "AdaptiveMaxPool3d((1, 3, 7))"),
    ],
    "PixelShuffle": [("18x3x4", "PixelShuffle(3)"), ("8x2x3", "Conv(8, 3, pad=1), PixelShuffle(2)")],
    "PixelUnshuffle": [("2x6x4", "PixelUnshuffle(2)")],
    "ConvTranspose": [
        ("3x4x5", "ConvTranspose(4, 3)"),
        ("3x4x4", "ConvTranspose(5, 4, stride=2, pad=1, bias=false)"),
        ("4x3x4", "ConvTranspose(6, (3, 2), stride=(2, 3), pad=(1, 0), output_pad=(1, 2), groups=2)"),
        ("2x3x3", "ConvTranspose(3, 3, stride=2, dilation=2, output_pad=1)"),
        ("4x3x3", "ConvTranspose2d(4, 4, 2, 2, groups=4)"),
        ("3x3x4", "ConvTranspose(4, 2, stride=2)"),  # U-Net's: kernel = stride, each tap its own output phase
        ("2x3x3", "ConvTranspose(3, 1, stride=2)"),  # a kernel smaller than the stride: phases with the bias alone
        ("2x5x5", "ConvTranspose(3, 3, stride=2, pad=3)"),  # more padding than the kernel reaches: the input is cropped
        ("3x6", "ConvTranspose(4, 3, stride=2, pad=1, output_pad=1)"),  # 1-D (nn.ConvTranspose1d)
        ("4x5", "ConvTranspose1d(4, 6, 4, stride=3, padding=2, dilation=2, groups=2, bias=False)"),
        ("2x3x4x3", "ConvTranspose(3, (2, 3, 2), stride=(1, 2, 2), pad=(0, 1, 0), output_pad=(0, 1, 1))"),  # 3-D
        ("2x2x3x3", "ConvTranspose3d(2, 4, 3, stride=2, padding=1, dilation=(1, 2, 1))"),
    ],
    "Upsample": [
        ("3x3x4", "Upsample(2)"),
        ("2x5x4", "Upsample(size=(7, 3))"),
        ("2x3x4", "Upsample(2, mode=bilinear)"),
        ("2x3x4", "Upsample(scale_factor=1.5, mode=bilinear, align_corners=true)"),
        ("2x4x5", "Upsample(size=(7, 3), mode=bilinear)"),
        ("2x4x5", "Upsample(size=(1, 9), mode=bilinear, align_corners=true)"),
        ("2x5x4", "Upsample(1.7)"),  # a fractional factor: PyTorch's float32 source index, floor(i / 1.7)
        ("2x6x5", "Upsample(size=(4, 3))"),  # nearest, shrinking
        ("2x6x5", "Upsample(0.6, mode=bilinear)"),
        ("3x7", "Upsample(2)"),
        ("2x7", "Upsample(size=10, mode=linear)"),
        ("2x5", "Upsample(scale_factor=1.5, mode=linear, align_corners=true)"),
        ("2x8", "MaxPool(2), Upsample(like=@input, mode=linear)"),
        ("2x2x3x4", "Upsample(2)"),
        ("2x3x4", "Upsample((2, 1.5), mode=bilinear)"),  # one factor per axis, as nn.Upsample's scale_factor tuple
        ("2x3x4", "Upsample(scale_factor=(3, 1))"),
        ("2x2x3x4", "Upsample((1, 2, 3), mode=trilinear)"),
        ("2x2x3x4", "Upsample(size=(3, 5, 7), mode=trilinear)"),
        ("2x3x4x3", "Upsample(1.5, mode=trilinear, align_corners=true)"),
        ("2x4x6x5", "Upsample(size=(2, 3, 4), mode=trilinear)"),  # shrinking
        # Axes past _MATRIX_LIMIT: gathers forward, runs of outputs gathered back (a long signal).
        ("2x300", "Upsample(2, mode=linear)"),
        ("2x300", "Upsample(size=130)"),
        ("2x260", "Upsample(scale_factor=2.5, mode=linear, align_corners=true)"),
        ("2x300", "Upsample(0.45, mode=linear)"),
        ("1x2x3x300", "Upsample(size=(3, 2, 500), mode=trilinear)"),
        # Integer factors of the linear modes (align_corners false): phase blends along each axis,
        # on any signal and on images and volumes with an axis past _MATRIX_LIMIT ("2x300" above too).
        ("2x7", "Upsample(3, mode=linear)"),  # a middle phase that copies, one left of the centre
        ("2x9", "Upsample(size=36, mode=linear)"),  # four phases, a factor given by the size
        ("2x1", "Upsample(4, mode=linear)"),  # one input: every output is its copy
        ("2x3", "Upsample(2.2, mode=linear)"),  # 6 outputs from 3 inputs, but PyTorch's ratio is 1/2.2, not 1/2
        ("2x3x300", "Upsample(2, mode=bilinear)"),
        ("1x2x3x300", "Upsample(3, mode=trilinear)"),
    ],
    "Reshape": [
        ("24", "Reshape(6, 2, 2)"),
        ("12", "FC(18), Unflatten(2, 3, 3), Conv(2, 3, pad=1)"),
        ("12", "FC(18), Unflatten(1, (2, 3, 3)), Conv(2, 3, pad=1)"),  # PyTorch's nn.Unflatten(1, (c, h, w))
        ("12", "FC(18), Unflatten(1, (2, 9)), Conv(2, 3)"),
    ],
    "PointwiseFC": [("4x3x5", "PointwiseFC(6)"), ("3x2x2", "PointwiseLinear(2, bias=false), PointwiseFC(5)")],
    "LayerNorm": [
        ("4x5x5", "LayerNorm"),
        ("6", "LayerNorm(eps=1e-6)"),
        ("4x3x3", "LayerNorm(4, elementwise_affine=false)"),
        ("4x7", "LayerNorm"),  # over the channels of a signal and of a volume, as of an image
        ("3x2x3x4", "LayerNorm(eps=1e-6)"),
    ],
    "GroupNorm": [
        ("6x4x4", "GroupNorm(3)"),
        ("6x3x4", "GroupNorm(2, 6, affine=false)"),
        ("4x3x3", "GroupNorm(1, eps=1e-3)"),
        ("6x9", "GroupNorm(3)"),
        ("4x2x3x4", "GroupNorm(2, affine=false)"),
        ("4x3x3", "Conv(6, 1), GroupNorm(3)"),  # owns the convolution's output: normalises it in place in eval
    ],
    "InstanceNorm": [
        ("3x4x5", "InstanceNorm"),
        ("3x4x5", "InstanceNorm(affine=true, track_running_stats=true, momentum=0.3)"),
        ("3x4x4", "InstanceNorm2d(3, affine=true)"),
        ("3x10", "InstanceNorm1d(3, affine=true, track_running_stats=true)"),
        ("3x2x3x4", "InstanceNorm(affine=true)"),
        ("2x2x3x3", "InstanceNorm3d(2, track_running_stats=true)"),
    ],
    "LocalResponseNorm": [
        ("7x4x4", "LRN(3)"),
        ("6x3x3", "LocalResponseNorm(4, alpha=0.01, beta=0.6, k=2)"),
        ("3x3x3", "LRN(5, alpha=0.1)"),  # a window wider than the channels
        ("6x9", "LRN(3, alpha=0.1, k=2)"),
        ("5x2x3x3", "LocalResponseNorm(4, alpha=0.05)"),
    ],
    "Scale": [
        ("5x3x3", "Scale(0.5)"),
        ("4x3x3", "Conv(4, 1), Scale"),
        ("4x7", "Conv(4, 1), Scale(0.5)"),
        ("3x2x3x3", "Scale(2)"),
    ],
    "Dropout2d": [
        ("4x3x3", "Dropout2d(0.4)"),
        ("4x3x3", "Conv(4, 1), Dropout2d"),
        ("4x9", "Dropout1d(0.4)"),
        ("4x2x3x3", "Conv(4, 1), Dropout3d(0.3)"),
    ],
    "StochasticDepth": [
        ("4x3x3", "StochasticDepth(0.3)"),
        ("4x3x3", "StochasticDepth(0.5, mode=batch)"),
        ("8", "StochasticDepth(0.3)"),
        ("4x3x3", "Add[ Conv(4, 1), StochasticDepth(0.5) | ]"),
    ],
    "FC": [("10", "FC(5)"), ("7", "FC(3, bias=false)")],
    "Flatten": [("3x4x5", "flatten"), ("6", "flatten")],
    "BatchNorm": [
        ("4x5x5", "BN"),
        ("6", "BN"),
        ("3x4x4", "BatchNorm(eps=0.001, momentum=0.3)"),
        ("4x9", "BatchNorm1d(4)"),
        ("3x3x4x4", "BatchNorm3d(3, momentum=0.2)"),
    ],
    "Dropout": [("3x4x4", "Dropout(0.3)"), ("20", "Dropout"), ("3x9", "Dropout(0.5)"), ("2x3x4x4", "Dropout(0.2)")],
    "ReLU": [("3x4x4", "ReLU"), ("3x7", "ReLU"), ("2x3x3x3", "ReLU")],
    "ReLU6": [("3x4x4", "ReLU6")],
    "Sigmoid": [("3x4x4", "Sigmoid")],
    "Tanh": [("3x4x4", "Tanh")],
    "GELU": [("3x4x4", "GELU"), ("3x4x4", "GELU(approximate=tanh)")],
    "ELU": [("3x4x4", "ELU"), ("6", "ELU(alpha=0.5)"), ("3x4x4", "Conv(3, 1), ELU")],  # in place after Conv
    "Mish": [("3x4x4", "Mish")],
    "Softplus": [("3x4x4", "Softplus"), ("3x4x4", "Softplus(beta=2, threshold=1)")],
    "PReLU": [("3x4x4", "PReLU"), ("3x4x4", "PReLU(3, init=0.1)"), ("5", "PReLU(5)"), ("3x4x4", "PReLU(init=1.5)")],
    "LogSoftmax": [("4x3x3", "LogSoftmax"), ("7", "LogSoftmax")],
    "SiLU": [("3x4x4", "SiLU")],
    "Hardswish": [("3x4x4", "Hardswish")],
    "Hardsigmoid": [("3x4x4", "Hardsigmoid")],
    "LeakyReLU": [("3x4x4", "LeakyReLU(0.2)")],
    "Softmax": [("4x3x3", "Softmax"), ("7", "Softmax")],
    "Identity": [("3x4x4", "Identity")],
    "ChannelShuffle": [("6x3x3", "ChannelShuffle(3)"), ("6x5", "ChannelShuffle(2)"), ("4x2x3x3", "ChannelShuffle(2)")],
    "Chunk": [("6x3x3", "Chunk(3, 1)"), ("8", "Chunk(2, 0)"), ("6x5", "Chunk(2, 1)"), ("4x2x3x3", "Chunk(2, 0)")],
    "Add": [
        ("4x5x5", "Add[ Conv(4, 3, pad=1) | | ReLU ]"),
        ("4x5x5", "Add[ conv: Conv(4, 1), norm: BN | ], ReLU"),  # in place after BN; labels: the `sequential` helper
        ("4x9", "Add[ Conv(4, 3, pad=1), BN | ], ReLU"),
        ("3x3x4x4", "Add[ Conv(3, 3, pad=1), BN | ], ReLU"),
    ],
    "Concat": [
        ("3x5x5", "Concat[ Conv(2, 1) | Identity | MaxPool(3, stride=1, pad=1) ]"),
        ("6", "Concat[ FC(3) | ]"),
        ("3x8", "Concat[ Conv(2, 3, pad=1) | MaxPool(3, stride=1, pad=1) ]"),
        ("2x3x4x4", "Concat[ Conv(2, 1) | Identity ]"),
    ],
    "Mul": [
        ("4x5x5", "Mul[ Identity | GlobalAvgPool, Conv(4, 1), Sigmoid ]"),
        ("4x5x5", "Mul[ Conv(4, 1) | Conv(1, 1) | ]"),
        ("4x9", "Mul[ Identity | GlobalAvgPool, Conv(4, 1), Sigmoid ]"),
        ("4x3x4x4", "Mul[ Identity | GlobalAvgPool, Conv(4, 1), Sigmoid ]"),
    ],
}
"""kind -> [(input shape, body)]."""

CASES = [(kind, shape, body) for kind in KINDS for shape, body in NUMPY_CASES.get(kind, [("4x6x6", kind)])]
IDS = [f"{kind}-{body}@{shape}" for kind, shape, body in CASES]


def network(shape: str, body: str) -> cnndsl.Network:
    return cnndsl.parse(f"input {shape}\n{body}\n", "<case>")


def batch(net: cnndsl.Network, n: int = 3, dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_shape)).astype(dtype)


def test_every_kind_has_numpy_cases() -> None:
    missing = [kind for kind in KINDS if kind not in NUMPY_CASES]
    assert not missing, f"add NUMPY_CASES rows for {missing}"
    unknown = [kind for kind in NUMPY_CASES if kind not in KINDS]
    assert not unknown, f"NUMPY_CASES names unregistered kinds {unknown}"


@pytest.mark.parametrize("kind", sorted(k for k, v in KINDS.items() if v.input_rank in ("spatial", "any")))
def test_every_spatial_kind_runs_at_every_rank_it_declares(kind: str) -> None:
    """A kind over spatial axes has cases at each rank it supports (1-D, 2-D, 3-D), so its
    kernels are compared with torch's `*1d`/`*2d`/`*3d` modules on every one."""
    declared = set(KINDS[kind].spatial_ranks)
    covered = {network(shape, "Identity").input_shape.spatial_rank for shape, _ in NUMPY_CASES[kind]}
    if KINDS[kind].input_rank == "spatial" or kind in SPATIAL_ANY_KINDS:
        assert declared <= covered, f"{kind}: add NUMPY_CASES rows at ranks {sorted(declared - covered)}"


SPATIAL_ANY_KINDS = {"BatchNorm", "Dropout", "ReLU", "Chunk", "Add", "Concat", "Mul"}
"""Kinds of any rank whose behaviour depends on the layout (per-channel statistics, channel
slices, merges); checked at every spatial rank. Element-wise activations are rank-blind."""


@pytest.mark.parametrize(("kind", "shape", "body"), CASES, ids=IDS)
def test_case_uses_its_kind(kind: str, shape: str, body: str) -> None:
    assert kind in {layer.kind.name for layer in network(shape, body).layers}


@pytest.mark.parametrize(("kind", "shape", "body"), CASES, ids=IDS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_forward_and_backward_match_torch(kind: str, shape: str, body: str, train: bool) -> None:
    net = network(shape, body)
    compare_with_torch(net, batch(net), train=train)


@pytest.mark.parametrize(("kind", "shape", "body"), CASES, ids=IDS)
def test_float64_forward_and_gradients_match_torch(kind: str, shape: str, body: str) -> None:
    """In float64 both compute the same function to rounding: a kernel off by a little (a wrong
    constant, a border folded onto the wrong pixel) cannot hide behind float32's tolerance."""
    net = network(shape, body)
    errors = compare_with_torch(net, batch(net, dtype=np.float64), train=False)
    assert max(errors.values()) < FLOAT64_TOLERANCE.get(body, 1e-9), errors


FLOAT64_TOLERANCE = {
    "GELU": 1e-6,  # ops.erf is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7)
    "Hardsigmoid": 1e-7,  # PyTorch's float64 backward multiplies by 1/6 rounded to float32 (0.1666666716...)
}
"""Bodies whose float64 agreement is limited by a known approximation, with the reason."""


@pytest.mark.parametrize(("kind", "shape", "body"), CASES, ids=IDS)
def test_in_memory_generated_and_numpy_agree(kind: str, shape: str, body: str) -> None:
    """One seed gives both torch targets the same weights; they compute the same outputs and
    gradients (in eval and train mode, in-place decisions included); NumPy's output is within tolerance."""
    torch = require_torch()
    from torch_checks import generated_class

    net = network(shape, body)
    memory = net.to_torch(seed=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        generated = generated_class(net)()
    state = memory.state_dict()
    assert list(generated.state_dict()) == list(state)
    assert all(torch.equal(generated.state_dict()[key], value) for key, value in state.items())
    x = batch(net)
    y_numpy = net.to_numpy({key: value.numpy() for key, value in state.items()})(x)
    outputs, input_grads, param_grads = [], [], []
    for module in (memory, generated):
        module.eval()
        with torch.no_grad():
            outputs.append(module(torch.from_numpy(x)))
        module.train()
        x_t = torch.from_numpy(x.copy()).requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(9)  # the same dropout mask in both
            y = module(x_t)
        y.backward(torch.from_numpy(np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)))
        assert np.array_equal(x_t.detach().numpy(), x), "the input was overwritten"
        outputs.append(y.detach())
        input_grads.append(x_t.grad)
        param_grads.append({name: p.grad for name, p in module.named_parameters()})
    assert torch.equal(outputs[0], outputs[2]) and torch.equal(outputs[1], outputs[3])
    assert torch.equal(input_grads[0], input_grads[1])
    assert param_grads[0].keys() == param_grads[1].keys()
    assert all(torch.equal(grad, param_grads[1][name]) for name, grad in param_grads[0].items())
    assert relative_error(y_numpy, outputs[2].numpy()) < FORWARD_TOLERANCE


def test_every_torch_helper_is_exercised_by_the_cases() -> None:
    """Every helper a plan names is in cnndsl.torch_modules (importable, with source to copy),
    and each one is used below the top level by some case, so the test above runs its copy."""
    require_torch()
    from cnndsl import torch_modules
    from cnndsl.codegen_torch import helper_sources
    from cnndsl.torch_plan import build_plan

    used: set[str] = set()
    for _, shape, body in CASES:
        used.update(*(child.helpers() for child in build_plan(network(shape, body)).children))
    assert used == set(torch_modules.HELPERS) == set(helper_sources())


def numeric_gradient(f, array: np.ndarray, index: tuple[int, ...], eps: float = 1e-6) -> float:
    """Central difference of the scalar f() in one entry of `array` (changed in place, then restored)."""
    old = array[index]
    array[index] = old + eps
    plus = f()
    array[index] = old - eps
    minus = f()
    array[index] = old
    return (plus - minus) / (2 * eps)


def probe_indices(shape: tuple[int, ...], rng: np.random.Generator, count: int = 5) -> list[tuple[int, ...]]:
    size = int(np.prod(shape))
    return [tuple(int(i) for i in np.unravel_index(flat, shape)) for flat in rng.choice(size, min(count, size), replace=False)]


@pytest.mark.parametrize(("kind", "shape", "body"), CASES, ids=IDS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gradients_match_finite_differences(kind: str, shape: str, body: str, train: bool) -> None:
    """backward() against central differences of L = sum(y * r), in float64, without torch."""
    net = network(shape, body)
    model = net.to_numpy(seed=3, dtype=np.float64)
    for key in model.trainable:  # BatchNorm's ones/zeros would hide mistakes in its gradients
        value = model.parameter(key)
        value += np.random.default_rng(7).uniform(-0.5, 0.5, value.shape)
    x = batch(net, dtype=np.float64, seed=1)
    rng = np.random.default_rng(2)
    r = None

    def loss() -> float:
        model.rng = np.random.default_rng(11)  # the same dropout mask every call
        return float(np.sum(model.forward(x, train=train) * r))

    model.rng = np.random.default_rng(11)
    y = model.forward(x, train=train, grad=True)
    r = rng.standard_normal(y.shape)
    dx, grads = model.backward(r)
    assert dx is not None and dx.dtype == np.float64
    for index in probe_indices(x.shape, rng):
        expected = numeric_gradient(loss, x, index)
        assert abs(dx[index] - expected) <= 1e-6 + 1e-5 * abs(expected), f"d/dx{index}: {dx[index]} vs {expected}"
    for key, grad in grads.items():
        param = model.parameter(key)
        for index in probe_indices(param.shape, rng):
            expected = numeric_gradient(loss, param, index)
            assert abs(grad[index] - expected) <= 1e-6 + 1e-5 * abs(expected), f"d/d{key}{index}: {grad[index]} vs {expected}"


def test_backward_does_not_modify_the_output_gradient() -> None:
    """One output gradient can flow to several branches; no kind may scribble on it."""
    for kind, shape, body in CASES:
        net = network(shape, body)
        model = net.to_numpy()
        y = model.forward(batch(net), train=True, grad=True)
        dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
        kept = dy.copy()
        model.backward(dy)
        assert np.array_equal(dy, kept), f"{kind}: backward changed dy"


def test_inference_leaves_the_input_untouched() -> None:
    for kind, shape, body in CASES:
        net = network(shape, body)
        x = batch(net)
        kept = x.copy()
        net.to_numpy()(x)
        assert np.array_equal(x, kept), f"{kind}: inference changed its input"


def test_init_follows_pytorch_defaults() -> None:
    net = network("16x5x5", "Conv(8, 3), BN, flatten, FC(10)")
    state = net.to_numpy(seed=1).state_dict()
    bound = 1 / np.sqrt(16 * 9)
    for key in ("conv.weight", "conv.bias"):
        assert np.abs(state[key]).max() <= bound and state[key].dtype == np.float32
    weights = state["conv.weight"]  # 1152 draws: U(-bound, bound) fills the interval evenly
    assert weights.max() > 0.95 * bound and weights.min() < -0.95 * bound and abs(weights.mean()) < 0.1 * bound
    assert np.all(state["bn.weight"] == 1) and np.all(state["bn.bias"] == 0)
    assert np.all(state["bn.running_mean"] == 0) and np.all(state["bn.running_var"] == 1)
    assert state["bn.num_batches_tracked"].dtype == np.int64 and int(state["bn.num_batches_tracked"]) == 0
    assert np.abs(state["fc.weight"]).max() <= 1 / np.sqrt(8 * 9)
    # Seeded: the same seed gives the same weights, another seed others.
    assert np.array_equal(net.to_numpy(seed=1).state_dict()["conv.weight"], state["conv.weight"])
    assert not np.array_equal(net.to_numpy(seed=2).state_dict()["conv.weight"], state["conv.weight"])


def test_batchnorm_train_mode_with_one_value_per_channel_is_a_clear_error() -> None:
    net = network("6", "BN")
    with pytest.raises(CnnDslError, match="more than one value per channel"):
        net.to_numpy().forward(np.zeros((1, 6), np.float32), train=True)


def test_dropout_is_seeded_and_scales_kept_values() -> None:
    net = network("1000", "Dropout(0.25)")
    x = np.ones((4, 1000), np.float32)
    first = net.to_numpy(seed=5).forward(x, train=True)
    again = net.to_numpy(seed=5).forward(x, train=True)
    assert np.array_equal(first, again)
    assert set(np.unique(first)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.2 < np.mean(first == 0) < 0.3
    assert np.array_equal(net.to_numpy().forward(x, train=False), x)


def test_a_kind_without_numpy_kernels_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    tanh = KINDS["Tanh"]
    monkeypatch.setattr(type(tanh), "np_supported", False)
    net = network("3", "FC(4), Tanh")
    with pytest.raises(CnnDslError, match="`Tanh` is not supported by the numpy backend") as err:
        NumpyModel(net)
    assert err.value.diagnostics[0].position is not None


@pytest.mark.parametrize("body", ["MaxPool(3, stride=2, pad=1)", "MaxPool(2, ceil=true)", "ReLU, MaxPool(3, stride=1)"])
def test_maxpool_ties_route_like_torch(body: str) -> None:
    """Windows with several equal maxima (common after ReLU): the gradient goes to the first, as in PyTorch."""
    net = network("3x7x7", body)
    x = np.random.default_rng(0).integers(-1, 2, (2, 3, 7, 7)).astype(np.float32)
    compare_with_torch(net, x, train=True)


@pytest.mark.parametrize(
    ("shape", "body"),
    [
        ("3x7x7", "AdaptiveMaxPool(3)"),
        ("3x8x8", "AdaptiveMaxPool((2, 4))"),
        ("2x13", "AdaptiveMaxPool(4)"),
        ("2x70", "AdaptiveMaxPool(2)"),
        ("2x4x5x7", "AdaptiveMaxPool((2, 3, 2))"),
        ("2x70x3", "AdaptiveMaxPool((2, 2))"),
        ("3x7x7", "GlobalMaxPool"),
        ("2x3x4x5", "GlobalMaxPool"),
    ],
)
def test_adaptive_max_ties_route_like_torch(shape: str, body: str) -> None:
    """Bins with several equal maxima: the gradient goes to the first in row-major order, as in
    PyTorch, though the NumPy kernel reduces one axis at a time (and long bins by another path)."""
    net = network(shape, body)
    x = np.random.default_rng(0).integers(-1, 2, (2, *net.input_shape)).astype(np.float32)
    compare_with_torch(net, x, train=True)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "sizes, pads",
    [
        ((5,), ((4, 0),)),  # the widest reflect pad on one side only
        ((4, 3), ((0, 3), (2, 1))),  # reflect's widest far pad reaching the first cell; circular's whole axis
        ((3, 4, 2), ((1, 2), (0, 0), (1, 1))),
        ((1, 6), ((0, 0), (3, 2))),
    ],
)
def test_pad_borders_and_fold_match_torch_pad(mode: str, sizes: tuple[int, ...], pads: tuple[tuple[int, int], ...]) -> None:
    """The padding kernels' slice copies (every rank, corners, one-sided and edge-wide pads) against F.pad and its backward."""
    torch = require_torch()
    import cnndsl.numpy_ops as ops

    widest = {"reflect": lambda size: size - 1, "circular": lambda size: size}.get(mode, lambda size: 4)
    pads = tuple((min(lo, widest(size)), min(hi, widest(size))) for size, (lo, hi) in zip(sizes, pads, strict=True))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, *sizes))
    leaf = torch.from_numpy(x).requires_grad_(True)
    flat_pads = [side for pair in reversed(pads) for side in pair]
    expected = torch.nn.functional.pad(leaf, flat_pads, mode="constant" if mode == "zeros" else mode)
    padded = ops.pad_borders(x, pads, mode)
    np.testing.assert_array_equal(padded, expected.detach().numpy())
    dy = rng.standard_normal(padded.shape)
    expected.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ops.fold_borders(dy, pads, mode, sizes), leaf.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("body", ["Conv(6, 3, stride=2, pad=1)", "Conv(6, 3, pad=1, groups=3, bias=false)", "Conv(4, 1)"])
def test_convolution_in_batch_slices_matches_torch(body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above COLUMN_BYTES the forward runs the batch in slices (one sample each here)."""
    import cnndsl.numpy_ops

    monkeypatch.setattr(cnndsl.numpy_ops, "COLUMN_BYTES", 1)
    net = network("3x9x8", body)
    compare_with_torch(net, batch(net, n=3), train=False, grads=False)
    compare_with_torch(net, batch(net, n=3), train=True)


@pytest.mark.parametrize("body", ["Conv(6, 3, stride=2, pad=1)", "Conv(6, 3, pad=1, groups=3, bias=false)", "Conv(4, 1)"])
@pytest.mark.parametrize("column_bytes", [1, 2**40], ids=["slices", "whole"])
def test_per_sample_products_match_torch(body: str, column_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large output maps take one product per sample written straight into the output: force that path."""
    import cnndsl.numpy_ops

    monkeypatch.setattr(cnndsl.numpy_ops, "DIRECT_PRODUCT_PIXELS", 1)
    monkeypatch.setattr(cnndsl.numpy_ops, "COLUMN_BYTES", column_bytes)
    net = network("3x9x8", body)
    compare_with_torch(net, batch(net, n=3), train=False, grads=False)


def test_transposed_convolution_kernels_match_torch_on_random_geometries() -> None:
    """The phase decomposition (forward) and the polyphase components (backward) on 80 random
    geometries at every rank: kernels smaller or larger than the stride, dilations sharing a
    factor with it, padding beyond the kernel's reach, output_pad, groups; float64, to rounding."""
    torch = require_torch()
    import random

    from cnndsl.layers.upsample import conv_transpose_backward, conv_transpose_forward, transposed_size
    from cnndsl.numpy_ops import NpContext

    rnd = random.Random(7)
    tried = 0
    while tried < 80:
        rank, groups = rnd.choice((1, 2, 3)), rnd.choice((1, 2, 3))
        cin, cout = groups * rnd.randint(1, 2), groups * rnd.randint(1, 2)
        kernel = tuple(rnd.randint(1, 5) for _ in range(rank))
        stride = tuple(rnd.randint(1, 4) for _ in range(rank))
        dilation = tuple(rnd.randint(1, 3) for _ in range(rank))
        pad = tuple(rnd.randint(0, 5) for _ in range(rank))
        output_pad = tuple(rnd.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation, strict=True))
        size = tuple(rnd.randint(1, 5) for _ in range(rank))
        geometry = zip(size, kernel, stride, pad, dilation, output_pad, strict=True)
        if min(transposed_size(*axis) for axis in geometry) < 1:
            continue
        tried += 1
        module = getattr(torch.nn, f"ConvTranspose{rank}d")(
            cin, cout, kernel, stride, pad, output_pad, groups, dilation=dilation, dtype=torch.float64
        )
        x = np.random.default_rng(tried).standard_normal((2, cin, *size))
        args = {"kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation, "output_pad": output_pad, "groups": groups}
        weight, bias = module.weight.detach().numpy(), module.bias.detach().numpy()
        ctx = NpContext(rng=np.random.default_rng(0), record=True)
        y = conv_transpose_forward(x, weight, bias, args, ctx)
        x_t = torch.tensor(x, requires_grad=True)
        y_t = module(x_t)
        dy = np.random.default_rng(100 + tried).standard_normal(tuple(y_t.shape))
        y_t.backward(torch.from_numpy(dy))
        dx, grads = conv_transpose_backward(weight, True, args, ctx, dy)
        described = f"ConvTranspose{rank}d k={kernel} s={stride} d={dilation} p={pad} op={output_pad} g={groups} on {size}"
        assert np.abs(y - y_t.detach().numpy()).max() < 1e-10, described
        assert dx is not None and np.abs(dx - x_t.grad.numpy()).max() < 1e-10, described
        assert np.abs(grads["weight"] - module.weight.grad.numpy()).max() < 1e-10, described
        assert np.abs(grads["bias"] - module.bias.grad.numpy()).max() < 1e-10, described


@pytest.mark.parametrize(
    "shape, body",
    [
        ("3x9x8", "DWConv(3, pad=1)"),
        ("2x7x6", "DWConv((2, 3), pad=same, multiplier=3, pad_mode=reflect)"),
        ("2x11", "DWConv(4, pad=2, multiplier=2)"),
        ("2x4x5x6", "DWConv(3, pad=(1, 0, 2), bias=false)"),
    ],
)
def test_depthwise_in_blocks_of_maps_matches_torch(shape: str, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stride-1 depthwise kernels run the maps in cache-sized blocks: force one map per block."""
    import cnndsl.numpy_ops

    monkeypatch.setattr(cnndsl.numpy_ops, "DEPTHWISE_CHUNK_BYTES", 1)
    net = network(shape, body)
    compare_with_torch(net, batch(net, n=3), train=False, grads=False)
    compare_with_torch(net, batch(net, n=3), train=True)
