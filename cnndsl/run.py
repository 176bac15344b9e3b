"""`cnndsl run`: one inference batch through the NumPy or the torch backend, with weights and input from files.

Everything the command does lives here so that the click command stays a shell. The numpy
backend never imports torch; the torch backend (and reading `.pt` weights) does. Weights
are read by cnndsl.weights (every format, and the input normalisation stored with them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .arrays import ArrayFileError, read_npy
from .errors import error, needs_torch
from .files import OutputConflict, atomic_write, refuse_inputs
from .limits import MAX_ACTIVATION_BYTES
from .network import Network
from .numpy_backend import validate_input
from .resources import check_batch, memory_error
from .weights import read_weights
from .weights_match import MatchReport

Backend = Literal["numpy", "torch"]


@dataclass
class RunResult:
    output: np.ndarray
    seconds: float
    """Mean wall time of one forward pass after a warm-up call (no weight loading, no conversion)."""
    backend: Backend
    calls: int = 1
    """How many calls `seconds` is the mean of."""
    normalised_by: str | None = None
    """The weights file whose training mean/std standardised the input, if any."""
    weights_report: MatchReport | None = None
    """How weights in another module's layout were matched by structure (cnndsl.weights_match)."""

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


RUN_SECONDS = 0.5
"""`run` times further calls after the warm-up one until this much time has passed (or MAX_TIMED_CALLS)."""
MAX_TIMED_CALLS = 20


def time_calls(call: Callable[[], Any]) -> tuple[Any, float, int]:
    """(first output, mean seconds per call, calls timed): one warm-up call (allocations, caches, lazy
    initialisation), then timed calls until RUN_SECONDS have passed, at least one, at most MAX_TIMED_CALLS."""
    output = call()
    timed, began = 0, time.perf_counter()
    while True:
        call()
        timed += 1
        elapsed = time.perf_counter() - began
        if elapsed >= RUN_SECONDS or timed >= MAX_TIMED_CALLS:
            return output, elapsed / timed, timed


def run_network(
    network: Network, backend: Backend, x: np.ndarray, weights: str | None = None, seed: int = 0, allow_partial: bool = False
) -> RunResult:
    """Build the model on `backend` (weights from a file, else seeded PyTorch-style init) and time its forward pass.

    Weights that carry the input normalisation they were trained with (cnndsl.weights) make
    the model standardise `x` first; `RunResult.normalised_by` then names the file. Running
    out of memory (under the activation limit, which both backends check first) is "not
    enough memory for batch N", not a traceback.
    """
    check_batch(network, len(x), x.dtype.itemsize, backend)
    try:
        return _run(network, backend, x, weights, seed, allow_partial)
    except MemoryError:
        raise memory_error(network, len(x)) from None
    except RuntimeError as err:  # torch: OutOfMemoryError (a RuntimeError), or "DefaultCPUAllocator: can't allocate"
        text = str(err)
        if "out of memory" not in text.lower() and "can't allocate" not in text:
            raise
        raise memory_error(network, len(x)) from None


def _run(network: Network, backend: Backend, x: np.ndarray, weights: str | None, seed: int, allow_partial: bool) -> RunResult:
    loaded = read_weights(weights) if weights else None
    normalised_by = loaded.source if loaded is not None and loaded.preprocess is not None else None
    if backend == "numpy":
        model = network.to_numpy(loaded, seed=seed, allow_partial=allow_partial)
        output, seconds, calls = time_calls(lambda: model(x))
        output = output[0] if isinstance(output, tuple) else output  # several outputs: the first is shown
        return RunResult(output, seconds, backend, calls, normalised_by, model.weights_report)
    try:
        import torch
    except ImportError:
        raise needs_torch("the torch backend", network.filename, "use --backend numpy") from None
    module = network.to_torch(seed=seed, weights=loaded, allow_partial=allow_partial).eval()
    tensor = torch.from_numpy(x)
    with torch.no_grad():
        output, seconds, calls = time_calls(lambda: module(tensor))
    output = output[0] if isinstance(output, tuple) else output  # several outputs: the first is shown
    return RunResult(output.numpy(), seconds, backend, calls, normalised_by, getattr(module, "weights_report", None))
