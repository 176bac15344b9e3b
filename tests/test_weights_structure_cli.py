"""Weights by structure through the commands and ONNX: compile --weights-from/--weights-layout/--opset, run, train --init-from/--freeze."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_weights_match import SOURCE, foreign_layout, randomised

import cnndsl
from cnndsl.cli import main
from cnndsl.weights import read_weights


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The test network's file and a checkpoint of it in a foreign layout (.pt, keys in module order)."""
    network_file = tmp_path / "twin.cnn"
    network_file.write_text(SOURCE)
    own = randomised(cnndsl.parse(SOURCE), 5)
    checkpoint = tmp_path / "foreign.pt"
    torch.save({k: torch.from_numpy(v) for k, v in foreign_layout(own).items()}, checkpoint)
    return {"cnn": network_file, "pt": checkpoint, "dir": tmp_path}


def invoke(*arguments: str) -> str:
    result = CliRunner().invoke(main, list(arguments), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_onnx_with_foreign_weights_names_initializers_by_state_dict_keys(files: dict[str, Path]) -> None:
    import onnx
    from onnx.reference import ReferenceEvaluator

    out = files["dir"] / "model.onnx"
    invoke("compile", str(files["cnn"]), "--target", "onnx", "--weights-from", str(files["pt"]), "--opset", "17", "-o", str(out))
    model = onnx.load(out)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    module = cnndsl.parse(SOURCE).to_torch(weights=files["pt"]).eval()
    state = module.state_dict()
    names = {i.name for i in model.graph.initializer}
    assert names <= set(state)
    assert {k for k in state if not k.endswith("num_batches_tracked")} <= names
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    (onnx_out,) = ReferenceEvaluator(model).run(None, {"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, module(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_compile_reports_and_writes_safetensors_in_either_layout(files: dict[str, Path]) -> None:
    plain, twin = files["dir"] / "plain", files["dir"] / "twin_layout.pt"
    result = CliRunner().invoke(
        main,
        [
            "compile",
            str(files["cnn"]),
            "-o",
            str(files["dir"] / "m.py"),
            "--weights",
            str(files["pt"]),
            "--weights-out",
            str(plain),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "matched by structure: 8 layers matched" in result.output
    assert plain.read_bytes()[8:9] == b"{"  # safetensors: an 8-byte header length, then its JSON
    assert set(read_weights(plain).state_dict) == set(cnndsl.parse(SOURCE).to_torch().state_dict())
    invoke(
        "compile", str(files["cnn"]), "-o", str(files["dir"] / "m2.py"), "--weights-from", str(files["pt"]),
        "--weights-out", str(twin), "--weights-layout", str(files["pt"]),
    )  # fmt: skip
    original = torch.load(files["pt"], weights_only=True)
    exported = torch.load(twin, weights_only=True)
    assert list(exported) == list(original) and all(torch.equal(exported[k], original[k]) for k in original)


def test_compile_refuses_a_disagreeing_checkpoint_naming_both_layers(files: dict[str, Path]) -> None:
    bad = files["dir"] / "bad.pt"
    state = torch.load(files["pt"], weights_only=True)
    state["block.conv_b.weight"] = torch.zeros(6, 6, 5, 5)
    torch.save(state, bad)
    result = CliRunner().invoke(main, ["compile", str(files["cnn"]), "--weights-from", str(bad)])
    assert result.exit_code == 1 and "our `add.0.conv2` (conv, weight 6x6x3x3) against their `block.conv_b`" in result.output
    assert "Traceback" not in result.output
    partial = CliRunner().invoke(main, ["compile", str(files["cnn"]), "--weights-from", str(bad), "--allow-partial"])
    assert partial.exit_code == 0 and "unmatched (initial weights): add.0.conv2" in partial.output


def test_run_takes_a_foreign_checkpoint(files: dict[str, Path]) -> None:
    output = invoke("run", str(files["cnn"]), "--weights", str(files["pt"]), "--backend", "torch")
    assert "8 layers matched, 0 re-initialised" in output and "output 1x5" in output


def test_train_init_from_reinitialises_the_head_and_freezes(files: dict[str, Path]) -> None:
    saved = files["dir"] / "tuned.safetensors"
    output = invoke(
        "train", str(files["cnn"]), "--data", "synthetic:40", "--epochs", "1", "--no-progress", "--set", "num_classes=2",
        "--init-from", str(files["pt"]), "--freeze", "stem", "--save", str(saved),
    )  # fmt: skip
    assert "7 layers matched, 1 re-initialised" in output and "re-initialised fc (was head" in output
    tuned = read_weights(saved).state_dict
    original = torch.load(files["pt"], weights_only=True)
    assert np.array_equal(tuned["stem.conv.weight"], original["conv1.weight"].numpy())  # frozen
    assert not np.array_equal(tuned["add.0.conv2.weight"], original["block.conv_b.weight"].numpy())  # trained
    assert tuned["fc.weight"].shape == (2, 6)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--backend", "numpy", "--freeze", "stem"], "--freeze needs the torch backend"),
        (["--weights-layout", "x.pt"], "--weights-layout says how --save names the weights"),
        (["--freeze", "nothing.here"], "--freeze nothing.here: no parameters under this path"),
    ],
)
def test_train_refuses_meaningless_weight_options(files: dict[str, Path], arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["train", str(files["cnn"]), "--data", "synthetic:40", "--epochs", "1", *arguments])
    assert result.exit_code == 1 and message in result.output, result.output
