"""The repository stands on its own: no tracked file reads or links what lies beside the clone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Spelt in pieces so that this file does not match itself.
FORBIDDEN = ("../" + "shared", "/" + "work/", "/" + "root/", "/" + "home/")


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an unpacked sdist): nothing is tracked to inspect")
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_tracked_file_names_the_folder_beside_the_clone_or_a_machine_path() -> None:
    offenders = []
    for path in tracked_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary figures
        offenders += [f"{path.relative_to(ROOT)}: {needle}" for needle in FORBIDDEN if needle in text]
    assert not offenders, offenders
