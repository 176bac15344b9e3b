"""`cnndsl layers` and `cnndsl zoo`: the registry and the shipped networks, as a user lists them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

import cnndsl
from cnndsl import zoo
from cnndsl.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None):
    if cwd is None:
        return CliRunner().invoke(main, list(args))
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        os.chdir(old)


def test_layers_lists_every_registered_kind_and_spelling() -> None:
    result = run("layers")
    assert result.exit_code == 0, result.output
    for name, kind in cnndsl.layers.KINDS.items():
        assert type(kind).signature_text() in result.output, name
        for alias in kind.aliases:
            assert alias in result.output, alias


def test_layers_json_is_the_registry() -> None:
    result = run("layers", "--json")
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == list(cnndsl.layers.KINDS)
    conv = next(row for row in rows if row["name"] == "Conv")
    assert conv["signature"].startswith("Conv(out, kernel") and "Conv2d" in conv["aliases"] and conv["description"]


def test_zoo_lists_every_shipped_network_with_its_parameters() -> None:
    result = run("zoo", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {p.stem for p in (ROOT / "architectures").glob("*.cnn")}
    assert rows["resnet50"]["params"] == 25_557_032 and rows["resnet50"]["input"] == "3x224x224"
    assert all(row["description"] for row in rows.values())
    text = run("zoo").output
    assert "resnet18" in text and "11,689,512" in text


def test_a_zoo_name_checks_from_any_folder(tmp_path: Path) -> None:
    result = run("check", "resnet18", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert cnndsl.load("resnet18").params == 11_689_512
    assert cnndsl.load("resnet18.cnn").params == 11_689_512


def test_a_path_that_exists_wins_over_a_zoo_name(tmp_path: Path) -> None:
    (tmp_path / "resnet18").write_text("input 3x8x8\nConv(4, 3)")
    result = run("check", "resnet18", "--json", cwd=tmp_path)
    assert json.loads(result.output)["params"] == 112
    assert zoo.find(str(tmp_path / "resnet18")) is None


def test_an_unknown_name_suggests_the_zoo(tmp_path: Path) -> None:
    result = run("check", "resnet5", cwd=tmp_path)
    assert result.exit_code == 1
    assert "did you mean the zoo network `resnet50`?" in result.output and "cnndsl zoo" in result.output
    try:
        cnndsl.load(tmp_path / "vgg")
    except cnndsl.CnnDslError as err:
        assert "`cnndsl zoo`" in (err.diagnostics[0].hint or "")
    else:
        raise AssertionError("loading a missing file must fail")


def test_zoo_names_are_never_paths() -> None:
    assert zoo.find("../architectures/resnet18") is None
    assert zoo.find("/etc/passwd") is None
