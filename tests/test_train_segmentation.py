"""`cnndsl train` on per-pixel labels: masks in .npz files and the synthetic-seg source, per-pixel
cross-entropy equal in both engines, pixel accuracy and mean IoU, and clear errors for masks
that do not fit the network.

Sized for two shared CPU cores: fully-convolutional networks of a few thousand parameters on
16x16 images, a few epochs, one thread; and the zoo's U-Net at an eighth of its width.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy_reference import require_torch, twins

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import CnnDslError
from cnndsl.numpy_backend import cross_entropy
from cnndsl.train import TrainConfig, load_any, train
from cnndsl.train.checkpoint import checkpoint_path
from cnndsl.train.data import check_fit, load_source, random_split
from cnndsl.train.metrics import first_output, iou_per_class, mean_iou

# Keeps H x W: the mask is the output's size.
FCN = """network Seg(num_classes=3)
input 3x16x16
[Conv(8, 3, pad=1), BN, ReLU] x 2, Conv(num_classes, 1)
"""
# Halves H x W, then a dilated stack: masks must be 8x8.
POOLED_FCN = """network PooledSeg(num_classes=3)
input 3x16x16
Conv(8, 3, pad=1), BN, ReLU, MaxPool(2), Conv(8, 3, pad=2, dilation=2), BN, ReLU, Conv(num_classes, 1)
"""


def quick(**kwargs: object) -> TrainConfig:
    settings: dict[str, object] = {"data": "synthetic-seg:384", "progress": False, "threads": 1, "epochs": 4, "batch_size": 16}
    settings.update(kwargs)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def chance_mean_iou(masks: np.ndarray, classes: int) -> float:
    """The better of two guesses that ignore the image: every pixel the most frequent class, or each pixel
    drawn at random with the classes' frequencies (expected IoU of class k: p_k^2 / (2 p_k - p_k^2) = p_k / (2 - p_k))."""
    shares = np.bincount(masks.ravel(), minlength=classes) / masks.size
    present = shares > 0
    majority = float(shares.max()) / int(present.sum())  # IoU of the majority class is its share; the others 0
    proportional = float(np.mean(shares[present] / (2 - shares[present])))
    return max(majority, proportional)


# ---------------------------------------------------------------- per-pixel cross-entropy


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 7), (2, 3, 5, 6)])
def test_cross_entropy_over_positions_equals_torch_in_float64(shape: tuple[int, ...]) -> None:
    torch = require_torch()
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal(shape)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    loss, grad = cross_entropy(logits, labels)
    reference = torch.from_numpy(logits).requires_grad_(True)
    expected = torch.nn.functional.cross_entropy(reference, torch.from_numpy(labels))
    expected.backward()
    assert grad.dtype == np.float64 and grad.shape == logits.shape
    assert abs(loss - expected.item()) <= 1e-12 * abs(loss)
    assert np.abs(grad - reference.grad.numpy()).max() <= 1e-15 + 1e-12 * np.abs(grad).max()


def test_whole_network_per_pixel_gradients_equal_torch_in_float64() -> None:
    torch = require_torch()
    net = cnndsl.parse(POOLED_FCN)
    module, model, keys = twins(net, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 16, 16))
    masks = rng.integers(0, 3, (3, 8, 8))
    loss, grads = model.loss_and_grads(x, masks)
    module.train()
    expected = torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(masks))
    expected.backward()
    assert abs(loss - expected.item()) <= 1e-10 * abs(loss)
    for name, param in module.named_parameters():
        reference = param.grad.numpy()
        assert np.abs(grads[keys[name]] - reference).max() <= 1e-9 * np.abs(reference).max() + 1e-12, name


def test_cross_entropy_wants_one_label_per_position() -> None:
    logits = np.zeros((2, 3, 4, 4))
    with pytest.raises(CnnDslError, match=r"labels must have shape \(2, 4, 4\), one class index per sample and output position"):
        cross_entropy(logits, np.zeros(2, np.int64))
    with pytest.raises(CnnDslError, match=r"labels must lie in 0..2; got 3..3"):
        cross_entropy(logits, np.full((2, 4, 4), 3))
    with pytest.raises(CnnDslError, match="a score per class"):
        cross_entropy(np.zeros(3), np.zeros(3, np.int64))


# ---------------------------------------------------------------- metrics and several outputs


def test_iou_counts_classes_present_in_the_target_or_the_prediction() -> None:
    # rows true, columns predicted: class 0 4 hits, 1 false positive (a 1 taken for 0), 2 false negatives;
    # class 1: 1 hit; class 2 predicted once, never true; class 3 absent from both.
    confusion = np.array([[4, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert iou_per_class(confusion) == [4 / 7, 1 / 3, 0.0, None]
    assert mean_iou(confusion) == pytest.approx((4 / 7 + 1 / 3 + 0.0) / 3)
    assert mean_iou(np.eye(3, dtype=np.int64) * 5) == 1.0
    assert mean_iou(np.zeros((2, 2), np.int64)) == 0.0


def test_the_first_of_several_outputs_goes_to_the_loss() -> None:
    torch = require_torch()

    class TwoHeads(torch.nn.Module):
        """Stands for a network with an `output a, b` line: the module returns a tuple."""

        def __init__(self) -> None:
            super().__init__()
            self.main = torch.nn.Conv2d(3, 2, 1)
            self.aux = torch.nn.Conv2d(3, 5, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.main(x), self.aux(x)

    module = TwoHeads()
    x = torch.zeros(1, 3, 4, 4)
    assert first_output(module(x)) is not None and first_output(module(x)).shape == (1, 2, 4, 4)
    single = torch.ones(2, 3)
    assert first_output(single) is single
    assert first_output([np.zeros(1), np.ones(2)]).shape == (1,)
    with pytest.raises(ValueError, match="no outputs"):
        first_output(())


# ---------------------------------------------------------------- training reaches well above chance


def small_unet() -> cnndsl.Network:
    """The zoo's U-Net (architectures/unet.cnn, skips and transposed convolutions) at an eighth of its width on 16x16
    images, its bottom level 1x1, for three classes: 486,571 parameters."""
    return cnndsl.load("unet", "3x16x16", base=8, num_classes=3)


@pytest.mark.parametrize(
    ("backend", "network"),
    [
        ("torch", lambda: cnndsl.parse(FCN)),
        ("numpy", lambda: cnndsl.parse(FCN)),
        ("torch", lambda: cnndsl.parse(POOLED_FCN)),
        ("torch", small_unet),
        ("numpy", small_unet),
    ],
    ids=["torch", "numpy", "pooled", "unet-torch", "unet-numpy"],
)
def test_trains_on_synthetic_masks_well_above_chance(tmp_path: Path, backend: str, network: Callable[[], cnndsl.Network]) -> None:
    net = network()
    metrics = train(net, quick(backend=backend, metrics_json=tmp_path / "m.json"))
    dataset = load_source("synthetic-seg:384", net.input_shape, 3, 0, tuple(net.output_shape))
    chance = chance_mean_iou(dataset.y_test, 3)
    assert 0.2 < chance < 0.4  # mostly background, two shape classes
    assert metrics["task"] == "segmentation"
    assert metrics["mean_iou"] > max(0.6, chance + 0.3), (metrics["mean_iou"], chance)
    assert metrics["test_accuracy"] > 0.85
    assert metrics["test_samples"] == len(dataset.x_test) == 76
    assert metrics["test_pixels"] == sum(map(sum, metrics["confusion_matrix"])) == 76 * int(np.prod(dataset.mask_shape))
    assert len(metrics["iou_per_class"]) == 3 and metrics["mean_iou"] == pytest.approx(
        np.mean([v for v in metrics["iou_per_class"] if v is not None])
    )
    assert [r["test_mean_iou"] for r in metrics["history"]][-1] == metrics["mean_iou"]
    assert metrics["history"][-1]["test_loss"] < metrics["history"][0]["test_loss"]
    assert json.loads((tmp_path / "m.json").read_text())["mean_iou"] == metrics["mean_iou"]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_masks_on_the_gpu_with_mixed_precision_and_channels_last(amp: str) -> None:
    torch = require_torch()
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    metrics = train(cnndsl.parse(FCN), quick(device="cuda", amp=amp, channels_last=True))
    assert metrics["mean_iou"] > 0.6 and metrics["device"] != "cpu"


def test_bf16_and_channels_last_on_the_cpu() -> None:
    metrics = train(cnndsl.parse(FCN), quick(device="cpu", amp="bf16", channels_last=True))
    assert metrics["mean_iou"] > 0.6


def test_synthetic_masks_follow_the_output_size_and_match_the_images() -> None:
    net = cnndsl.parse(POOLED_FCN)
    dataset = load_source("synthetic-seg:40", net.input_shape, 3, 0, tuple(net.output_shape))
    assert dataset.segmentation and dataset.mask_shape == (8, 8) and dataset.sample_shape == (3, 16, 16)
    assert dataset.y_train.dtype == np.int64 and set(np.unique(dataset.y_train)) == {0, 1, 2}
    # Brightness rises with the class: the mean over each 2x2 block follows its mask's class.
    brightness = dataset.x_train.mean(axis=1).reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4))
    means = [brightness[dataset.y_train == k].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]
    again = load_source("synthetic-seg:40", net.input_shape, 3, 0, tuple(net.output_shape))
    assert np.array_equal(again.y_train, dataset.y_train) and np.array_equal(again.x_test, dataset.x_test)


def test_cli_reports_mean_iou_each_epoch_and_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "seg.cnn").write_text(FCN)
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(tmp_path / "seg.cnn"),
            "--data",
            "synthetic-seg:64",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--backend",
            "numpy",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 classes per pixel (masks 16x16)" in result.output
    assert "mIoU " in result.output and "test mean IoU " in result.output and "pixels of 12 images" in result.output
    assert "IoU per class: 0 " in result.output and "confusion matrix of pixels" in result.output


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_resume_repeats_the_uninterrupted_segmentation_run(tmp_path: Path, backend: str) -> None:
    net = cnndsl.parse(FCN)
    settings = {"backend": backend, "data": "synthetic-seg:48", "epochs": 2, "seed": 3}
    whole = train(net, quick(**settings, checkpoint_dir=tmp_path / "whole"))
    train(net, quick(**{**settings, "epochs": 1}, checkpoint_dir=tmp_path / "parts"))
    resumed = train(net, quick(**settings, checkpoint_dir=tmp_path / "parts", resume=True))
    strip = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in strip} for r in resumed["history"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in whole["history"]
    ]
    assert resumed["mean_iou"] == whole["mean_iou"] and resumed["confusion_matrix"] == whole["confusion_matrix"]
    assert load_any(checkpoint_path(tmp_path / "parts", backend))["epoch"] == 2


# ---------------------------------------------------------------- masks in .npz files


def masks_file(path: Path, x: np.ndarray | None = None, y: object = None, **extra: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((10, 3, 16, 16)).astype(np.float32) if x is None else x
    masks = rng.integers(0, 3, (10, 16, 16)) if y is None else y
    np.savez(path, x=images, y=masks, **extra)
    return str(path)


def test_npz_masks_train_with_a_plain_seeded_split(tmp_path: Path) -> None:
    data = masks_file(tmp_path / "masks.npz", y=np.random.default_rng(0).integers(0, 2, (10, 16, 16)).astype(np.uint8))
    dataset = load_source(data, cnndsl.Shape((3, 16, 16)), 3)
    assert dataset.segmentation and len(dataset.x_train) == 8 and len(dataset.x_test) == 2
    assert dataset.class_names == ["0", "1", "2"]  # the network's channels, though no mask holds class 2
    train_idx, test_idx = random_split(10)
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(10)) and len(test_idx) == 2
    metrics = train(cnndsl.parse(FCN), quick(data=data, epochs=1))
    assert metrics["test_samples"] == 2 and metrics["test_pixels"] == 2 * 256
    # Channels-last images and a test split of their own are read as for labels.
    rng = np.random.default_rng(1)
    own = masks_file(
        tmp_path / "own.npz",
        x=rng.standard_normal((6, 16, 16, 3)),
        x_test=rng.standard_normal((3, 16, 16, 3)),
        y_test=rng.integers(0, 3, (3, 16, 16)),
        y=rng.integers(0, 3, (6, 16, 16)),
    )
    dataset = load_source(own, cnndsl.Shape((3, 16, 16)), 3)
    assert dataset.x_train.shape == (6, 3, 16, 16) and dataset.y_test.shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("masks", "message", "hint"),
    [
        (
            np.full((10, 16, 16), 3),
            "has a pixel of class 3",
            "outputs 3 channels (one score per class and pixel): classes are 0..2",
        ),
        (np.full((10, 16, 16), -1), "class indices 0..K-1; the smallest is -1", "integer class indices, one per pixel"),
        (np.full((10, 16, 16), 0.5), "must be integer class indices; got dtype float64", "N x H x W"),
        (np.full((10, 16, 16), "a"), "must be integer class indices; got dtype <U1", "N x H x W"),
        (np.zeros((10, 1, 16, 16), np.int64), "with a channel axis", "y=y[:, 0]"),
        (np.zeros((10, 2, 16, 16, 1), np.int64), "one per pixel (N x H x W masks); got shape 10x2x16x16x1", "N x H x W"),
        (np.zeros((10, 1), np.int64), "one label per sample (N) or one per pixel", "save y.reshape(-1)"),
    ],
)
def test_bad_masks_are_refused_with_a_hint(tmp_path: Path, masks: np.ndarray, message: str, hint: str) -> None:
    data = masks_file(tmp_path / "bad.npz", y=masks)
    with pytest.raises(CnnDslError) as caught:
        load_source(data, cnndsl.Shape((3, 16, 16)), 3)
    text = str(caught.value) + "".join(d.hint or "" for d in caught.value.diagnostics)
    assert message in text and hint in text, text


def fit_error(tmp_path: Path, network: str, masks: np.ndarray, **extra: np.ndarray) -> str:
    net = cnndsl.parse(network)
    data = masks_file(tmp_path / "fit.npz", y=masks, **extra)
    result = CliRunner().invoke(main, ["train", _write(tmp_path, network), "--data", data, "--threads", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    with pytest.raises(CnnDslError):
        dataset = load_source(data, net.input_shape, int(net.output_shape[0]), 0, tuple(net.output_shape))
        check_fit(dataset, net.input_shape, net.output_shape, net.parameters, data)
    return result.output


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "net.cnn"
    path.write_text(text)
    return str(path)


def test_masks_that_do_not_fit_the_network_are_clear_errors(tmp_path: Path) -> None:
    masks = np.zeros((10, 16, 16), np.int64)
    output = fit_error(tmp_path, POOLED_FCN, masks)
    assert "the network outputs 3x8x8 (8x8 per class), but the masks of" in output and "are 16x16" in output
    assert "give masks of the network's output size" in output
    classifier = "network C(num_classes=3)\ninput 3x16x16\nConv(4, 3), ReLU, flatten, FC(num_classes)\n"
    output = fit_error(tmp_path, classifier, masks)
    assert "has per-pixel masks (16x16), but the network outputs 3 per sample" in output
    assert "end the network with Conv(classes, 1)" in output
    output = fit_error(tmp_path, FCN, masks, x_test=np.zeros((2, 3, 16, 16), np.float32), y_test=np.zeros((2, 8, 8), np.int64))
    assert "test masks are 8x8, training masks 16x16" in output
    output = fit_error(tmp_path, FCN, masks, x_test=np.zeros((2, 3, 16, 16), np.float32), y_test=np.zeros(2, np.int64))
    assert "must both be labels (one per sample) or both masks" in output


def test_one_label_per_image_on_a_per_pixel_network_points_to_masks(tmp_path: Path) -> None:
    output = fit_error(tmp_path, FCN, np.arange(10) % 3)
    assert "training needs one score per class, but the network outputs 3x16x16 per sample" in output
    assert "give masks: `y` of N x H x W class indices" in output
    result = CliRunner().invoke(main, ["train", _write(tmp_path, FCN), "--data", "synthetic:32"])
    assert result.exit_code == 1 and "use --data synthetic-seg[:N]" in result.output
    classifier = _write(tmp_path, "input 3x16x16\nConv(4, 3), flatten, FC(3)\n")
    result = CliRunner().invoke(main, ["train", classifier, "--data", "synthetic-seg:32"])
    assert result.exit_code == 1 and "synthetic-seg makes per-pixel labels" in result.output
