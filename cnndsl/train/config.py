"""The settings of a training run, shared by the CLI, the library and both loops."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import error

if TYPE_CHECKING:
    from ..weights import Weights

BACKENDS = ("torch", "numpy")
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("off", "bf16", "fp16")
SCHEDULES = ("cosine", "constant")
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.01}

SMALL_BATCH_MACS = 200_000_000
"""Below this many multiply-accumulates per batch, one CPU thread trains faster than several:
each op is too small to split, and with other processes on the machine the threads' spin
waits dominate. Measured here (2 cores, shared): digits with torch about 6,000 img/s on one
thread and under 2,000 on two; with the NumPy backend 2,300 img/s with one OpenBLAS thread
and 250 with two."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

RESUME_MUST_MATCH = ("backend", "optimizer")
"""Settings a checkpoint cannot be resumed under if they changed (its optimiser state would not fit)."""
RESUME_SHOULD_MATCH = ("data", "batch_size", "lr", "schedule", "momentum", "weight_decay", "seed", "amp")
"""Settings that may change on --resume, with a warning: the run then no longer repeats the uninterrupted one."""


def choose_threads(macs_per_sample: int, config: TrainConfig, world_size: int = 1) -> int | None:
    """The CPU thread count to use, or None to keep the libraries' own (or the environment's) choice."""
    if config.threads is not None:
        return config.threads
    if any(name in os.environ for name in THREAD_VARIABLES):
        return None
    per_process_batch = math.ceil(config.batch_size / world_size)
    return 1 if macs_per_sample * per_process_batch < SMALL_BATCH_MACS else None


@dataclass
class TrainConfig:
    """Everything `cnndsl train` takes besides the network itself."""

    data: str = "digits"
    backend: str = "torch"
    epochs: int = 10
    batch_size: int = 64
    """The global batch: under torchrun each of N processes takes batch_size / N of it (rounded up)."""
    lr: float | None = None
    """None: 0.05 for SGD, 1e-3 for AdamW."""
    optimizer: str = "sgd"
    schedule: str = "cosine"
    """cosine: the learning rate falls from --lr towards 0 over --epochs (set per epoch); constant: --lr throughout."""
    momentum: float = 0.9
    weight_decay: float | None = None
    """None: 5e-4 for SGD, 0.01 for AdamW."""
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    """CPU threads (torch's, or BLAS's for the NumPy backend); None: one for small networks, else the libraries' default."""
    seed: int = 0
    checkpoint_dir: Path | None = None
    resume: bool = False
    metrics_json: Path | None = None
    progress: bool = True
    save: Path | None = None
    """Write the trained weights and the input normalisation here at the end (.safetensors, .pt or .npz; no optimiser state)."""
    init_from: str | None = None
    """Start from these weights (cnndsl's layout or another module's, matched by structure: cnndsl.weights_match)."""
    freeze: tuple[str, ...] = ()
    """Layer path prefixes whose parameters are not trained (torch backend: requires_grad False)."""
    allow_partial: bool = False
    """--init-from: load the layers that fit and report the rest, instead of refusing."""
    weights_layout: str | None = None
    """--save writes the weights under this template's keys (a weights file or module:callable), without the normalisation."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch `epoch` (0-based): a function of the epoch alone, so resuming needs no scheduler state."""
        if self.schedule == "constant":
            return self.learning_rate
        return self.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))

    @property
    def decay(self) -> float:
        return DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay

    def validate(self) -> None:
        """Refuse impossible combinations up front, before any data is read."""
        for name, value, allowed in (
            ("backend", self.backend, BACKENDS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("device", self.device, DEVICES),
            ("amp", self.amp, AMP_MODES),
        ):
            if value not in allowed:
                raise error(f"--{name} must be one of {', '.join(allowed)}; got {value!r}", where="cnndsl train")
        if self.epochs < 1:
            raise error(f"--epochs must be at least 1; got {self.epochs}", where="cnndsl train")
        if self.batch_size < 1:
            raise error(f"--batch-size must be at least 1; got {self.batch_size}", where="cnndsl train")
        if self.learning_rate <= 0:
            raise error(f"--lr must be positive; got {self.learning_rate}", where="cnndsl train")
        if not 0 <= self.momentum < 1:
            raise error(f"--momentum must lie in [0, 1); got {self.momentum}", where="cnndsl train")
        if self.decay < 0:
            raise error(f"--weight-decay must not be negative; got {self.decay}", where="cnndsl train")
        if self.threads is not None and self.threads < 1:
            raise error(f"--threads must be at least 1; got {self.threads}", where="cnndsl train")
        if self.save is not None:
            from ..weights import SUFFIX_FORMATS

            if Path(self.save).suffix and Path(self.save).suffix.lower() not in SUFFIX_FORMATS:
                raise error(
                    f"--save {self.save}: cannot tell the weights format from the suffix",
                    "end it with .safetensors (recommended), .pt or .npz; without a suffix it is .safetensors",
                    "cnndsl train",
                )
        if self.weights_layout is not None and self.save is None:
            raise error("--weights-layout says how --save names the weights; give --save too", where="cnndsl train")
        if self.freeze and self.backend == "numpy":
            raise error(
                "--freeze needs the torch backend", "the numpy backend trains every layer; use --backend torch", "cnndsl train"
            )
        if self.resume and self.checkpoint_dir is None:
            raise error("--resume needs --checkpoint-dir (where the checkpoint is)", where="cnndsl train")
        if self.backend == "numpy":
            torch_only = [
                flag
                for flag, used in (
                    ("--optimizer adamw", self.optimizer != "sgd"),
                    ("--device cuda", self.device == "cuda"),
                    (f"--amp {self.amp}", self.amp != "off"),
                    ("--channels-last", self.channels_last),
                    ("--compile", self.compile),
                )
                if used
            ]
            if torch_only:
                raise error(
                    f"{', '.join(torch_only)} {'needs' if len(torch_only) == 1 else 'need'} the torch backend",
                    "the numpy backend trains on the CPU in float32 with SGD (momentum); drop the option or use --backend torch",
                    "cnndsl train",
                )

    def summary(self) -> dict[str, Any]:
        """The settings stored in checkpoints and metrics (paths as text)."""
        out = asdict(self)
        out["lr"] = self.learning_rate
        out["weight_decay"] = self.decay
        for key in ("checkpoint_dir", "metrics_json", "save"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


def resume_differences(saved: dict[str, Any], current: TrainConfig) -> tuple[list[str], list[str]]:
    """(blocking differences, other differences) between a checkpoint's settings and this run's."""
    now = current.summary()
    blocking = [f"--{k} was {saved.get(k)!r}, now {now[k]!r}" for k in RESUME_MUST_MATCH if saved.get(k) != now[k]]
    other = [
        f"--{k.replace('_', '-')} was {saved.get(k)!r}, now {now[k]!r}" for k in RESUME_SHOULD_MATCH if saved.get(k) != now[k]
    ]
    if now["schedule"] == "cosine" and saved.get("epochs") != now["epochs"]:
        other.append(f"--epochs was {saved.get('epochs')!r}, now {now['epochs']!r} (the cosine schedule spans --epochs)")
    return blocking, other


def check_resumable(saved: dict[str, Any], current: TrainConfig, path: object) -> None:
    """Refuse a checkpoint whose optimiser state this run could not load (called before loading anything)."""
    blocking, _ = resume_differences(saved, current)
    if blocking:
        raise error(f"cannot resume {path}: {'; '.join(blocking)}", "resume with the settings it was saved with", "cnndsl train")


def initial_weights(config: TrainConfig) -> Weights | None:
    """`--init-from`'s weights without their input normalisation: the run standardises with its own data's statistics."""
    if config.init_from is None:
        return None
    from ..weights import Weights, read_weights

    loaded = read_weights(config.init_from)
    return Weights(loaded.state_dict, None, loaded.source)
