"""PyTorch as the oracle for the NumPy backend: build both from one network with the same weights and compare.

Imported by the NumPy test modules; torch is imported only inside the functions, which
skip (with a reason) where it is not installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cnndsl import Network
from cnndsl.numpy_backend import NumpyModel

FORWARD_TOLERANCE = 1e-4
"""max|numpy - torch| / max|torch| for outputs in float32 (the issue's bound)."""
GRAD_TOLERANCE = 1e-3
"""The same ratio for gradients."""


def require_torch() -> Any:
    return pytest.importorskip("torch", reason="the comparison with PyTorch needs torch (pip install cnndsl[torch])")


def relative_error(actual: np.ndarray, expected: np.ndarray, floor: float = 0.0) -> float:
    """max|actual - expected| / max|expected|; `floor` keeps all-but-zero references meaningful."""
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), floor, 1e-30)
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0)) / scale


def twins(network: Network, seed: int = 0, dtype: Any = np.float32) -> tuple[Any, NumpyModel, dict[str, str]]:
    """(torch module, NumPy model with the torch module's weights, torch key -> NumPy key), both in `dtype`."""
    torch = require_torch()
    module = network.to_torch(seed=seed)
    if np.dtype(dtype) == np.float64:
        module = module.to(torch.float64)
    keys = {key: key for key in module.state_dict()}  # the same keys on both sides, by construction
    state = {keys[k]: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    return module, network.to_numpy(state, dtype=dtype), keys


def use_numpy_dropout_masks(module: Any, model: NumpyModel, network: Network) -> list[Any]:
    """Make torch's dropout modules (Dropout, Dropout2d, StochasticDepth: every regularisation
    kind that saves a `mask`) apply the masks the NumPy model just drew (their RNGs differ)."""
    torch = require_torch()
    handles = []
    for layer, saved in model.recorded():
        if layer.kind.family == "regularization" and saved.get("mask") is not None:
            mask = torch.from_numpy(saved["mask"])
            submodule = module.get_submodule(layer.path)
            handles.append(submodule.register_forward_hook(lambda m, inputs, output, mask=mask: inputs[0] * mask))
    return handles


def compare_with_torch(network: Network, x: np.ndarray, train: bool, grads: bool = True, seed: int = 0) -> dict[str, float]:
    """Forward (and backward with a random output gradient) in both, in x's dtype; assert the issue's bounds; return the errors."""
    torch = require_torch()
    module, model, keys = twins(network, seed, x.dtype)
    module.train(train)
    y = model.forward(x, train=train, grad=grads or train)  # recording keeps the dropout masks for torch
    handles = use_numpy_dropout_masks(module, model, network) if train else []
    x_t = torch.tensor(x, requires_grad=grads)
    with torch.set_grad_enabled(grads):
        y_t = module(x_t)
    for handle in handles:
        handle.remove()
    # A network with an `output` line returns a tuple in both: each output is compared, the worst reported.
    ys, ys_t = (y, y_t) if isinstance(y, tuple) else ((y,), (y_t,))
    assert len(ys) == len(ys_t) == len(network.output_shapes)
    errors = {"output": max(relative_error(one, one_t.detach().numpy()) for one, one_t in zip(ys, ys_t, strict=True))}
    assert errors["output"] < FORWARD_TOLERANCE, (
        f"{network.name} ({'train' if train else 'eval'}) output differs: {errors['output']:.2e}"
    )
    if train:
        # Running statistics after one train-mode step must match too.
        state = model.state_dict()
        for key, value in module.state_dict().items():
            if "running" in key:
                err = relative_error(state[keys[key]], value.numpy(), floor=1e-3)
                assert err < FORWARD_TOLERANCE, f"{keys[key]} differs after a train step: {err:.2e}"
            elif key.endswith("num_batches_tracked"):
                assert int(state[keys[key]]) == int(value)
    if not grads:
        return errors
    dys = [np.random.default_rng(seed + 1 + index).standard_normal(one.shape).astype(x.dtype) for index, one in enumerate(ys)]
    torch.autograd.backward(list(ys_t), [torch.from_numpy(dy) for dy in dys])
    dx, param_grads = model.backward(dys if isinstance(y, tuple) else dys[0])
    assert dx is not None
    errors["input"] = relative_error(dx, x_t.grad.numpy())
    assert errors["input"] < GRAD_TOLERANCE, f"{network.name}: input gradient differs: {errors['input']:.2e}"
    torch_grads = {keys[name]: p.grad.numpy() for name, p in module.named_parameters()}
    assert sorted(torch_grads) == sorted(param_grads), "gradient keys differ from torch's parameters"
    # Gradients that are zero in exact arithmetic (a bias before train-mode BatchNorm) are
    # pure rounding noise in both; measure them against the largest gradient of the network.
    floor = 1e-3 * max(float(np.abs(g).max(initial=0.0)) for g in torch_grads.values()) if torch_grads else 0.0
    for key, expected in torch_grads.items():
        err = relative_error(param_grads[key], expected, floor)
        errors[key] = err
        assert err < GRAD_TOLERANCE, f"{network.name}: gradient of {key} differs: {err:.2e}"
    return errors
