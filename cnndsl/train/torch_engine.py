"""The torch backend of `cnndsl train`: the compiled module, optionally under DDP, AMP and torch.compile.

The data lives in memory as tensors (on the GPU when it fits comfortably), so batches are
index gathers rather than a DataLoader. Each epoch's order comes from a DistributedSampler
seeded with --seed and the epoch number, not from a global RNG: a resumed run and every
process of a torchrun job agree on it without sharing state. The global torch RNG (used by
Dropout) is saved per rank in each checkpoint, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import gc
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ..errors import CnnDslError, error
from .checkpoint import DAMAGED_HINT, load_torch, restoring, save_torch, validate_buffers, validate_state
from .config import TrainConfig, check_resumable, choose_threads, initial_weights
from .data import Dataset
from .distributed import World, all_sum, broadcast_object, destroy_process_group, gather_objects, init_process_group
from .metrics import first_output
from .report import EpochProgress

if TYPE_CHECKING:
    from ..network import Network

DEVICE_DATA_FRACTION = 0.25
"""Copy the whole dataset to the GPU when it takes at most this share of the free memory."""
REPORT_EVERY = 10
"""Steps between progress-bar loss/accuracy updates: reading them synchronises with the GPU."""
EVAL_BATCH = 512
FORMAT = "cnndsl-train-torch"


def resolve_device(requested: str, world: World) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise error("--device cuda: no CUDA GPU is available to PyTorch here", "use --device cpu (or auto)", "cnndsl train")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = world.local_rank % max(torch.cuda.device_count(), 1)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class TorchEngine:
    def __init__(self, network: Network, config: TrainConfig, dataset: Dataset, world: World) -> None:
        self.config = config
        self.world = world
        self.device = resolve_device(config.device, world)
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        if self.amp_dtype is torch.float16 and self.device.type == "cpu":
            raise error("--amp fp16 needs a GPU", "use --amp bf16 on the CPU", "cnndsl train")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
        threads = choose_threads(network.macs, config, world.size) if self.device.type == "cpu" else config.threads
        self.previous_threads = torch.get_num_threads()  # restored by close(): the caller's process keeps its setting
        if threads is not None:
            torch.set_num_threads(threads)
        init_process_group(world, self.device.type)
        try:
            self._build(network, config, dataset, world)
        except BaseException:
            self.close()  # the caller only closes engines it got back
            raise

    def _build(self, network: Network, config: TrainConfig, dataset: Dataset, world: World) -> None:
        self.classes = dataset.num_classes
        self.memory_format = torch.channels_last if config.channels_last and len(dataset.sample_shape) == 3 else None
        # The same seed on every rank gives the same initial weights (DDP also broadcasts rank 0's).
        self.model: nn.Module = network.to_torch(
            seed=config.seed, weights=initial_weights(config), allow_partial=config.allow_partial
        ).to(self.device)
        self.weights_report = getattr(self.model, "weights_report", None)
        freeze(self.model, config.freeze)
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        # Dropout draws from the global generator; each rank gets its own stream.
        torch.manual_seed(config.seed + world.rank)
        self.runner: nn.Module = self.model
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.runner = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if config.compile:
            self.runner = torch.compile(self.runner)  # type: ignore[assignment]
        self.x_train, self.y_train = self._place(dataset.x_train, dataset.y_train)
        self.x_test, self.y_test = self._place(dataset.x_test[world.rank :: world.size], dataset.y_test[world.rank :: world.size])
        # The sampler reads only len() of its dataset: the sample indices stand for it.
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(len(dataset.x_train)),  # type: ignore[arg-type]
            num_replicas=world.size,
            rank=world.rank,
            shuffle=True,
            seed=config.seed,
        )
        self.batch = math.ceil(config.batch_size / world.size)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adamw":
            return torch.optim.AdamW(self.model.parameters(), lr=c.learning_rate, weight_decay=c.decay)
        return torch.optim.SGD(self.model.parameters(), lr=c.learning_rate, momentum=c.momentum, weight_decay=c.decay)

    def _place(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensors on the GPU when they fit in a quarter of its free memory, else pinned host memory."""
        xs, ys = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        if self.device.type != "cuda":
            return xs, ys
        free, _ = torch.cuda.mem_get_info(self.device)
        if xs.nbytes <= DEVICE_DATA_FRACTION * free:
            return xs.to(self.device), ys.to(self.device)
        return xs.pin_memory(), ys.pin_memory()

    def _batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = x[index.to(x.device)].to(self.device, non_blocking=True)
        yb = y[index.to(y.device)].to(self.device, non_blocking=True)
        if self.memory_format is not None:
            xb = xb.contiguous(memory_format=self.memory_format)
        return xb, yb

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_epoch(self, epoch: int, progress: EpochProgress) -> tuple[float, float, int]:
        self.runner.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr_at(epoch)
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, samples
        starts = range(0, len(order), self.batch)
        for step, begin in enumerate(starts):
            index = order[begin : begin + self.batch]
            if len(index) < 2:
                # A last batch of one sample cannot train BatchNorm; it is dropped (every rank has the same count).
                progress.update(0)
                continue
            xb, yb = self._batch(self.x_train, self.y_train, index)
            with self._autocast():
                outputs = self.runner(xb)
                logits = first_output(outputs)
                # Per image, or per pixel (N x classes x H x W against N x H x W masks): the mean over every label.
                loss = F.cross_entropy(logits.float(), yb)
                if isinstance(outputs, (tuple, list)) and len(outputs) > 1:
                    # The other outputs take no part in the loss, but join it at weight 0: the layers only they
                    # read get zero gradients, as in the NumPy engine (weight decay and momentum then treat
                    # every parameter alike in both), and DistributedDataParallel finds every parameter used.
                    loss = loss + 0.0 * sum(output.float().sum() for output in outputs[1:])
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():
                totals[0] += loss.detach().double() * len(index)
                # Correct images, or for masks each image's share of correct pixels: the accuracy is then per pixel.
                totals[1] += (logits.argmax(1) == yb).sum() / yb[0].numel()
                totals[2] += len(index)
            if progress.progress is not None and (step % REPORT_EVERY == 0 or step == len(starts) - 1):
                done = totals.tolist()
                progress.update(len(index) * self.world.size, done[0] / done[2], done[1] / done[2])
            else:
                progress.update(len(index) * self.world.size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        loss_sum, correct, count = all_sum(totals, self.world).tolist()
        return loss_sum, correct, int(count)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, np.ndarray]:
        """Each rank scores its own slice of the test set (no padding), then the sums are all-reduced.

        For masks the loss is summed and the confusion matrix counted over pixels.
        """
        self.model.eval()
        loss = torch.zeros(1, dtype=torch.float64, device=self.device)
        confusion = torch.zeros(self.classes * self.classes, dtype=torch.long, device=self.device)
        for begin in range(0, len(self.x_test), EVAL_BATCH):
            index = torch.arange(begin, min(begin + EVAL_BATCH, len(self.x_test)))
            xb, yb = self._batch(self.x_test, self.y_test, index)
            with self._autocast():
                logits = first_output(self.model(xb)).float()
            loss += F.cross_entropy(logits, yb, reduction="sum").double()  # summed over images, or pixels
            confusion += torch.bincount((yb * self.classes + logits.argmax(1)).flatten(), minlength=self.classes * self.classes)
        all_sum(loss, self.world)
        all_sum(confusion, self.world)
        return float(loss.item()), confusion.view(self.classes, self.classes).cpu().numpy()

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, path: Path, state: dict[str, Any]) -> None:
        rng = gather_objects(self._rng_state(), self.world)  # a collective: every rank takes part
        if not self.world.is_main:
            return
        checkpoint = {
            "format": FORMAT,
            **state,
            "world_size": self.world.size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }
        save_torch(path, checkpoint)

    def restore(self, path: Path) -> dict[str, Any] | None:
        checkpoint = (load_torch(path) if path.exists() else None) if self.world.is_main else None
        checkpoint = broadcast_object(checkpoint, self.world)
        if checkpoint is None:
            return None
        validate_state(path, checkpoint)
        check_resumable(checkpoint["config"], self.config, path)
        if not isinstance(checkpoint.get("model"), dict):
            raise error(
                f"{path} is damaged: `model` is {type(checkpoint.get('model')).__name__}, not a state dict",
                DAMAGED_HINT,
                "--checkpoint-dir",
            )
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as err:
            raise error(
                f"{path} holds weights of another network: {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}",
                "resume with the same .cnn file, --input and --set values, or use another --checkpoint-dir",
                "--checkpoint-dir",
            ) from None
        self._validate(path, checkpoint)  # after the weights: another network's checkpoint is said as such
        with restoring(path):
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            rng = checkpoint["rng"]
            if len(rng) == self.world.size:
                # Each rank continues its own Dropout stream; with another world size the streams cannot match anyway.
                own = rng[self.world.rank]
                torch.set_rng_state(own["cpu"])
                if "cuda" in own and self.device.type == "cuda":
                    torch.cuda.set_rng_state(own["cuda"], self.device)
        return {k: checkpoint[k] for k in ("epoch", "history", "config")}

    def weights(self) -> dict[str, np.ndarray]:
        # The module itself, not the DDP or torch.compile wrapper: the keys are the network's paths.
        return {key: value.detach().cpu().numpy() for key, value in self.model.state_dict().items()}

    def _validate(self, path: Path, checkpoint: dict[str, Any]) -> None:
        """The torch-specific parts of a checkpoint, checked before any is loaded: a clear error naming what is wrong."""

        def damaged(what: str) -> CnnDslError:
            return error(f"{path} is damaged: {what}", DAMAGED_HINT, "--checkpoint-dir")

        for key in ("model", "optimizer", "scaler"):
            if not isinstance(checkpoint.get(key), dict):
                raise damaged(f"`{key}` is {type(checkpoint.get(key)).__name__}, not a state dict")
        optimizer = checkpoint["optimizer"]
        state, groups = optimizer.get("state"), optimizer.get("param_groups")
        if not isinstance(state, dict) or not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise damaged("the optimiser state has no `state` dict or `param_groups` list")
        if len(groups) != len(self.optimizer.param_groups):
            raise damaged(f"the optimiser state has {len(groups)} parameter groups; this run's optimiser has one")
        for saved, current in zip(groups, self.optimizer.param_groups, strict=True):
            for name, value in current.items():
                if name != "params" and not _same_kind(saved.get(name), value):
                    raise damaged(f"the optimiser setting `{name}` is {saved.get(name)!r}, expected a {type(value).__name__}")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        indices = [i for group in groups for i in (group.get("params") or [])]
        if indices != list(range(len(params))):
            raise damaged(f"the optimiser state covers {len(indices)} parameters; the network has {len(params)}")
        buffers: dict[str, Any] = {}
        for index, values in state.items():
            if not _is_index(index, len(params)) or not isinstance(values, dict):
                raise damaged(f"the optimiser state has an entry {index!r} for no parameter")
            buffers.update({f"{index}.{name}": v for name, v in values.items() if isinstance(v, torch.Tensor) and v.dim() > 0})
        shapes = {key: tuple(params[int(key.split(".")[0])].shape) for key in buffers}
        validate_buffers(path, buffers, shapes, complete=False, what="optimiser")
        rng = checkpoint.get("rng")
        size = torch.get_rng_state().numel()
        if (
            not isinstance(rng, list)
            or not rng
            or not all(
                isinstance(r, dict)
                and isinstance(r.get("cpu"), torch.Tensor)
                and r["cpu"].dtype == torch.uint8
                and r["cpu"].numel() == size
                for r in rng
            )
        ):
            raise damaged("`rng` is not a list of generator states (one per process)")

    def close(self, synchronize: bool = False) -> None:
        torch.set_num_threads(self.previous_threads)
        # DDP's reducer holds the process group: release it before the group is torn down, or
        # its destruction later, at exit, can abort the process (gloo: "terminate called
        # without an active exception").
        self.__dict__.pop("runner", None)
        gc.collect()
        destroy_process_group(self.world, synchronize)


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Stop training the parameters under each layer path prefix (requires_grad False); a prefix that names none is refused."""
    for prefix in prefixes:
        chosen = [p for name, p in model.named_parameters() if name == prefix or name.startswith(prefix.rstrip(".") + ".")]
        if not chosen:
            raise error(
                f"--freeze {prefix}: no parameters under this path",
                "give layer paths as in the state_dict keys (`cnndsl check --expand` shows the layers)",
                "cnndsl train",
            )
        for parameter in chosen:
            parameter.requires_grad_(False)


def _is_index(value: Any, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def _same_kind(saved: Any, current: Any) -> bool:
    """A saved optimiser setting of the kind this run's optimiser holds (ints and floats interchangeable)."""
    if isinstance(current, bool) or current is None:
        return isinstance(saved, bool) or saved is None
    if isinstance(current, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(current, (tuple, list)):
        return isinstance(saved, (tuple, list)) and len(saved) == len(current) and all(map(_same_kind, saved, current))
    return isinstance(saved, type(current))
