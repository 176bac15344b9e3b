"""Differential testing: one network, three ways — the checker's static inference, the PyTorch
module, the NumPy interpreter — which must all agree. Shared by tests/test_differential.py
(CI-sized) and bench/differential.py (long runs)."""

from __future__ import annotations

import numpy as np
import torch
from numpy_reference import relative_error, twins
from torch_checks import leaf_output_shapes

import cnndsl

TOLERANCE = 1e-5
"""float64 on both sides. A real bug shows as an error of 1e-3 or more; rounding stays near
1e-15, but ill-conditioned random networks (train-mode BatchNorm over two nearly equal
values, a saturated Softmax before the input gradient) amplify it to about 1e-6."""


def disagreements(source: str) -> list[str]:
    """Every way in which the three disagree on `source` (empty when they all agree)."""
    try:
        return _compare(cnndsl.parse(source, "<differential>"))
    except Exception as err:  # a backend failing on a network the checker accepted is a disagreement too
        return [f"{type(err).__name__}: {err}"]


def _compare(net: cnndsl.Network) -> list[str]:
    problems: list[str] = []
    module, model, _ = twins(net, seed=0, dtype=np.float64)
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    if (params, buffers) != (net.params, net.buffers):
        problems.append(f"counts: checker {net.params:,} params / {net.buffers:,} buffers, torch {params:,} / {buffers:,}")
    numpy_sizes = sum(v.size for v in model.state_dict().values())
    if numpy_sizes != net.params + net.buffers:
        problems.append(f"counts: checker {net.params + net.buffers:,} values, numpy {numpy_sizes:,}")
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape))
    module.eval()
    actual = leaf_output_shapes(net, module, torch.from_numpy(x))
    for layer in net.layers:
        if actual.get(layer.path) != tuple(layer.out_shape):
            problems.append(
                f"shape of {layer.path} ({layer.kind.name}): checker {layer.out_shape}, torch {actual.get(layer.path)}"
            )
            break
    for train in (False, True):
        module.train(train)
        x_t = torch.tensor(x, requires_grad=True)
        y_t = module(x_t)
        y = model.forward(x, train=train, grad=True)
        mode = "train" if train else "eval"
        if tuple(y.shape[1:]) != tuple(net.output_shape) or y.shape != tuple(y_t.shape):
            problems.append(f"{mode} output shape: checker {net.output_shape}, numpy {y.shape[1:]}, torch {tuple(y_t.shape[1:])}")
            continue
        if any(layer.kind.family == "regularization" for layer in net.layers) and train:
            continue  # the two libraries draw different dropout masks; tests/test_numpy_random.py aligns them
        error = relative_error(y, y_t.detach().numpy())
        if error > TOLERANCE:
            problems.append(f"{mode} output: numpy and torch differ by {error:.2e}")
        dy = np.random.default_rng(1).standard_normal(y.shape)
        y_t.backward(torch.from_numpy(dy))
        dx, _ = model.backward(dy)
        error = relative_error(dx, x_t.grad.numpy())
        if error > TOLERANCE:
            problems.append(f"{mode} input gradient: numpy and torch differ by {error:.2e}")
    return problems
