"""The NumPy backend of `cnndsl train`: the NumPy interpreter's forward and backward, SGD with momentum.

Needs no torch. The epoch order comes from a generator seeded with (--seed, epoch), and the
model's own generator (Dropout) and the momentum buffers go into each checkpoint, so a
resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import error
from ..numpy_backend import SGD, cross_entropy
from .checkpoint import DAMAGED_HINT, load_numpy, restoring, save_numpy, validate_buffers, validate_state
from .config import TrainConfig, check_resumable, choose_threads, initial_weights
from .data import Dataset
from .metrics import first_output
from .report import EpochProgress

if TYPE_CHECKING:
    from ..network import Network

EVAL_BATCH = 256
FORMAT = "cnndsl-train-numpy"


class NumpyEngine:
    device_name = "cpu (numpy)"

    def __init__(self, network: Network, config: TrainConfig, dataset: Dataset) -> None:
        self.config = config
        self.dataset = dataset
        self.model = network.to_numpy(initial_weights(config), seed=config.seed, allow_partial=config.allow_partial)
        self.weights_report = self.model.weights_report
        self.optimizer = SGD(self.model, config.learning_rate, config.momentum, weight_decay=config.decay)
        self.threads = choose_threads(network.macs, config)

    @contextlib.contextmanager
    def _blas_threads(self) -> Iterator[None]:
        """Limit the BLAS library's threads while training (threadpoolctl comes with scikit-learn; without it, no limit)."""
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
            return
        if self.threads is None:
            yield
            return
        with threadpool_limits(limits=self.threads, user_api="blas"):
            yield

    def train_epoch(self, epoch: int, progress: EpochProgress) -> tuple[float, float, int]:
        with self._blas_threads():
            return self._train_epoch(epoch, progress)

    def _train_epoch(self, epoch: int, progress: EpochProgress) -> tuple[float, float, int]:
        x, y = self.dataset.x_train, self.dataset.y_train
        self.optimizer.lr = self.config.lr_at(epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(x))
        positions = int(np.prod(y.shape[1:]))  # labels per image: 1, or a mask's pixels
        loss_sum, correct, count = 0.0, 0.0, 0
        batch = self.config.batch_size
        for begin in range(0, len(order), batch):
            index = order[begin : begin + batch]
            if len(index) < 2:  # as the torch engine: BatchNorm cannot train on one sample
                progress.update(0)
                continue
            xb, yb = x[index], y[index]
            logits = first_output(self.model.forward(xb, train=True, grad=True))
            loss, dlogits = cross_entropy(logits, yb, self.model.network.filename)
            # With several outputs the loss reads the first: the others send back no gradient.
            others = len(self.model.network.output_shapes) - 1
            _, grads = self.model.backward([dlogits, *[None] * others] if others else dlogits, input_grad=False)
            self.optimizer.step(grads)
            loss_sum += loss * len(index)
            correct += int((logits.argmax(1) == yb).sum()) / positions  # for masks, each image's share of correct pixels
            count += len(index)
            progress.update(len(index), loss_sum / count, correct / count)
        return loss_sum, correct, count

    def evaluate(self) -> tuple[float, np.ndarray]:
        with self._blas_threads():
            return self._evaluate()

    def _evaluate(self) -> tuple[float, np.ndarray]:
        x, y = self.dataset.x_test, self.dataset.y_test
        classes = self.dataset.num_classes
        loss_sum = 0.0
        confusion = np.zeros((classes, classes), dtype=np.int64)
        for begin in range(0, len(x), EVAL_BATCH):
            xb, yb = x[begin : begin + EVAL_BATCH], y[begin : begin + EVAL_BATCH]
            logits = first_output(self.model.forward(xb, train=False))
            loss, _ = cross_entropy(logits, yb, self.model.network.filename)
            loss_sum += loss * yb.size  # summed over images, or pixels, as the torch engine's
            confusion += np.bincount((yb * classes + logits.argmax(1)).ravel(), minlength=classes * classes).reshape(
                classes, classes
            )
        return loss_sum, confusion

    def save(self, path: Path, state: dict[str, Any]) -> None:
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"momentum/{k}": v for k, v in self.optimizer.buffers.items()})
        meta = {"format": FORMAT, **state, "rng": self.model.rng.bit_generator.state}
        save_numpy(path, arrays, meta)

    def restore(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        arrays, meta = load_numpy(path)
        validate_state(path, meta)
        check_resumable(meta["config"], self.config, path)
        buffers = {k[len("momentum/") :]: v.copy() for k, v in arrays.items() if k.startswith("momentum/")}
        shapes = {key: self.model.parameter(key).shape for key in self.model.trainable}
        # SGD with momentum keeps a buffer per parameter from its first step on.
        momentum = meta["config"].get("momentum")
        validate_buffers(path, buffers, shapes, complete=meta["epoch"] > 0 and _is_positive(momentum))
        if not isinstance(meta.get("rng"), dict):
            raise error(
                f"{path} is damaged: `rng` is {type(meta.get('rng')).__name__}, not a generator state",
                DAMAGED_HINT,
                "--checkpoint-dir",
            )
        with restoring(path):
            self.model.load_state_dict({k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")})
            self.model.rng.bit_generator.state = meta["rng"]
        self.optimizer.buffers = buffers
        return {k: meta[k] for k in ("epoch", "history", "config")}

    def weights(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()

    def close(self, synchronize: bool = False) -> None:
        pass  # a single process holds nothing to release


def _is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
