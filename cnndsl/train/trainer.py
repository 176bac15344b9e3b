"""The training run both backends share: epochs, evaluation, records, checkpoints and metrics.

A backend is an `Engine` (cnndsl.train.torch_engine, cnndsl.train.numpy_engine) that knows
how to train one epoch, evaluate the test set, and save and restore its whole state; this
module drives it the same way for both, so their logs, checkpoints and metrics agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import error, needs_torch
from ..files import atomic_write, same_file
from ..ir import Layer, Node, Parallel, Reference, Sequence
from ..network import Network
from ..weights import Preprocess, format_for, write_weights
from .checkpoint import checkpoint_path, remove_stale_temporaries
from .config import TrainConfig, resume_differences
from .data import Dataset, check_fit, load_source
from .distributed import World, world_from_env
from .metrics import iou_per_class, mean_iou
from .outputs import checkpoint_lock, refuse_overwrite
from .report import EpochProgress, Reporter

if TYPE_CHECKING:
    from ..weights_match import MatchReport


class Engine(Protocol):
    """One backend's half of a run. Every method is called on every process of a torchrun job."""

    device_name: str
    weights_report: MatchReport | None
    """How --init-from's weights were matched by structure (None: none given, or in cnndsl's layout)."""

    def train_epoch(self, epoch: int, progress: EpochProgress) -> tuple[float, float, int]:
        """(sum of per-sample losses, correct predictions, samples), summed over all processes.

        For masks a sample's loss is its mean over pixels, and its correct prediction the share of its pixels predicted right.
        """

    def evaluate(self) -> tuple[float, np.ndarray]:
        """(sum of per-sample test losses, K x K confusion matrix), summed over all processes; for masks, both per pixel."""

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write a checkpoint with `state` (epoch, history, settings) and the engine's own state."""

    def restore(self, path: Path) -> dict[str, Any] | None:
        """Load a checkpoint into the engine and return its `state`; None when there is none."""

    def close(self, synchronize: bool = False) -> None:
        """Release what the run holds (the process group); `synchronize` waits for every rank first."""

    def weights(self) -> dict[str, np.ndarray]:
        """The model's state_dict as NumPy arrays (for `--save`)."""


def steps_per_epoch(samples: int, batch: int) -> int:
    return max(1, math.ceil(samples / batch))


def make_engine(network: Network, config: TrainConfig, dataset: Dataset, world: World) -> Engine:
    if config.backend == "numpy":
        from .numpy_engine import NumpyEngine

        return NumpyEngine(network, config, dataset)
    try:
        from .torch_engine import TorchEngine
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        raise needs_torch("training with the torch backend", "cnndsl train", "use --backend numpy") from None
    return TorchEngine(network, config, dataset, world)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    text = json.dumps(metrics, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode())
    except OSError as err:
        raise error(f"cannot write --metrics-json {path}: {err.strerror or err}", where="cnndsl train") from None


def train(network: Network, config: TrainConfig, world: World | None = None) -> dict[str, Any]:
    """Train `network` as `config` says; return the metrics (the --metrics-json object) on every process.

    Raises CnnDslError for data that does not fit the network, bad settings, or an unusable
    checkpoint. On Ctrl-C (KeyboardInterrupt) the last complete checkpoint stays as it was.
    """
    world = world or world_from_env()
    refuse_overwrite(network, config)
    # Rank 0 alone writes checkpoints, so it alone holds the directory.
    with checkpoint_lock(config.checkpoint_dir if world.is_main else None):
        return _train(network, config, world)


def _train(network: Network, config: TrainConfig, world: World) -> dict[str, Any]:
    if config.backend == "numpy" and world.distributed:
        raise error(
            f"the numpy backend trains in one process; this is process {world.rank} of {world.size} (torchrun)",
            "run it without torchrun, or use --backend torch",
            "cnndsl train",
        )
    if config.save is not None:
        for source in (network.filename, config.data):
            if same_file(config.save, source):
                raise error(f"--save {config.save} would overwrite the input {source}", "choose another path", "cnndsl train")
    reporter = Reporter(enabled=world.is_main, progress=config.progress)
    network = logits_network(network, reporter)
    output = tuple(network.output_shape)
    # The classes are the network's outputs, or its output channels for per-pixel labels (C x H x W).
    dataset = load_source(config.data, network.input_shape, output[0] if len(output) in (1, 3) else 0, config.seed, output)
    check_fit(dataset, network.input_shape, network.output_shape, network.parameters, config.data)
    if len(dataset.x_train) < 2 * world.size:
        # BatchNorm cannot train on one sample, and every process needs a batch.
        raise error(
            f"{config.data} has {len(dataset.x_train)} training samples; training needs at least {2 * world.size}", where="--data"
        )
    if not len(dataset.x_test):
        raise error(
            f"{config.data} has no test samples",
            "give each class at least two samples (one in five is held out for testing)",
            "--data",
        )
    engine = make_engine(network, config, dataset, world)
    for line in engine.weights_report.lines() if engine.weights_report is not None else []:
        reporter.line(line)
    try:
        result = _run(network, config, dataset, world, engine, reporter)
    except BaseException:
        engine.close()
        raise
    # Every rank got here: wait for the others before tearing the process group down, so
    # that no rank exits while gloo still has a peer mid-operation (which aborts it).
    engine.close(synchronize=True)
    return result


def logits_network(network: Network, reporter: Reporter) -> Network:
    """The network the loss trains: cross-entropy takes logits (it applies softmax itself).

    A final Softmax would be applied twice, which trains badly and silently (48% instead of
    97% on digits): it is left out of training with a note. It has no weights, so the saved
    weights still run with it, and `run` shows its probabilities. A final Sigmoid squashes
    each class on its own, which cross-entropy cannot undo: refused. A final LogSoftmax
    stays: cross-entropy on log-probabilities is their negative log-likelihood (nn.NLLLoss),
    the same loss and gradients as on the logits, since log_softmax is idempotent.
    """
    if network.outputs is not None:
        return _first_output_logits(network)
    last = network.layers[-1]
    if last.kind.name == "Sigmoid":
        raise error(
            "the network ends in Sigmoid, but training uses cross-entropy, which takes logits (raw class scores)",
            "remove the final Sigmoid: cross-entropy applies softmax itself (a final Softmax is left out of training)",
            network,
            last.pos,
        )
    if last.kind.name != "Softmax":
        return network
    chain: list[Sequence] = []
    node: Node = network.root
    while isinstance(node, Sequence) and node.children:
        chain.append(node)
        node = node.children[-1]
    if node is not last and network.is_graph:  # the body ends in a reference: its Softmax is elsewhere
        raise error(
            f"the network's output is `{node.path}`, a reference, and its Softmax at `{last.path}` cannot be left out of training",
            "end the body with the layers that make the logits, without a final Softmax",
            network,
            last.pos,
        )
    if node is not last:  # the last layer in execution order is always the last child of the last children
        raise AssertionError(f"{last.path}: the final layer is not at the end of the tree")
    # Rebuild the chain of last children without the Softmax; every other node is shared.
    replacement: Node | None = None
    for sequence in reversed(chain):
        children = sequence.children[:-1] + ([replacement] if replacement is not None else [])
        replacement = dataclasses.replace(sequence, children=children)
    assert isinstance(replacement, Sequence)
    reporter.note(
        f"note: {network.filename}: the network ends in Softmax (`{last.path}`), but cross-entropy takes logits and applies"
        " softmax itself; training without the final Softmax (it has no weights: the saved weights run with it)"
    )
    return Network(
        network.name,
        network.input_shape,
        replacement,
        network.parameters,
        network.diagnostics,
        network.filename,
        network.source,
        structural_parameters=network.structural_parameters,
        written_parameters=network.written_parameters,
        written_input=network.written_input,
    )


def _first_output_logits(network: Network) -> Network:
    """With an `output` line the loss trains the first output (docs/LANGUAGE.md, "Training"); it must be logits.

    The others take no part in the loss. A Softmax or Sigmoid that makes the first output is
    refused at that output's name: leaving it out, as for a single output, would change a
    tensor other layers may read.
    """
    assert network.outputs is not None
    first = network.outputs[0]
    node: Node = first
    while not isinstance(node, Layer):  # the layer that writes the tensor: a group's last, a merge
        if isinstance(node, Parallel):
            node = node.merge
        elif isinstance(node, Sequence) and node.children:
            node = node.children[-1]
        elif isinstance(node, Reference) and not node.of_input:
            node = node.source
        else:
            return network  # the input itself, or an empty group: no layer to refuse
    if node.kind.name in ("Softmax", "Sigmoid"):
        raise error(
            f"the loss trains the first output, `{first.target_text}`, which ends in {node.kind.name} (`{node.path}`); "
            "training uses cross-entropy, which takes logits (raw class scores)",
            "list first in the `output` line a tensor of logits: label the layer before the "
            f"{node.kind.name} and output that (cross-entropy applies softmax itself)",
            network,
            first.pos,
        )
    return network


def training_preprocess(dataset: Dataset, reporter: Reporter) -> Preprocess | None:
    """The standardisation the model is trained behind, in the units the source stores images in."""
    try:
        return Preprocess.from_standardisation(dataset.mean, dataset.std, dataset.input_scale)
    except ValueError as err:
        reporter.note(
            f"warning: the training data's statistics are unusable ({err}); weights are saved without input normalisation"
        )
        return None


def _guarded(step: Any, *args: Any) -> Any:
    """Run a training or evaluation step; running out of memory becomes a clear error, not a traceback."""
    try:
        return step(*args)
    except MemoryError:
        raise error("out of host memory while training", "lower --batch-size, or use a smaller network", "cnndsl train") from None
    except RuntimeError as err:
        if "out of memory" not in str(err):
            raise
        raise error(
            f"out of memory while training: {str(err).splitlines()[0]}",
            "lower --batch-size, use --amp bf16, or use a smaller network or input",
            "cnndsl train",
        ) from None


def _run(
    network: Network, config: TrainConfig, dataset: Dataset, world: World, engine: Engine, reporter: Reporter
) -> dict[str, Any]:
    path = checkpoint_path(config.checkpoint_dir, config.backend) if config.checkpoint_dir else None
    history: list[dict[str, Any]] = []
    start = 0
    if path is not None and world.is_main:
        remove_stale_temporaries(path)
        if path.exists() and not config.resume:
            reporter.note(f"note: {path} will be replaced by this run's checkpoints (--resume would continue it)")
    if config.resume and path is not None:
        state = engine.restore(path)
        if state is None:
            reporter.note(f"no checkpoint at {path}: starting from the beginning")
        else:
            _, other = resume_differences(state["config"], config)  # the engine refused blocking ones before loading
            if other:
                reporter.note(
                    f"warning: resuming with other settings ({'; '.join(other)}); the run will differ from an uninterrupted one"
                )
            start = int(state["epoch"])
            history = list(state["history"])
            reporter.note(f"resumed from {path} after epoch {start}")
    preprocess = training_preprocess(dataset, reporter)
    reporter.line(
        f"training {network.name} ({network.params:,} params) on {dataset.name}: {len(dataset.x_train):,} train /"
        f" {len(dataset.x_test):,} test images {'x'.join(map(str, dataset.sample_shape))}, {dataset.num_classes} classes"
        + (f" per pixel (masks {'x'.join(map(str, dataset.mask_shape))})" if dataset.segmentation else "")
        + ";"
        f" {config.backend} on {engine.device_name}"
        + (f" x {world.size} processes" if world.distributed else "")
        + "".join(f", {option}" for option in run_options(config))
    )
    confusion: np.ndarray | None = None
    for epoch in range(start, config.epochs):
        steps = steps_per_epoch(math.ceil(len(dataset.x_train) / world.size), math.ceil(config.batch_size / world.size))
        began = time.perf_counter()
        with reporter.epoch(epoch + 1, config.epochs, steps) as progress:
            loss_sum, correct, count = _guarded(engine.train_epoch, epoch, progress)
        seconds = time.perf_counter() - began
        test_loss, confusion = _guarded(engine.evaluate)
        tested = int(confusion.sum())
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(count, 1),
            "train_accuracy": correct / max(count, 1),
            "test_loss": test_loss / max(tested, 1),
            "test_accuracy": float(np.trace(confusion)) / max(tested, 1),
            "images": count,
            "seconds": seconds,
            "images_per_second": count / max(seconds, 1e-9),
            "lr": config.lr_at(epoch),
        }
        if dataset.segmentation:  # the accuracies above are per pixel
            record["test_mean_iou"] = mean_iou(confusion)
        history.append(record)
        reporter.epoch_summary(record, config.epochs)
        if path is not None:
            state = {"epoch": epoch + 1, "history": history, "config": config.summary()}
            if preprocess is not None:
                state["preprocess"] = preprocess.to_json()  # read back by `run --weights` and cnndsl.weights
            engine.save(path, state)
    if confusion is None:  # resumed after the last epoch: nothing to train, still report the test result
        _, confusion = _guarded(engine.evaluate)
    metrics = final_metrics(network, config, dataset, world, engine, history, confusion)
    metrics["preprocess"] = preprocess.to_json() if preprocess is not None else None
    reporter.final(metrics)
    if world.is_main and config.save is not None:
        weights: dict[str, Any] = engine.weights()
        if config.weights_layout is not None:
            from ..weights_match import to_layout

            weights, _ = to_layout(network, weights, config.weights_layout, config.allow_partial)
            preprocess = None  # a foreign module's load_state_dict(strict=True) takes only its own keys
        write_weights(config.save, weights, preprocess, format_for(config.save, default="safetensors"))
        saved = "the weights" + (" and the input normalisation" if preprocess is not None else "")
        layout = f" in the layout of {config.weights_layout}" if config.weights_layout is not None else ""
        reporter.line(f"saved {saved} to {config.save}{layout}")
    if world.is_main and config.metrics_json is not None:
        write_metrics(config.metrics_json, metrics)
    return metrics


def run_options(config: TrainConfig) -> list[str]:
    """The settings that change how the run computes, for its header line."""
    options = [f"amp {config.amp}"] if config.amp != "off" else []
    if config.channels_last:
        options.append("channels-last")
    if config.compile:
        options.append("torch.compile")
    return options


def final_metrics(
    network: Network,
    config: TrainConfig,
    dataset: Dataset,
    world: World,
    engine: Engine,
    history: list[dict[str, Any]],
    confusion: np.ndarray,
) -> dict[str, Any]:
    """The --metrics-json object: the issue's fields first, then what else a reader needs.

    For masks the accuracy and the confusion matrix count pixels, and `mean_iou`, `iou_per_class`
    and `test_pixels` come after the accuracy; `test_samples` stays the number of test images.
    """
    tested = int(confusion.sum())
    images = sum(r["images"] for r in history)
    seconds = sum(r["seconds"] for r in history)
    metrics: dict[str, Any] = {
        "test_accuracy": float(np.trace(confusion)) / max(tested, 1),
        "train_loss": history[-1]["train_loss"] if history else None,
        "epochs": len(history),
        "images_per_second": images / seconds if seconds > 0 else 0.0,
        "world_size": world.size,
        "history": history,
        "confusion_matrix": confusion.tolist(),
        "class_names": dataset.class_names,
        "test_samples": tested,
        "train_samples": len(dataset.x_train),
        "network": network.name,
        "file": network.filename,
        "params": network.params,
        "data": config.data,
        "backend": config.backend,
        "device": engine.device_name,
        "normalization": {"mean": dataset.mean, "std": dataset.std},
        "settings": config.summary(),
    }
    if not dataset.segmentation:
        return metrics
    metrics["test_samples"] = len(dataset.x_test)
    accuracy = metrics.pop("test_accuracy")
    return {
        "task": "segmentation",
        "test_accuracy": accuracy,
        "mean_iou": mean_iou(confusion),
        "iou_per_class": iou_per_class(confusion),
        "test_pixels": tested,
        **metrics,
    }
