"""Hostile arrays, data and checkpoints (issue 11): clear errors, fast, before anything large is allocated.

D17/D18 array headers, D21-D23 batch memory, D26-D28 labels, D27 empty data, D29 damaged
checkpoints, D30 one run per checkpoint directory, D32 NaN data and checksums.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

import cnndsl
from cnndsl import resources
from cnndsl.arrays import ArrayFileError, read_npy, read_npz
from cnndsl.cli import main
from cnndsl.errors import CnnDslError
from cnndsl.train import TrainConfig, train
from cnndsl.train.checkpoint import load_numpy, save_numpy
from cnndsl.train.data import load_source
from cnndsl.train.outputs import LOCK_NAME, checkpoint_lock

DEFECTS = Path(__file__).parent / "data" / "defects"
SMALL = """network Small(num_classes=3)
input 1x8x8
Conv(4, 3, pad=1), BN, ReLU, flatten, Dropout(0.2), FC(num_classes)
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def quick(**kwargs: Any) -> TrainConfig:
    settings: dict[str, Any] = {"data": "synthetic:40", "progress": False, "threads": 1, "epochs": 1, "batch_size": 16}
    settings.update(kwargs)
    return TrainConfig(**settings)


def clear_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert text in result.output, result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ---------------------------------------------------------------- D17, D18: array files


def test_the_review_sample_with_a_70_tib_header_is_refused_quickly() -> None:
    start = time.perf_counter()
    result = invoke("run", str(DEFECTS / "conv.cnn"), "--input", str(DEFECTS / "x_hugehdr.npy"))
    clear_error(result, "is truncated or damaged: its header describes a 100000000000x3x8x8 float32 array")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes)"),  # D18: was "Aborted!"
        (b"hello world, not numpy", "not an .npy array"),
        (npy_bytes(np.zeros((2, 3, 8, 8), np.float32))[:-10], "truncated or damaged"),
        (npy_bytes(np.array([{"a": 1}], dtype=object))[:128], "no pickled objects"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}", "damaged .npy header"),
        (b"\x93NUMPY\x07\x00", "unknown .npy format version"),
    ],
)
def test_damaged_npy_inputs_are_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    clear_error(invoke("run", str(DEFECTS / "conv.cnn"), "--input", str(path)), message)


def test_array_size_limits_are_checked_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 256), np.float32))
    assert read_npy(path, 4096).shape == (4, 256)
    with pytest.raises(ArrayFileError, match="the limit is"):
        read_npy(path, 4095)
    np.savez(tmp_path / "a.npz", a=np.zeros(300, np.float64), b=np.zeros(300, np.float64))
    assert set(read_npz(tmp_path / "a.npz", 4800)) == {"a", "b"}
    with pytest.raises(ArrayFileError, match="holds 0.00 GiB of arrays"):
        read_npz(tmp_path / "a.npz", 4799)


def huge_npz(path: Path, member: str = "x") -> None:
    """An .npz whose `member` has a header claiming a 70 TiB array, and a valid `y`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{member}.npy", (DEFECTS / "x_hugehdr.npy").read_bytes())
        archive.writestr("y.npy", npy_bytes(np.zeros(3, np.int64)))


@pytest.mark.parametrize("compressed", [False, True])
def test_a_huge_header_inside_training_data_is_refused(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "data.npz"
    huge_npz(path)
    if compressed:  # a deflated member: its size comes from the zip directory, checked the same way
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp_path / "c.npz", "w", zipfile.ZIP_DEFLATED) as target:
            for name in source.namelist():
                target.writestr(name, source.read(name))
        path = tmp_path / "c.npz"
    (tmp_path / "net.cnn").write_text("input 3x8x8\nConv(4, 3), flatten, FC(3)\n")
    start = time.perf_counter()
    result = invoke("train", str(tmp_path / "net.cnn"), "--data", str(path), "--backend", "numpy")
    clear_error(result, "truncated or damaged")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "not a readable .npz file (empty)"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or os.replace(p.with_suffix(".npy"), p), "a single .npy array"),
        (lambda p: np.savez(p, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64)), "has no samples"),  # D27
        (lambda p: np.savez(p, x=np.zeros((), np.float32), y=np.zeros(0, np.int64)), "has no samples"),
        (lambda p: np.savez(p, x=np.zeros((4, 1, 8, 8)), y=np.array([{"a": 1}] * 4, dtype=object)), "no pickled objects"),
    ],
)
def test_unusable_training_files_are_clear_errors(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(CnnDslError, match=re.escape(message)):
        load_source(str(path), cnndsl.Shape((1, 8, 8)), 3)


# ---------------------------------------------------------------- D26, D28, D32: labels and values


@pytest.mark.parametrize(
    "labels",
    [
        np.array([10**9, 0, 1, 2] * 5),
        np.array([2**62, 0, 1, 2] * 5),
        np.array([2**64 - 1, 0, 1, 2] * 5, np.uint64),
        np.array([1e30, 0, 1, 2] * 5),
    ],
    ids=["1e9", "2^62", "uint64-max", "float-1e30"],
)
def test_labels_beyond_the_outputs_are_refused_before_allocating(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((20, 1, 8, 8), np.float32), y=labels)
    start = time.perf_counter()
    with pytest.raises(CnnDslError, match="labels must be class indices below the number of classes") as caught:
        load_source(str(path), cnndsl.Shape((1, 8, 8)), 3)
    assert "the network outputs 3 classes: labels are 0..2" in caught.value.diagnostics[0].hint
    assert time.perf_counter() - start < 2
    # Without a known output count (a network that does not end in one score per class) there is still a bound.
    with pytest.raises(CnnDslError, match="at most 1,000,000 classes"):
        load_source(str(path), cnndsl.Shape((1, 8, 8)), 0)


def test_one_label_table_for_train_and_test(tmp_path: Path) -> None:
    """D28: string labels whose test set differs from training are numbered with the same table."""
    rng = np.random.default_rng(0)
    train_names = np.array(["cat", "dog", "emu"] * 8)
    test_names = np.array(["dog", "emu", "fox"] * 3)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x=rng.random((24, 1, 8, 8), np.float32),
        y=train_names,
        x_test=rng.random((9, 1, 8, 8), np.float32),
        y_test=test_names,
    )
    dataset = load_source(str(path), cnndsl.Shape((1, 8, 8)), 4)
    assert dataset.class_names == ["cat", "dog", "emu", "fox"]
    assert [dataset.class_names[i] for i in dataset.y_train] == train_names.tolist()
    assert [dataset.class_names[i] for i in dataset.y_test] == test_names.tolist()
    np.savez(
        path, x=np.zeros((6, 1, 8, 8), np.float32), y=np.arange(6) % 3, x_test=np.zeros((3, 1, 8, 8)), y_test=np.array(["a"] * 3)
    )
    with pytest.raises(CnnDslError, match="all strings or all integers"):
        load_source(str(path), cnndsl.Shape((1, 8, 8)), 3)


def test_one_label_table_end_to_end(tmp_path: Path) -> None:
    """A trivially separable task whose test split lacks a training class still scores 1.0 (it scored 0.0)."""
    x = np.zeros((60, 1, 8, 8), np.float32)
    names = np.array(["a", "b", "c"] * 20)
    for index, name in enumerate(names):
        x[index, 0, "abc".index(name)] = 1.0
    test = np.isin(names, ["b", "c"])
    np.savez(tmp_path / "d.npz", x=x, y=names, x_test=x[test][:10], y_test=names[test][:10])
    metrics = train(cnndsl.parse(SMALL), quick(data=str(tmp_path / "d.npz"), backend="numpy", epochs=15, lr=0.1))
    assert metrics["class_names"] == ["a", "b", "c"] and metrics["test_accuracy"] == 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_training_data_is_refused(tmp_path: Path, bad: float) -> None:
    x = np.random.default_rng(0).random((30, 1, 8, 8)).astype(np.float32)
    x[7, 0, 3, 3] = bad
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    with pytest.raises(CnnDslError, match="hold NaN or infinite values|holds NaN or infinite values"):
        load_source(str(tmp_path / "d.npz"), cnndsl.Shape((1, 8, 8)), 3)


# ---------------------------------------------------------------- D21-D23: memory before allocating


def test_a_huge_random_batch_is_refused_before_allocating() -> None:
    start = time.perf_counter()
    clear_error(invoke("run", str(DEFECTS / "conv.cnn"), "--batch", "1000000000"), "a batch of 1,000,000,000 needs about")
    clear_error(invoke("run", str(DEFECTS / "conv.cnn"), "--batch", "1000000000", "--backend", "torch"), "on the torch backend")
    assert time.perf_counter() - start < 10


def test_a_huge_accepted_input_is_refused_before_allocating(tmp_path: Path) -> None:
    (tmp_path / "big.cnn").write_text("input 1x1048576x1048576\nReLU\n")
    clear_error(invoke("run", str(tmp_path / "big.cnn")), "a batch of 1 needs about 8,192.00 GiB")


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_the_activation_limit_holds_on_both_backends(backend: str) -> None:
    """D22: the torch backend ignored the 16 GiB limit the NumPy backend applies."""
    clear_error(
        invoke("run", str(DEFECTS / "act20g.cnn"), "--batch", "20", "--backend", backend),
        f"a batch of 20 needs about 20.00 GiB of activations on the {backend} backend",
    )


def test_padding_and_dilation_count_in_the_estimate() -> None:
    """D23: the NumPy backend's padded copy (3 x 200008 x 200008 floats) is refused, pointing at the layer."""
    result = invoke("run", str(DEFECTS / "dil_pad_1e5.cnn"))
    clear_error(result, "needs 447.07 GiB for its padded input and im2col columns")
    assert "dil_pad_1e5.cnn:2:1" in result.output
    network = cnndsl.parse("input 3x8x8\nConv(4, 3, pad=1)\nMaxPool(3, stride=2, pad=1, ceil=true)\nDWConv(3, pad=2)\n")
    conv, pool, dw = network.layers
    assert resources.numpy_workspace_bytes(conv, 1) == 4 * (3 * 10 * 10 + 3 * 9 * 8 * 8)  # padded input + im2col columns
    assert resources.numpy_workspace_bytes(pool, 2) == 2 * 4 * 4 * (8 + 2 + 3) ** 2  # padded copy with the ceil-mode margin
    assert resources.numpy_workspace_bytes(dw, 1) == 4 * 4 * 9 * 9  # depthwise (on the pool's 4x5x5): padded copy only
    # A plain batch is counted without any of that.
    assert resources.batch_bytes(cnndsl.parse("input 3x8x8\nReLU\n"), 2)[0] == 2 * 2 * 4 * 3 * 64


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_running_out_of_memory_under_the_limit_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    import torch

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        if backend == "numpy":
            raise MemoryError
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    target = "cnndsl.numpy_backend.NumpyModel.__call__" if backend == "numpy" else "torch.nn.Module.__call__"
    monkeypatch.setattr(target, no_memory)
    clear_error(invoke("run", str(DEFECTS / "conv.cnn"), "--batch", "3", "--backend", backend), "not enough memory for batch 3")


def test_a_batch_over_the_free_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    clear_error(invoke("run", str(DEFECTS / "conv.cnn"), "--batch", "64"), "not enough memory for batch 64 (needs about")


# ---------------------------------------------------------------- D30: one run per checkpoint directory


def test_a_second_run_on_a_locked_directory_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    temporary = tmp_path / ".checkpoint.npz.abcd.tmp"  # the first run's checkpoint, being written
    with checkpoint_lock(tmp_path):
        temporary.write_bytes(b"half")
        with pytest.raises(
            CnnDslError, match=rf"checkpoint directory {tmp_path} is in use by another training run \(pid {os.getpid()}\)"
        ):
            train(cnndsl.parse(SMALL), quick(backend="numpy", checkpoint_dir=tmp_path))
        assert temporary.read_bytes() == b"half"
    assert (tmp_path / LOCK_NAME).exists()
    train(cnndsl.parse(SMALL), quick(backend="numpy", checkpoint_dir=tmp_path))  # released: the next run goes ahead
    assert not temporary.exists()  # and, holding the lock, it cleans what a killed run left


def test_the_lock_is_held_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from cnndsl.train.outputs import checkpoint_lock\n"
            "with checkpoint_lock(pathlib.Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(CnnDslError, match=f"in use by another training run \\(pid {holder.pid}\\)"):
            with checkpoint_lock(tmp_path):
                pass
    finally:
        holder.communicate("")
    with checkpoint_lock(tmp_path):
        pass


# ---------------------------------------------------------------- D29, D32: damaged checkpoints


def numpy_checkpoint(tmp_path: Path) -> Path:
    train(cnndsl.parse(SMALL), quick(backend="numpy", checkpoint_dir=tmp_path))
    return tmp_path / "checkpoint.npz"


def resume_numpy(tmp_path: Path) -> None:
    train(cnndsl.parse(SMALL), quick(backend="numpy", checkpoint_dir=tmp_path, resume=True, epochs=2))


def _first_momentum_weight(arrays: dict[str, np.ndarray]) -> str:
    """The first layer weight's momentum key (whatever its layer is named): the damage must hit a real entry."""
    return next(k for k in arrays if k.startswith("momentum/") and k.endswith(".weight"))


def _meta(meta: dict[str, Any], **changes: Any) -> dict[str, Any]:
    meta = dict(meta)
    for key, value in changes.items():
        if value is KeyError:
            meta.pop(key)
        else:
            meta[key] = value
    return meta


NUMPY_DAMAGE = {
    "no config": (lambda a, m: (a, _meta(m, config=KeyError)), "`config` is NoneType"),
    "config a list": (lambda a, m: (a, _meta(m, config=[1, 2])), "`config` is list"),
    "epoch a string": (lambda a, m: (a, _meta(m, epoch="1")), "`epoch` is '1'"),
    "epoch negative": (lambda a, m: (a, _meta(m, epoch=-3)), "`epoch` is -3"),
    "history an int": (lambda a, m: (a, _meta(m, history=5)), "`history` is int"),
    "history records": (lambda a, m: (a, _meta(m, history=[{"epoch": 1}])), "record 0 is not an epoch record"),
    "history too short": (lambda a, m: (a, _meta(m, history=[])), "0 records for 1 epochs"),
    "rng a number": (lambda a, m: (a, _meta(m, rng=7)), "`rng` is int"),
    "rng garbage": (lambda a, m: (a, _meta(m, rng={"bit_generator": "Nope", "state": {}})), "is damaged"),
    "momentum wrong shape": (
        lambda a, m: ({k: (v[..., :1] if k.startswith("momentum/") and v.ndim else v) for k, v in a.items()}, m),
        "the momentum buffer of",
    ),
    "momentum missing": (
        lambda a, m: ({k: v for k, v in a.items() if not k.endswith("conv.weight") or not k.startswith("momentum/")}, m),
        "no momentum buffer for: conv.weight",
    ),
    "momentum extra": (
        lambda a, m: ({**a, "momentum/ghost.weight": np.zeros(3, np.float32)}, m),
        "unknown parameters: ghost.weight",
    ),
    "momentum integers": (
        lambda a, m: ({k: (v.astype(np.int64) if k == _first_momentum_weight(a) else v) for k, v in a.items()}, m),
        "holds int64, not floating point",
    ),
}


@pytest.mark.parametrize("damage", list(NUMPY_DAMAGE), ids=list(NUMPY_DAMAGE))
def test_structurally_damaged_numpy_checkpoints_are_clear_errors(tmp_path: Path, damage: str) -> None:
    path = numpy_checkpoint(tmp_path)
    arrays, meta = load_numpy(path)
    change, message = NUMPY_DAMAGE[damage]
    arrays, meta = change(arrays, meta)
    save_numpy(path, arrays, meta)  # a valid checksum: the structure check must catch it
    with pytest.raises(CnnDslError, match=re.escape(message)) as caught:
        resume_numpy(tmp_path)
    assert caught.value.diagnostics[0].hint


def _rewrite_npz(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_damaged_numpy_meta_records_are_clear_errors(tmp_path: Path) -> None:
    path = numpy_checkpoint(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for record, message in [
        (np.array("{not json"), "record is not JSON"),
        (np.array(json.dumps([1, 2])), "is not a cnndsl training checkpoint"),
        (np.arange(3), "not one string"),
    ]:
        _rewrite_npz(path, {**members, "meta.json.npy": npy_bytes(record)})
        with pytest.raises(CnnDslError, match=message):
            resume_numpy(tmp_path)


def test_numpy_checkpoints_are_checksummed(tmp_path: Path) -> None:
    """D32: removing or adding a momentum buffer, or changing a weight, no longer resumes silently."""
    path = numpy_checkpoint(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    momentum = next(name for name in members if name.startswith("momentum/"))
    weight = next(name for name in members if name.startswith("model/") and name.endswith("weight.npy"))
    changed = np.load(io.BytesIO(members[weight]))
    changed.flat[0] += 1
    for variant in (
        {k: v for k, v in members.items() if k != momentum},
        {**members, "momentum/ghost.npy": npy_bytes(np.zeros(3, np.float32))},
        {**members, weight: npy_bytes(changed)},
    ):
        _rewrite_npz(path, variant)
        with pytest.raises(CnnDslError, match="does not match its SHA-256 checksum"):
            resume_numpy(tmp_path)
    _rewrite_npz(path, members)
    resume_numpy(tmp_path)  # the untouched file still resumes


def torch_checkpoint(tmp_path: Path) -> Path:
    train(cnndsl.parse(SMALL), quick(checkpoint_dir=tmp_path))
    return tmp_path / "checkpoint.pt"


def resume_torch(tmp_path: Path) -> None:
    train(cnndsl.parse(SMALL), quick(checkpoint_dir=tmp_path, resume=True, epochs=2))


def _torch_damage() -> dict[str, tuple[Any, str]]:
    import torch

    def momentum_shape(state: dict[str, Any]) -> None:
        entry = next(iter(state["optimizer"]["state"].values()))
        entry["momentum_buffer"] = torch.zeros(5, 5)

    def set_key(key: str, value: Any) -> Any:
        return lambda state: state.__setitem__(key, value)

    return {
        "no config": (lambda s: s.pop("config"), "`config` is NoneType"),
        "epoch a string": (set_key("epoch", "2"), "`epoch` is '2'"),
        "history an int": (set_key("history", 3), "`history` is int"),
        "model a list": (set_key("model", [1]), "`model` is list"),
        "optimizer empty": (set_key("optimizer", {}), "no `state` dict or `param_groups` list"),
        "optimizer groups": (lambda s: s["optimizer"]["param_groups"][0].__setitem__("params", [0]), "covers 1 parameters"),
        "optimizer entry": (lambda s: s["optimizer"]["state"].__setitem__(99, {}), "an entry 99 for no parameter"),
        "momentum shape": (momentum_shape, "the optimiser buffer of"),
        "scaler a list": (set_key("scaler", [1]), "`scaler` is list"),
        "rng garbage": (set_key("rng", [{"cpu": torch.zeros(3, dtype=torch.uint8)}]), "`rng` is not a list of generator states"),
        "rng missing": (lambda s: s.pop("rng"), "`rng` is not a list"),
        "momentum not a number": (
            lambda s: s["optimizer"]["param_groups"][0].__setitem__("momentum", "fast"),
            "optimiser setting `momentum` is 'fast'",
        ),
    }


@pytest.mark.parametrize("damage", list(_torch_damage()), ids=list(_torch_damage()))
def test_structurally_damaged_torch_checkpoints_are_clear_errors(tmp_path: Path, damage: str) -> None:
    from cnndsl.train.checkpoint import load_torch, save_torch

    path = torch_checkpoint(tmp_path)
    state = load_torch(path)
    change, message = _torch_damage()[damage]
    change(state)
    save_torch(path, state)
    with pytest.raises(CnnDslError, match=re.escape(message)):
        resume_torch(tmp_path)


def test_random_bytes_in_a_torch_checkpoint_are_detected(tmp_path: Path) -> None:
    """D32: 64 random bytes written into a tensor's data loaded silently; the checksum refuses them."""
    path = torch_checkpoint(tmp_path)
    original = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor's bytes (stored uncompressed)
    local_header = original[info.header_offset : info.header_offset + 30]
    start = (
        info.header_offset + 30 + int.from_bytes(local_header[26:28], "little") + int.from_bytes(local_header[28:30], "little")
    )
    damaged = bytearray(original)
    damaged[start : start + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(damaged))
    with pytest.raises(CnnDslError, match="does not match its SHA-256 checksum|not a readable torch checkpoint"):
        resume_torch(tmp_path)
    path.write_bytes(original)
    resume_torch(tmp_path)
