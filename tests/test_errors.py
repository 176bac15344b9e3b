"""The one error factory (cnndsl.errors.error) and the one "needs PyTorch" error, at every place that needs torch."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnndsl
from cnndsl import CnnDslError
from cnndsl.compiler import export_onnx, module_weights
from cnndsl.errors import Position, error
from cnndsl.network import Network
from cnndsl.run import run_network
from cnndsl.train.trainer import make_engine
from cnndsl.weights import read_weights

SOURCE = "input 3x8x8\nConv(4, 3)\nflatten\nFC(2)\n"


@pytest.fixture
def net() -> Network:
    return cnndsl.parse(SOURCE, "net.cnn")


def test_an_error_about_a_file_or_option_names_it() -> None:
    [diagnostic] = error("no such class", "list the classes", "--data").diagnostics
    assert diagnostic.format() == "--data: error: no such class\nhint: list the classes"


def test_an_error_about_a_network_quotes_its_line(net: Network) -> None:
    err = error("too large", "use fewer channels", net, Position(2, 1))
    assert err.format() == "net.cnn:2:1: error: too large\n    Conv(4, 3)\n    ^\nhint: use fewer channels"


def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import torch` fail as it does where torch is not installed (and forget modules that imported it)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "cnndsl.train.torch_engine", raising=False)


def _some_file(path: Path) -> Path:
    path.write_bytes(b"weights")
    return path


TORCH_USES: dict[str, tuple[Callable[[Network, Any], object], str]] = {
    "to_torch": (lambda net, tmp: net.to_torch(), "the torch target"),
    "compile --weights-out": (lambda net, tmp: module_weights(net, 0, None), "writing the weights"),
    "compile --target onnx": (lambda net, tmp: export_onnx(net), "the onnx target"),
    "run --weights w.pt": (lambda net, tmp: read_weights(_some_file(tmp / "w.pt")), "reading {tmp}/w.pt"),
    "run --backend torch": (
        lambda net, tmp: run_network(net, "torch", np.zeros((1, 3, 8, 8), np.float32)),
        "the torch backend",
    ),
    "train --backend torch": (
        lambda net, tmp: make_engine(net, types.SimpleNamespace(backend="torch"), None, None),  # type: ignore[arg-type]
        "training with the torch backend",
    ),
}


@pytest.mark.parametrize("use", sorted(TORCH_USES))
def test_every_use_of_torch_says_the_same_when_it_is_missing(
    use: str, net: Network, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, what = TORCH_USES[use]
    without_torch(monkeypatch)
    with pytest.raises(CnnDslError) as info:
        run(net, tmp_path)
    [diagnostic] = info.value.diagnostics
    assert diagnostic.message == f"{what.format(tmp=tmp_path)} needs PyTorch, which is not installed"
    assert diagnostic.hint is not None and diagnostic.hint.startswith("pip install 'cnndsl[torch]'")
