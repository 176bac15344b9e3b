"""`cnndsl run`: one inference batch through the NumPy or the torch backend, with weights and input from files.

Everything the command does lives here so that the click command stays a shell. The numpy
backend never imports torch; the torch backend (and reading `.pt` weights) does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .arrays import ArrayFileError, read_npy
from .errors import error, needs_torch
from .files import OutputConflict, atomic_write, refuse_inputs
from .limits import MAX_ACTIVATION_BYTES
from .network import Network
from .numpy_backend import check_weights, load_npz, validate_input
from .resources import check_batch, memory_error

Backend = Literal["numpy", "torch"]


@dataclass
class RunResult:
    output: np.ndarray
    seconds: float
    """Wall time of the forward pass alone (no weight loading, no conversion)."""
    backend: Backend

    def top_classes(self, k: int = 5) -> list[list[tuple[int, float]]] | None:
        """Per sample, the k best (class, probability) pairs; None unless the output is a class vector."""
        if self.output.ndim != 2 or self.output.shape[1] < 2:
            return None
        scores = self.output.astype(np.float64)
        rows_sum_to_one = np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
        if not rows_sum_to_one:  # logits: softmax them
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(int(c), float(scores[row, c])) for c in best[row]] for row in range(len(scores))]


def read_input(network: Network, spec: str, batch: int | None, seed: int = 0, backend: Backend = "numpy") -> np.ndarray:
    """`random` (standard normal, float32) or an .npy file (a batch, or one sample without the batch axis).

    The batch's memory on `backend` is checked before anything is allocated: the random
    batch's from the IR, a file's from its header.
    """
    if spec == "random":
        check_batch(network, batch or 1, backend=backend)
        return np.random.default_rng(seed).standard_normal((batch or 1, *network.input_shape)).astype(np.float32)
    try:
        x = read_npy(spec, MAX_ACTIVATION_BYTES)
    except OSError as err:
        raise error(f"cannot read the input {spec}: {err.strerror or err}", where=network.filename) from None
    except ArrayFileError as err:
        raise error(str(err), "save the input with numpy.save", network.filename) from None
    if x.shape == tuple(network.input_shape):
        x = x[None]  # one sample: the command line adds the batch axis that the API wants explicit
    if batch is not None and x.ndim >= 1 and x.shape[0] != batch:
        raise error(
            f"{spec} holds a batch of {x.shape[0]}; --batch says {batch}",
            "leave --batch out to use the whole file",
            network.filename,
        )
    x = validate_input(network, x)
    check_batch(network, len(x), backend=backend)
    return x


def refuse_run_overwrite(network: Network, output: str | None, inputs: list[str | None]) -> None:
    """`run -o` never replaces one of the command's inputs (the .cnn file, --input, --weights)."""
    try:
        refuse_inputs([output], inputs)
    except OutputConflict as err:
        raise error(str(err), "choose another output path", network.filename) from None


def save_output(network: Network, path: str, array: np.ndarray) -> None:
    """The output array as .npy at exactly `path` (no `.npy` added), written through the one atomic writer."""
    try:
        atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))
    except OSError as err:
        raise error(f"cannot write the output {path}: {err.strerror or err}", where=network.filename) from None


def read_weights(network: Network, path: str) -> dict[str, Any]:
    """A state_dict from .npz (NumPy) or .pt/.pth (torch.load, weights only; also a checkpoint holding one)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix not in (".pt", ".pth"):
        raise error(
            f"unknown weight file type {suffix or '(none)'} for {path}",
            "use .npz (NumPy) or .pt/.pth (PyTorch)",
            network.filename,
        )
    try:
        import torch
    except ImportError:
        raise needs_torch(f"reading {path}", network.filename, "convert the weights to .npz") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise error(f"cannot read weights from {path}: {err.strerror or err}", where=network.filename) from None
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise error(f"{path} is not a PyTorch weight file: {err}", where=network.filename) from None
    if isinstance(loaded, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict):
        raise error(f"{path} holds a {type(loaded).__name__}, not a state_dict", where=network.filename)
    return {str(key): value for key, value in loaded.items()}


def run_network(network: Network, backend: Backend, x: np.ndarray, weights: str | None = None, seed: int = 0) -> RunResult:
    """Build the model on `backend` (weights from a file, else seeded PyTorch-style init) and time one forward pass.

    Running out of memory (under the activation limit, which both backends check first)
    is "not enough memory for batch N", not a traceback.
    """
    check_batch(network, len(x), x.dtype.itemsize, backend)
    try:
        return _run(network, backend, x, weights, seed)
    except MemoryError:
        raise memory_error(network, len(x)) from None
    except RuntimeError as err:  # torch: OutOfMemoryError (a RuntimeError), or "DefaultCPUAllocator: can't allocate"
        text = str(err)
        if "out of memory" not in text.lower() and "can't allocate" not in text:
            raise
        raise memory_error(network, len(x)) from None


def _run(network: Network, backend: Backend, x: np.ndarray, weights: str | None, seed: int) -> RunResult:
    state = read_weights(network, weights) if weights else None
    if backend == "numpy":
        model = network.to_numpy(state, seed=seed)
        start = time.perf_counter()
        output = model(x)
        return RunResult(output, time.perf_counter() - start, backend)
    try:
        import torch
    except ImportError:
        raise needs_torch("the torch backend", network.filename, "use --backend numpy") from None
    module = network.to_torch(seed=seed).eval()
    if state is not None:
        expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
        arrays = check_weights(network, expected, state)
        module.load_state_dict({key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in arrays.items()})
    tensor = torch.from_numpy(x)
    with torch.no_grad():
        start = time.perf_counter()
        output = module(tensor)
        seconds = time.perf_counter() - start
    return RunResult(output.numpy(), seconds, backend)
