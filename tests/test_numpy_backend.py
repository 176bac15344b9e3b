"""The NumPy backend on whole networks: every zoo file against PyTorch, weights, errors, training.

Eval-mode forward passes are compared in float32 with the issue's bound
max|numpy - torch| / max|torch| < 1e-4. Whole-network train-mode passes (output, running
statistics, gradients of every parameter and of the input) are compared in float64: in
float32, BatchNorm over a small batch amplifies rounding so much that PyTorch disagrees with
itself (measured, torch float32 against torch float64 at 3x64x64, batch 2: ResNet-152's
train-mode output by 1.5e-3, DenseNet-121's parameter gradients by 0.18), so a float32
comparison there would measure the conditioning, not the implementation. Per-layer float32
checks of train mode and gradients live in test_numpy_layers.py, and shallow random networks
are compared in float32 in test_numpy_random.py. Networks over 20M parameters are marked
slow (about 10-25 s each on two cores); `-m "not slow"` skips them. Inputs are the smallest
each network accepts (3x32x32 mostly): neither comparison needs more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy_reference import compare_with_torch, require_torch, twins

import cnndsl
from cnndsl import CnnDslError

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "architectures").glob("*.cnn"))
SMALL_INPUTS = [(3, 32, 32), (3, 64, 64), (3, 96, 96), (3, 128, 128), (3, 224, 224)]


def small(path: Path) -> cnndsl.Network:
    """The file's network on the smallest of SMALL_INPUTS it accepts (its own input if none)."""
    for shape in SMALL_INPUTS:
        try:
            return cnndsl.load(path, input=shape)
        except CnnDslError:
            continue
    return cnndsl.load(path)


def inputs(net: cnndsl.Network, n: int = 2, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *net.input_shape)).astype(dtype)


def test_the_zoo_is_there() -> None:
    assert ZOO, "no architectures/*.cnn files found"


def zoo_params(path: Path) -> list:
    """ZOO as pytest params, the big ones marked slow."""
    params = []
    for p in path:
        slow = cnndsl.load(p).params > 20_000_000
        marks = [pytest.mark.slow] if slow else []
        params.append(pytest.param(p, id=p.stem, marks=marks))
    return params


ZOO_PARAMS = zoo_params(ZOO)


@pytest.mark.parametrize("path", ZOO_PARAMS)
def test_zoo_eval_forward_matches_torch_in_float32(path: Path) -> None:
    net = small(path)
    compare_with_torch(net, inputs(net), train=False, grads=False)


@pytest.mark.parametrize("path", ZOO_PARAMS)
def test_zoo_train_step_matches_torch_in_float64(path: Path) -> None:
    net = small(path)
    # Batch 4: at 32x32 the last BatchNorms see 1x1 maps, and two values per channel would
    # amplify rounding past 1e-6 even in float64.
    errors = compare_with_torch(net, inputs(net, 4, dtype=np.float64), train=True)
    assert max(errors.values()) < 1e-6, f"float64 results should agree far more closely: {max(errors.values()):.2e}"


def test_numpy_backend_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, cnndsl\n"
        "net = cnndsl.parse('input 3x8x8\\nConv(4, 3), BN, ReLU, flatten, FC(2)')\n"
        "m = net.to_numpy()\n"
        "loss, grads = m.loss_and_grads(np.zeros((2, 3, 8, 8), np.float32), [0, 1])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- weights

NET = "input 3x8x8\nstem: [Conv(4, 3, pad=1), BN, ReLU]\nAdd[ Conv(4, 3, pad=1) | ]\nflatten, Dropout(0.2), FC(5)\n"


def test_state_dict_keys_and_shapes_match_torch() -> None:
    require_torch()
    net = cnndsl.parse(NET)
    module = net.to_torch()
    ours = net.to_numpy().state_dict()
    theirs = module.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == tuple(value.shape), key


def test_state_dict_round_trips_through_npz(tmp_path: Path) -> None:
    net = cnndsl.parse(NET)
    model = net.to_numpy(seed=1)
    path = tmp_path / "w.npz"
    model.save(path)
    other = net.to_numpy(seed=2)
    other.load(path)
    x = inputs(net)
    assert np.array_equal(model(x), other(x))
    assert sorted(np.load(path).files) == sorted(model.state_dict())


def test_torch_tensors_are_accepted_as_weights() -> None:
    torch = require_torch()
    net = cnndsl.parse(NET)
    module = net.to_torch(seed=3).eval()
    model = net.to_numpy(module.state_dict())  # tensors, some with requires_grad
    x = inputs(net)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    assert np.allclose(model(x), expected, atol=1e-5)


def test_weight_mismatches_name_what_differs() -> None:
    net = cnndsl.parse(NET)
    state = net.to_numpy().state_dict()
    del state["stem.conv.bias"]
    state["stem.bn.weight"] = np.zeros(7, np.float32)
    state["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(CnnDslError) as err:
        net.to_numpy(state)
    message = str(err.value)
    assert "missing keys: stem.conv.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "stem.bn.weight is 7, expected 4" in message


def test_a_bad_weight_file_is_a_clear_error(tmp_path: Path) -> None:
    net = cnndsl.parse(NET)
    model = net.to_numpy()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CnnDslError, match="not a readable .npz weights file"):
        model.load(bad)
    with pytest.raises(CnnDslError, match="cannot read weights"):
        model.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((3, 8, 8), np.float32), "without a batch axis"),
        (np.zeros((2, 3, 8, 9), np.float32), "expects Nx3x8x8"),
        (np.zeros((2, 8, 8, 3), np.float32), "expects Nx3x8x8"),
        (np.zeros((2, 3, 8, 8), np.complex128), "dtype complex128"),
        (np.zeros((2, 3, 8, 8), object), "dtype object"),
        (np.array([[[[1]]], [[[2]]]], dtype=object), "dtype object"),
        (np.zeros((0, 3, 8, 8), np.float32), "empty"),
    ],
)
def test_mismatched_inputs_are_clear_errors(x: np.ndarray, message: str) -> None:
    with pytest.raises(CnnDslError, match=message):
        cnndsl.parse(NET).to_numpy()(x)


@pytest.mark.parametrize(
    ("labels", "message"), [([0, 5], "0..4"), ([0.0, 1.0], "integers"), ([0, 1, 2], r"shape \(2,\)"), ([-1, 0], "0..4")]
)
def test_bad_labels_are_clear_errors(labels: list, message: str) -> None:
    model = cnndsl.parse(NET).to_numpy()
    with pytest.raises(CnnDslError, match=message):
        model.loss_and_grads(inputs(model.network), np.asarray(labels))


def test_cross_entropy_of_a_map_needs_a_label_per_position() -> None:
    # A C x H x W output is scored per pixel (segmentation): one label per image does not fit it.
    model = cnndsl.parse("input 3x4x4\nConv(2, 1)").to_numpy()
    with pytest.raises(CnnDslError, match=r"labels must have shape \(2, 4, 4\), one class index per sample and output position"):
        model.loss_and_grads(np.zeros((2, 3, 4, 4), np.float32), [0, 1])


# ---------------------------------------------------------------- training


def test_loss_and_grads_match_torch_cross_entropy() -> None:
    torch = require_torch()
    net = cnndsl.parse(NET.replace("Dropout(0.2)", "Dropout(0)"))
    module, model, keys = twins(net)
    x = inputs(net, 4)
    labels = np.array([0, 3, 4, 1])
    loss, grads = model.loss_and_grads(x, labels)
    module.train()
    torch_loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels))
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) < 1e-5 * max(1.0, abs(loss))
    for name, param in module.named_parameters():
        expected = param.grad.numpy()
        assert np.abs(grads[keys[name]] - expected).max() <= 1e-3 * np.abs(expected).max() + 1e-7, name


def test_sgd_with_momentum_follows_torch() -> None:
    torch = require_torch()
    net = cnndsl.parse(NET.replace("Dropout(0.2)", "Dropout(0)"))
    module, model, keys = twins(net)
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
        labels = rng.integers(0, 5, 4)
        _, grads = model.loss_and_grads(x, labels)
        model.sgd_step(grads, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        optimizer.step()
    state = model.state_dict()
    for key, value in module.state_dict().items():
        expected = value.numpy()
        assert np.allclose(state[keys[key]], expected, atol=1e-5, rtol=1e-4), key


def test_training_reduces_the_loss_without_torch() -> None:
    net = cnndsl.parse("input 2x6x6\nConv(8, 3, pad=1), BN, ReLU, MaxPool(2), flatten, FC(3)")
    model = net.to_numpy(seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 2, 6, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 12)
    first, _ = model.loss_and_grads(x, labels)
    for _ in range(30):
        loss, grads = model.loss_and_grads(x, labels)
        model.sgd_step(grads, lr=0.1, momentum=0.9)
    assert loss < 0.5 * first


def test_backward_needs_a_recording_forward() -> None:
    model = cnndsl.parse(NET).to_numpy()
    model(inputs(model.network))
    with pytest.raises(CnnDslError, match="grad=True"):
        model.backward(np.zeros((2, 5), np.float32))
