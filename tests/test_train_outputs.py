"""What `cnndsl train` shows and leaves behind (issue 16 items 2, 4 and 12): `--save`, a final
Softmax left out of training (a final Sigmoid refused), the run header and the progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import CnnDslError
from cnndsl.train import TrainConfig, train
from cnndsl.train.report import EpochProgress, Reporter, metrics_text
from cnndsl.weights import Preprocess, read_weights

ROOT = Path(__file__).resolve().parent.parent
DIGITS_CNN = ROOT / "architectures" / "digits_cnn.cnn"


def quick(**kwargs: object) -> TrainConfig:
    settings: dict[str, object] = {"data": "digits", "progress": False, "threads": 1}
    settings.update(kwargs)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def with_head(head: str) -> cnndsl.Network:
    """digits_cnn with `head` after its last FC, inside the labelled classifier group (so the tree must be rebuilt)."""
    text = DIGITS_CNN.read_text().replace("FC(num_classes)]", f"FC(num_classes), {head}]")
    assert head in text
    return cnndsl.parse(text, "digits_head.cnn")


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_final_softmax_is_left_out_of_training(backend: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # With the Softmax trained through, cross-entropy saw probabilities as logits: 48% instead of 97%.
    network = with_head("Softmax")
    if backend == "torch":
        pytest.importorskip("torch")
    metrics = train(network, quick(backend=backend, epochs=8 if backend == "torch" else 5, save=tmp_path / "w.safetensors"))
    assert metrics["test_accuracy"] >= 0.95, metrics["history"]
    err = capsys.readouterr().err
    assert "ends in Softmax (`classifier.softmax`)" in err and "training without the final Softmax" in err
    # The saved weights run with the network as written: its Softmax gives probabilities.
    probabilities = network.to_numpy(tmp_path / "w.safetensors")(np.zeros((2, 1, 8, 8)))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [layer.kind.name for layer in network.layers][-1] == "Softmax"  # the caller's network is untouched


def test_a_final_log_softmax_is_trained_through_as_nll(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Cross-entropy on log-probabilities is their negative log-likelihood (log_softmax is idempotent): a final
    LogSoftmax stays in training, without a note or a warning, and trains as well as logits do."""
    network = with_head("LogSoftmax")
    assert network.warnings == []
    metrics = train(network, quick(backend="numpy", epochs=5, save=tmp_path / "w.npz"))
    assert metrics["test_accuracy"] >= 0.95, metrics["history"]
    assert "LogSoftmax" not in capsys.readouterr().err
    log_probabilities = network.to_numpy(tmp_path / "w.npz")(np.zeros((2, 1, 8, 8)))
    np.testing.assert_allclose(np.exp(log_probabilities).sum(axis=1), 1.0, rtol=1e-5)


def test_a_final_sigmoid_is_refused_at_its_line() -> None:
    with pytest.raises(CnnDslError) as caught:
        train(with_head("Sigmoid"), quick(backend="numpy", epochs=1))
    diagnostic = caught.value.diagnostics[0]
    assert "ends in Sigmoid" in diagnostic.message and diagnostic.position is not None
    assert "Sigmoid" in (diagnostic.source_line or "") and "remove the final Sigmoid" in (diagnostic.hint or "")


def test_save_writes_weights_with_the_preprocessing_in_source_units(tmp_path: Path) -> None:
    metrics = train(cnndsl.load(DIGITS_CNN), quick(backend="numpy", epochs=1, save=tmp_path / "w.npz"))
    weights = read_weights(tmp_path / "w.npz")
    expected = Preprocess.from_standardisation(metrics["normalization"]["mean"], metrics["normalization"]["std"], 1 / 16)
    assert weights.preprocess == expected and metrics["preprocess"] == expected.to_json()
    assert 0 < expected.mean[0] < 16 and expected.std[0] > 1  # digits' grey levels are 0..16
    assert set(weights.state_dict) == set(cnndsl.load(DIGITS_CNN).to_numpy().state_dict())  # no optimiser state


def test_save_refuses_unknown_suffixes_and_the_input(tmp_path: Path) -> None:
    with pytest.raises(CnnDslError, match="cannot tell the weights format"):
        quick(save=tmp_path / "w.bin")
    source = tmp_path / "net.safetensors"  # an odd name for a network file, but it must never be overwritten
    source.write_text(DIGITS_CNN.read_text())
    result = CliRunner().invoke(main, ["train", str(source), "--data", "digits", "--save", str(source), "--backend", "numpy"])
    assert result.exit_code == 1 and "would overwrite the input" in result.stderr
    assert source.read_text() == DIGITS_CNN.read_text()


def test_the_header_names_mixed_precision(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    train(cnndsl.load(DIGITS_CNN), quick(epochs=1, amp="bf16"))
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("training DigitsCNN") and header.endswith("torch on cpu, amp bf16")


class FakeProgress:
    def __init__(self) -> None:
        self.fields: dict[str, object] = {}

    def update(self, task: object, advance: int = 0, **fields: object) -> None:
        self.fields.update(fields)


def test_the_progress_bar_shows_no_loss_before_the_first_batch() -> None:
    assert metrics_text(None, None, None) == "loss -  acc -  - img/s"
    tracker = EpochProgress(progress=FakeProgress(), task=0, start=0.0)
    tracker.update(64)  # a step that reports no loss (the torch engine reads it every 10 steps)
    assert "loss -" in str(tracker.progress.fields["metrics"]) and "nan" not in str(tracker.progress.fields["metrics"])
    tracker.update(64, 0.5, 0.75)
    tracker.update(64)  # keeps the last figures
    assert str(tracker.progress.fields["metrics"]).startswith("loss 0.5000  acc 0.750  ")


def test_the_bar_as_rich_draws_it_before_any_batch() -> None:
    import io

    from rich.console import Console

    reporter = Reporter()
    buffer = io.StringIO()
    reporter._err = Console(file=buffer, force_terminal=True, width=120)
    reporter.show_progress = True
    with reporter.epoch(1, 3, 10) as tracker:
        tracker.progress.refresh()
        tracker.update(0)
    drawn = buffer.getvalue()
    assert "loss -" in drawn and "nan" not in drawn


# ---------------------------------------------------------------- several outputs: the loss trains the first

TWO_OUTPUTS = (
    "input 1x8x8\noutput logits, aux\nfeatures: [Conv(8, 3, pad=1), ReLU]\naux: Conv(2, 1)\n"
    "@features, MaxPool(2), flatten\nlogits: FC(10)\n"
)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_network_with_two_outputs_trains_its_first(backend: str) -> None:
    metrics = train(cnndsl.parse(TWO_OUTPUTS, "two.cnn"), quick(backend=backend, epochs=3))
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[-1] < 0.5 * losses[0] and metrics["test_accuracy"] > 0.8, losses


def test_both_engines_take_the_same_step_on_the_first_output() -> None:
    # The same weights and batch: the torch engine's loss (the first output's cross-entropy, the other at
    # weight 0) and the NumPy engine's backward (a gradient for the first output only) give equal gradients,
    # zero for the layer only the second output reads.
    torch = pytest.importorskip("torch")
    from cnndsl.numpy_backend import cross_entropy

    network = cnndsl.parse(TWO_OUTPUTS, "two.cnn")
    module = network.to_torch().double()
    model = network.to_numpy(dtype=np.float64)
    model.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, 4)
    logits, aux = module(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)) + 0.0 * aux.sum()
    loss.backward()
    outputs = model.forward(x, train=True, grad=True)
    value, dlogits = cross_entropy(outputs[0], y, "two.cnn")
    _, grads = model.backward([dlogits, None], input_grad=False)
    assert value == pytest.approx(loss.item())
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None
        np.testing.assert_allclose(grads[name], parameter.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    assert not grads["aux.weight"].any() and grads["features.conv.weight"].any()


def test_a_first_output_that_ends_in_softmax_is_refused_at_its_name() -> None:
    source = "input 1x8x8\noutput p, f\nf: Conv(4, 3, pad=1)\nflatten, FC(10)\np: Softmax\n"
    with pytest.raises(CnnDslError, match=r"the loss trains the first output, `@p`, which ends in Softmax") as caught:
        train(cnndsl.parse(source, "softmax_first.cnn"), quick(epochs=1))
    assert "softmax_first.cnn:2:8" in str(caught.value)
