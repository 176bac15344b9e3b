"""`cnndsl run`: both backends, inputs and weights from files, and clear errors for every mismatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy_reference import require_torch

import cnndsl
from cnndsl.cli import main

SOURCE = "network Tiny\ninput 3x8x8\nConv(4, 3, pad=1), BN, ReLU, GlobalAvgPool, flatten, FC(6)\n"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text(SOURCE)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_random_input_prints_shape_time_and_top5(tiny: Path) -> None:
    code, out, _ = run(str(tiny), "--batch", "3")
    assert code == 0
    assert "Tiny: output 3x6 (numpy, " in out
    assert out.count("sample ") == 3
    assert out.splitlines()[1].count("%") == 5


def test_npy_input_weights_and_output_file(tiny: Path, tmp_path: Path) -> None:
    net = cnndsl.load(tiny)
    model = net.to_numpy(seed=4)
    weights = tmp_path / "w.npz"
    model.save(weights)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run(str(tiny), "--input", str(tmp_path / "x.npy"), "--weights", str(weights), "-o", str(tmp_path / "y.npy"))
    assert code == 0, out
    assert np.allclose(np.load(tmp_path / "y.npy"), model(x))
    # One sample without the batch axis is accepted on the command line.
    np.save(tmp_path / "one.npy", x[0])
    code, out, _ = run(str(tiny), "--input", str(tmp_path / "one.npy"), "--weights", str(weights), "-o", str(tmp_path / "y1.npy"))
    assert code == 0 and np.allclose(np.load(tmp_path / "y1.npy"), model(x[:1]))


def test_torch_and_numpy_backends_agree_on_the_same_weights(tiny: Path, tmp_path: Path) -> None:
    torch = require_torch()
    net = cnndsl.load(tiny)
    torch.save(net.to_torch(seed=1).state_dict(), tmp_path / "w.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    outputs = {}
    for backend in ("numpy", "torch"):
        code, out, err = run(
            str(tiny),
            "--backend",
            backend,
            "--input",
            str(tmp_path / "x.npy"),
            "--weights",
            str(tmp_path / "w.pt"),
            "-o",
            str(tmp_path / f"{backend}.npy"),
        )
        assert code == 0, err
        outputs[backend] = np.load(tmp_path / f"{backend}.npy")
    assert np.abs(outputs["numpy"] - outputs["torch"]).max() < 1e-4 * np.abs(outputs["torch"]).max()
    # And .npz weights on the torch backend.
    net.to_numpy(seed=2).save(tmp_path / "w.npz")
    code, _, err = run(str(tiny), "--backend", "torch", "--weights", str(tmp_path / "w.npz"))
    assert code == 0, err


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3, 8, 9), np.float32), "expects Nx3x8x8"),
        (np.zeros((2, 3, 8, 8), np.complex64), "dtype complex64"),
        (np.zeros((2, 3, 8, 8), bool), "dtype bool"),
    ],
)
def test_mismatched_input_files_are_clear_errors(tiny: Path, tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "x.npy", array)
    code, _, err = run(str(tiny), "--input", str(tmp_path / "x.npy"))
    assert code == 1
    assert message in err and "Traceback" not in err


def test_batch_disagreeing_with_the_file_is_an_error(tiny: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    code, _, err = run(str(tiny), "--input", str(tmp_path / "x.npy"), "--batch", "3")
    assert code == 1 and "--batch says 3" in err


def test_mismatched_weight_files_name_the_keys(tiny: Path, tmp_path: Path) -> None:
    state = cnndsl.load(tiny).to_numpy().state_dict()
    state.pop("conv.weight")
    state["fc.weight"] = np.zeros((7, 4), np.float32)
    state["junk"] = np.zeros(1)
    np.savez(tmp_path / "w.npz", **state)
    for backend in ["numpy"] + (["torch"] if _has_torch() else []):
        code, _, err = run(str(tiny), "--backend", backend, "--weights", str(tmp_path / "w.npz"))
        assert code == 1
        assert "missing keys: conv.weight" in err and "unexpected keys: junk" in err and "fc.weight is 7x4, expected 6x4" in err


def test_unreadable_files_are_clear_errors(tiny: Path, tmp_path: Path) -> None:
    code, _, err = run(str(tiny), "--input", str(tmp_path / "none.npy"))
    assert code == 1 and "cannot read the input" in err
    code, _, err = run(str(tiny), "--weights", str(tmp_path / "w.bin"))
    assert code == 1 and "unknown weights file type" in err
    (tmp_path / "bad.npz").write_bytes(b"junk")
    code, _, err = run(str(tiny), "--weights", str(tmp_path / "bad.npz"))
    assert code == 1 and "not a readable .npz weights file" in err


def test_run_through_a_real_process(tiny: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cnndsl", "run", str(tiny), "--batch", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "output 2x6" in done.stdout


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
