"""`cnndsl train`: accuracy on real data with both backends, the data sources, exact resume,
checkpoints that survive SIGKILL and Ctrl-C, a 2-process torchrun (gloo) run, and clear
errors for data that does not fit the network.

Sized for two CPU cores: small networks, few epochs, one torch thread in-process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import CnnDslError
from cnndsl.files import atomic_write
from cnndsl.train import TrainConfig, load_any, train
from cnndsl.train.checkpoint import checkpoint_path, load_numpy, load_torch, save_torch
from cnndsl.train.data import load_source, stratified_split

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
DIGITS_CNN = ROOT / "architectures" / "digits_cnn.cnn"
DIGITS_TEST = 359  # digits' stratified 20% test split

# Dropout makes the resume tests check that the RNG state travels with the checkpoint.
DROPOUT_NET = """network DropNet(num_classes=10)
input 1x8x8
[Conv(8, 3, pad=1), BN, ReLU, MaxPool(2)], flatten, FC(32), ReLU, Dropout(0.3), FC(num_classes)
"""


def quick(**kwargs: object) -> TrainConfig:
    settings: dict[str, object] = {"data": "digits", "progress": False, "threads": 1}
    settings.update(kwargs)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


# ---------------------------------------------------------------- accuracy on digits


def test_digits_cnn_is_small_with_two_conv_blocks() -> None:
    net = cnndsl.load(DIGITS_CNN)
    assert net.params == 13_754 and "13,754" in DIGITS_CNN.read_text()
    assert tuple(net.input_shape) == (1, 8, 8) and tuple(net.output_shape) == (10,)
    assert [layer.kind.name for layer in net.layers].count("Conv") == 2


def test_digits_torch_reaches_097_in_10_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics_path = tmp_path / "metrics.json"
    metrics = train(cnndsl.load(DIGITS_CNN), quick(epochs=10, metrics_json=metrics_path))
    assert metrics["test_accuracy"] >= 0.97, metrics["history"]
    written = json.loads(metrics_path.read_text())
    for key in ("test_accuracy", "train_loss", "epochs", "images_per_second", "world_size", "history"):
        assert key in written
    assert written["epochs"] == 10 and written["world_size"] == 1 and len(written["history"]) == 10
    assert written["test_samples"] == DIGITS_TEST and np.array(written["confusion_matrix"]).sum() == DIGITS_TEST
    assert written["images_per_second"] > 0 and written["train_loss"] < 0.1
    out = capsys.readouterr().out
    assert out.count("epoch ") >= 10 and "test accuracy" in out and "confusion matrix" in out


def test_digits_numpy_reaches_095_quickly() -> None:
    start = time.perf_counter()
    metrics = train(cnndsl.load(DIGITS_CNN), quick(backend="numpy", epochs=6))
    assert metrics["test_accuracy"] >= 0.95, metrics["history"]
    assert time.perf_counter() - start < 60
    assert metrics["device"].startswith("cpu") and metrics["backend"] == "numpy"


def test_numpy_backend_trains_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys, cnndsl\n"
        "from cnndsl.train import TrainConfig, train\n"
        f"train(cnndsl.load({str(DIGITS_CNN)!r}), TrainConfig(backend='numpy', epochs=1, progress=False,"
        f" checkpoint_dir={str(tmp_path)!r}))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch'], 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoint.npz").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_digits_on_the_gpu_with_mixed_precision(tmp_path: Path, amp: str) -> None:
    metrics = train(
        cnndsl.load(DIGITS_CNN),
        quick(epochs=4, device="cuda", amp=amp, channels_last=True, checkpoint_dir=tmp_path),
    )
    assert metrics["test_accuracy"] >= 0.93 and metrics["device"] != "cpu"
    assert load_torch(tmp_path / "checkpoint.pt")["epoch"] == 4


# ---------------------------------------------------------------- data sources


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images * 15).astype(np.uint8), bunch.target


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_npz_source_in_every_layout(tmp_path: Path, layout: str) -> None:
    images, labels = digits_arrays()
    x = {"NCHW": images[:, None], "NHWC": images[..., None], "NHW": images}[layout]
    path = tmp_path / "digits.npz"
    np.savez(path, x=x[:600], y=labels[:600])
    metrics = train(cnndsl.load(DIGITS_CNN), quick(data=str(path), epochs=4))
    assert metrics["test_samples"] == 120 and metrics["train_samples"] == 480
    assert metrics["test_accuracy"] > 0.8


def test_npz_with_own_test_split_and_string_labels(tmp_path: Path) -> None:
    images, labels = digits_arrays()
    names = np.array(["zero", "one", "two"])
    keep = labels < 3
    x, y = images[keep][:, None], names[labels[keep]]
    path = tmp_path / "three.npz"
    np.savez(path, x=x[:400], y=y[:400], x_test=x[400:], y_test=y[400:])
    net = cnndsl.load(DIGITS_CNN, num_classes=3)
    metrics = train(net, quick(data=str(path), epochs=3))
    assert metrics["class_names"] == ["one", "two", "zero"]  # string labels in sorted order
    assert metrics["test_samples"] == len(x) - 400 and metrics["test_accuracy"] > 0.9


def test_image_folder_is_resized_to_the_network_input(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for name, colour in colours.items():
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (20, 24, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            image_module.fromarray(pixels).save(tmp_path / "pics" / name / f"{i}{suffix}")
    (tmp_path / "pics" / "red" / "notes.txt").write_text("not an image")
    dataset = load_source(str(tmp_path / "pics"), cnndsl.Shape((3, 8, 8)), 3)
    assert dataset.x_train.shape[1:] == (3, 8, 8) and len(dataset.x_train) + len(dataset.x_test) == 30
    assert dataset.class_names == ["blue", "green", "red"]
    net = cnndsl.parse("input 3x8x8\nConv(4, 3, pad=1), ReLU, GlobalAvgPool, flatten, FC(3)")
    metrics = train(net, quick(data=str(tmp_path / "pics"), epochs=8, batch_size=8, lr=0.1))
    assert metrics["test_accuracy"] >= 0.8 and metrics["test_samples"] == 6


def test_synthetic_source_takes_the_network_shape() -> None:
    net = cnndsl.parse("input 3x12x10\nConv(4, 3), ReLU, GlobalAvgPool, flatten, FC(5)")
    metrics = train(net, quick(data="synthetic:200", epochs=2))
    assert metrics["train_samples"] == 200 and metrics["test_samples"] == 40
    assert len(metrics["confusion_matrix"]) == 5


def test_stratified_split_keeps_every_class_share() -> None:
    y = np.repeat(np.arange(4), [50, 30, 10, 1])
    train_idx, test_idx = stratified_split(y)
    assert len(np.intersect1d(train_idx, test_idx)) == 0 and len(train_idx) + len(test_idx) == len(y)
    assert [int((y[test_idx] == c).sum()) for c in range(4)] == [10, 6, 2, 0]


# ---------------------------------------------------------------- mismatched data and settings


def test_mismatched_shape_and_classes_give_clear_errors(tmp_path: Path) -> None:
    resnet = str(ROOT / "architectures" / "resnet18.cnn")
    result = run_cli("train", resnet, "--data", "digits")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the network expects 3x224x224, digits are 1x8x8" in result.output
    assert "add `--input 1x8x8` or change the `input` line" in result.output
    result = run_cli("train", resnet, "--data", "digits", "--input", "1x8x8")
    assert result.exit_code == 1 and "the network outputs 1000 classes, digits has 10" in result.output
    assert "--set num_classes=10" in result.output
    np.savez(tmp_path / "rgb.npz", x=np.zeros((20, 3, 8, 8), np.float32), y=np.arange(20) % 10)
    result = run_cli("train", str(DIGITS_CNN), "--data", str(tmp_path / "rgb.npz"))
    assert result.exit_code == 1 and "the network expects 1x8x8, " in result.output and "is 3x8x8" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "nowhere.npz"], "no such file"),
        (["--data", "digits", "--backend", "numpy", "--amp", "bf16"], "--amp bf16 needs the torch backend"),
        (["--data", "digits", "--resume"], "--resume needs --checkpoint-dir"),
        (["--data", "digits", "--device", "cuda"], "no CUDA GPU is available"),
        (["--data", "digits", "--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a GPU"),
    ],
)
def test_bad_settings_are_refused_without_traceback(args: list[str], message: str) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is available here")
    result = run_cli("train", str(DIGITS_CNN), *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_npz_files_give_clear_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 1, 8, 8)))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 1, 8, 8)), y=np.zeros(3, np.int64))
    for name, message in [
        ("nolabels", "has no array `y`"),
        ("junk", "not a readable .npz"),
        ("short", "4 samples but `y` has 3"),
    ]:
        with pytest.raises(CnnDslError, match=message):
            load_source(str(tmp_path / f"{name}.npz"), cnndsl.Shape((1, 8, 8)), 10)


def test_too_little_data_and_unwritable_metrics_are_clear_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", x=np.zeros((2, 1, 8, 8), np.float32), y=np.array([0, 1]))
    with pytest.raises(CnnDslError, match="has no test samples"):
        train(cnndsl.load(DIGITS_CNN, num_classes=2), quick(data=str(tmp_path / "two.npz")))
    (tmp_path / "file").write_text("")
    with pytest.raises(CnnDslError, match="cannot write --metrics-json"):
        train(cnndsl.parse(DROPOUT_NET), quick(epochs=1, metrics_json=tmp_path / "file" / "m.json"))


# ---------------------------------------------------------------- resume and checkpoints


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_resume_repeats_the_uninterrupted_run(tmp_path: Path, backend: str) -> None:
    net = cnndsl.parse(DROPOUT_NET)
    whole = train(net, quick(backend=backend, epochs=3, seed=7, checkpoint_dir=tmp_path / "whole"))
    train(net, quick(backend=backend, epochs=1, seed=7, checkpoint_dir=tmp_path / "parts"))
    resumed = train(net, quick(backend=backend, epochs=3, seed=7, checkpoint_dir=tmp_path / "parts", resume=True))
    strip = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in strip} for r in resumed["history"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in whole["history"]
    ]
    assert resumed["confusion_matrix"] == whole["confusion_matrix"]
    a = load_any(checkpoint_path(tmp_path / "whole", backend))
    b = load_any(checkpoint_path(tmp_path / "parts", backend))
    assert a["epoch"] == b["epoch"] == 3
    weights_a, weights_b = (a["model"], b["model"]) if backend == "torch" else (a["arrays"], b["arrays"])
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert np.array_equal(np.asarray(weights_a[key]), np.asarray(weights_b[key])), key
    # A different seed gives different weights: the comparison above can fail.
    other = train(net, quick(backend=backend, epochs=1, seed=8))
    assert other["history"][0]["train_loss"] != whole["history"][0]["train_loss"]


def test_resume_refuses_another_network_or_backend(tmp_path: Path) -> None:
    train(cnndsl.parse(DROPOUT_NET), quick(epochs=1, checkpoint_dir=tmp_path))
    with pytest.raises(CnnDslError, match="holds weights of another network"):
        train(cnndsl.load(DIGITS_CNN), quick(epochs=2, checkpoint_dir=tmp_path, resume=True))
    with pytest.raises(CnnDslError, match="--optimizer was 'sgd', now 'adamw'"):
        train(cnndsl.parse(DROPOUT_NET), quick(epochs=2, checkpoint_dir=tmp_path, resume=True, optimizer="adamw"))
    (tmp_path / "checkpoint.npz").write_bytes((tmp_path / "checkpoint.pt").read_bytes())
    with pytest.raises(CnnDslError, match="is not a (readable NumPy|cnndsl training) checkpoint"):
        train(cnndsl.parse(DROPOUT_NET), quick(backend="numpy", epochs=2, checkpoint_dir=tmp_path, resume=True))


def test_resume_after_the_last_epoch_only_reports(tmp_path: Path) -> None:
    net = cnndsl.parse(DROPOUT_NET)
    first = train(net, quick(epochs=1, checkpoint_dir=tmp_path))
    again = train(net, quick(epochs=1, checkpoint_dir=tmp_path, resume=True))
    assert again["test_accuracy"] == first["test_accuracy"] and again["epochs"] == 1


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    save_torch(target, {"format": "cnndsl-train-torch", "epoch": 1})

    def broken(handle) -> None:
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert load_torch(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _save_forever(directory: str, ready: multiprocessing.synchronize.Event) -> None:
    # A checkpoint of a few MB, rewritten as fast as possible: SIGKILL lands mid-write most times.
    state = {"format": "cnndsl-train-torch", "epoch": 0, "model": {"w": torch.randn(1_000_000)}}
    path = Path(directory) / "checkpoint.pt"
    while True:
        state["epoch"] += 1
        save_torch(path, state)
        ready.set()


def test_checkpoints_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    epochs = []
    mid_write = 0
    for _ in range(8):
        ready = context.Event()
        process = context.Process(target=_save_forever, args=(str(tmp_path), ready))
        process.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0, 0.25))
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        leftovers = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
        mid_write += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        checkpoint = load_torch(tmp_path / "checkpoint.pt")  # complete: loads, and has every tensor
        assert checkpoint["model"]["w"].shape == (1_000_000,)
        epochs.append(checkpoint["epoch"])
    assert all(e >= 1 for e in epochs)
    assert mid_write >= 1, "no kill landed during a write: the test proved nothing"


def train_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cnndsl", "train", *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_killed_and_interrupted_training_leave_a_complete_checkpoint(tmp_path: Path) -> None:
    net_file = tmp_path / "drop.cnn"
    net_file.write_text(DROPOUT_NET)
    common = [str(net_file), "--data", "digits", "--epochs", "200", "--batch-size", "16", "--no-progress"]
    common += ["--checkpoint-dir", str(tmp_path / "ck")]
    path = tmp_path / "ck" / "checkpoint.pt"
    # SIGKILL at a random moment after the first checkpoint: the file still loads.
    process = train_process(*common)
    wait_for(path, process)
    time.sleep(random.Random(5).uniform(0, 0.5))
    process.kill()
    process.communicate()
    killed_at = load_torch(path)["epoch"]
    assert killed_at >= 1
    # Ctrl-C: exit status 130, a message, the last complete checkpoint, no temporary files.
    process = train_process(*common, "--resume")
    deadline = time.monotonic() + 60
    while load_torch(path)["epoch"] == killed_at:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    checkpoint = load_torch(path)
    assert checkpoint["epoch"] > killed_at and len(checkpoint["history"]) == checkpoint["epoch"]
    assert sorted(p.name for p in path.parent.iterdir()) == [".cnndsl-train.lock", "checkpoint.pt"]  # no temporaries


# ---------------------------------------------------------------- torchrun


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "cnndsl", "train", str(DIGITS_CNN), "--data", "digits", "--no-progress", *args]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_torchrun_two_processes_over_gloo(tmp_path: Path) -> None:
    metrics_path = tmp_path / "metrics.json"
    result = torchrun("--epochs", "3", "--metrics-json", str(metrics_path), "--checkpoint-dir", str(tmp_path / "ck"))
    # Rank 0 alone logs: each line once.
    assert result.stdout.count("epoch 1/3:") == 1 and result.stdout.count("test accuracy") == 1, result.stdout
    assert "x 2 processes" in result.stdout
    metrics = json.loads(metrics_path.read_text())
    assert metrics["world_size"] == 2
    # Aggregated over both ranks: each scored half of the test set, each trained on half the images.
    assert metrics["test_samples"] == DIGITS_TEST and sum(map(sum, metrics["confusion_matrix"])) == DIGITS_TEST
    assert all(record["images"] >= 1437 for record in metrics["history"])
    assert metrics["test_accuracy"] > 0.9
    checkpoint = load_torch(tmp_path / "ck" / "checkpoint.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2 and checkpoint["epoch"] == 3
    # Resumed under torchrun (rank 0 reads the checkpoint and broadcasts it): the same run.
    torchrun("--epochs", "1", "--checkpoint-dir", str(tmp_path / "parts"))
    resumed = torchrun("--epochs", "3", "--checkpoint-dir", str(tmp_path / "parts"), "--resume")
    assert resumed.stderr.count("resumed from") == 1
    again = load_torch(tmp_path / "parts" / "checkpoint.pt")
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, again["model"][key]), key


def test_numpy_backend_refuses_torchrun() -> None:
    from cnndsl.train.distributed import World

    with pytest.raises(CnnDslError, match="numpy backend trains in one process"):
        train(cnndsl.load(DIGITS_CNN), quick(backend="numpy"), world=World(rank=1, local_rank=1, size=2))


def test_numpy_checkpoint_format(tmp_path: Path) -> None:
    train(cnndsl.load(DIGITS_CNN), quick(backend="numpy", epochs=1, checkpoint_dir=tmp_path))
    arrays, meta = load_numpy(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 1 and meta["config"]["backend"] == "numpy"
    assert any(k.startswith("momentum/") for k in arrays) and "model/features.conv_block1.conv.weight" in arrays
