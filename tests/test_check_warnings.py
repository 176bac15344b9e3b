"""`cnndsl check` warnings for the first hour's mistakes: a final Softmax, a channels-last input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cnndsl


def check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnndsl", "check", str(path), *args], capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.cnn"
    path.write_text(text)
    return path


def test_final_softmax_warns_at_that_layer(tmp_path: Path) -> None:
    path = write(tmp_path, "input 3x8x8\nConv(4, 3), flatten, FC(10), Softmax\n")
    done = check(path)
    assert done.returncode == 0
    assert (
        f"{path}:2:30: warning: the network ends in Softmax: cross-entropy expects logits; "
        "remove the final Softmax for training" in done.stderr
    )


def test_final_sigmoid_warns_but_an_inner_one_does_not() -> None:
    (warning,) = cnndsl.parse("input 8\nFC(4), Sigmoid").warnings
    assert "ends in Sigmoid" in warning.message and warning.position == (2, 8)
    assert cnndsl.parse("input 4x8x8\nMul[ | GlobalAvgPool, Conv(4, 1), Sigmoid ], flatten, FC(3)").warnings == []


def test_channels_last_input_line_warns_with_the_fix(tmp_path: Path) -> None:
    done = check(write(tmp_path, "input 224x224x3\nConv(8, 3, stride=2, pad=1)\n"))
    assert done.returncode == 0
    assert "1:7: warning: input 224x224x3 looks channels-last; cnndsl takes CxHxW: did you mean 3x224x224?" in done.stderr


def test_channels_last_input_option_warns(tmp_path: Path) -> None:
    done = check(write(tmp_path, "input 3x32x32\nConv(8, 3, pad=1)\n"), "--input", "28x28x1")
    assert "warning: --input 28x28x1 looks channels-last; cnndsl takes CxHxW: did you mean 1x28x28?" in done.stderr


def test_channels_first_inputs_do_not_warn() -> None:
    for shape in ("3x224x224", "1x28x28", "64x7x7", "4x4x4", "512x1x1"):
        assert cnndsl.parse(f"input {shape}\nIdentity").warnings == [], shape
