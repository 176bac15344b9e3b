"""Differential testing: one network, three ways — the checker's static inference, the PyTorch
module, the NumPy interpreter — which must all agree. Shared by tests/test_differential.py
(CI-sized) and bench/differential.py (long runs)."""

from __future__ import annotations

import numpy as np
import torch
from numpy_reference import relative_error, twins
from torch_checks import leaf_output_shapes

import cnndsl
from cnndsl.layers import MergeKind

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
        if net.is_graph and isinstance(layer.kind, MergeKind):
            continue  # the graph module adds the branches itself: no merge module runs (the outputs check it)
        if actual.get(layer.path) != tuple(layer.out_shape):
            problems.append(
                f"shape of {layer.path} ({layer.kind.name}): checker {layer.out_shape}, torch {actual.get(layer.path)}"
            )
            break
    for train in (False, True):
        module.train(train)
        x_t = torch.tensor(x, requires_grad=True)
        outputs_t = module(x_t)
        outputs = model.forward(x, train=train, grad=True)
        # Several outputs come as tuples in both; compare one by one.
        ys_t = outputs_t if isinstance(outputs_t, tuple) else (outputs_t,)
        ys = outputs if isinstance(outputs, tuple) else (outputs,)
        mode = "train" if train else "eval"
        shapes = [tuple(shape) for shape in net.output_shapes]
        if [y.shape[1:] for y in ys] != shapes or [y.shape for y in ys] != [tuple(y_t.shape) for y_t in ys_t]:
            problems.append(
                f"{mode} output shape: checker {shapes}, numpy {[y.shape[1:] for y in ys]}, torch {[tuple(y.shape[1:]) for y in ys_t]}"
            )
            continue
        if any(layer.kind.family == "regularization" for layer in net.layers) and train:
            continue  # the two libraries draw different dropout masks; tests/test_numpy_random.py aligns them
        for index, (y, y_t) in enumerate(zip(ys, ys_t, strict=True)):
            error = relative_error(y, y_t.detach().numpy())
            if error > TOLERANCE:
                problems.append(f"{mode} output {index}: numpy and torch differ by {error:.2e}")
        dys = [np.random.default_rng(1 + index).standard_normal(y.shape) for index, y in enumerate(ys)]
        torch.autograd.backward(list(ys_t), [torch.from_numpy(dy) for dy in dys])
        dx, _ = model.backward(dys if len(dys) > 1 else dys[0])
        if x_t.grad is None:  # no output reads the input (it cannot happen: every body starts from it)
            problems.append(f"{mode}: torch computed no input gradient")
            continue
        error = relative_error(dx, x_t.grad.numpy())
        if error > TOLERANCE:
            problems.append(f"{mode} input gradient: numpy and torch differ by {error:.2e}")
    return problems
