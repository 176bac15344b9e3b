"""The wheel ships the grammar and the zoo, and an installed (non-editable) package finds both."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("cnndsl-*.whl")
    return path


def test_wheel_contains_the_grammar(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "cnndsl/grammars/cnn.lark" in names
    assert "cnndsl/architectures/resnet50.cnn" in names
    assert len([n for n in names if n.startswith("cnndsl/architectures/") and n.endswith(".cnn")]) == len(
        list((ROOT / "architectures").glob("*.cnn"))
    )
    assert "cnndsl/checker/expansion.py" in names
    assert any(name.endswith("entry_points.txt") for name in names)


def test_installed_wheel_checks_a_network(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import cnndsl, pathlib, sys\n"
        "assert pathlib.Path(cnndsl.__file__).parent.parent == pathlib.Path(sys.argv[1]), cnndsl.__file__\n"
        "net = cnndsl.parse('input 3x32x32\\nConv(10, 5)')\n"
        "assert net.params == 760, net.params\n"
        "assert cnndsl.load('resnet50').params == 25_557_032\n"
        "from cnndsl import zoo\n"
        "assert zoo.zoo_dir().is_relative_to(pathlib.Path(sys.argv[1])), zoo.zoo_dir()\n"
    )
    # Run from an empty folder with only the installed package first on the path.
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for command in (["check", "resnet50", "-q"], ["zoo"]):
        done = subprocess.run(
            [sys.executable, "-m", "cnndsl", *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    assert "resnet50" in done.stdout and "25,557,032" in done.stdout
