"""The zoo against its real twins: torchvision's models (and a plain-PyTorch LeNet-5), weights in and out by structure.

For every zoo network with a model in tests/data/torchvision_ref.json or architectures_v2.json: the twin is built with
random weights and randomised BatchNorm parameters and statistics (nothing is downloaded),
its state_dict is saved, loaded into cnndsl by structure (cnndsl.weights_match), and the
outputs in eval mode are compared for the in-memory torch module, the generated file
(compiled with those weights) and the NumPy backend; the weights then go back in the twin's
layout and load into the twin with strict=True. Plus the acceptance scenario: ResNet-50
fine-tuned from a torchvision checkpoint with a new head, and YOLOv8 against Ultralytics' DetectionModel.

torchvision does not import beside the project's torch 2.13.0 CPU build, so these tests run
in their own environment (`bash scripts/twins.sh` makes it and prints its python;
scripts/test.sh runs them there). They are marked `twins`: the main suite runs with
`-m "not twins"`. Without torchvision they skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch_checks import compiled_with_weights, one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl
from cnndsl.weights import read_weights
from cnndsl.weights_match import to_layout

pytestmark = pytest.mark.twins

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = {
    **json.loads((ROOT / "tests" / "data" / "architectures_v2.json").read_text())["models"],
    **json.loads((ROOT / "tests" / "data" / "torchvision_ref.json").read_text())["models"],
}
SEGMENTATION: dict[str, dict[str, Any]] = {"fcn_resnet50": {"weights": None, "weights_backbone": None, "aux_loss": False}}
"""The zoo networks whose twin is a torchvision segmentation model (torchvision.models.segmentation),
built with nothing downloaded: no weights, no backbone weights. Its forward returns a dict; `out` is
the network's output (without the auxiliary head, as the zoo file)."""
ZOO_SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "efficientnet_b0": ("efficientnet", {}),
    "efficientnet_b3": ("efficientnet", {"width": 1.2, "depth": 1.4, "dropout": 0.3}),
    "efficientnet_b5": ("efficientnet", {"width": 1.6, "depth": 2.2, "dropout": 0.4, "bn_eps": 0.001, "bn_momentum": 0.01}),
    "mobilenet_v3_large_width_0_75": ("mobilenet_v3_large", {"width": 0.75}),
    "mobilenet_v3_small_width_0_5": ("mobilenet_v3_small", {"width": 0.5}),
}
"""Twins whose zoo file is not named after them: the file and its `--set` values (EfficientNet B0-B7 is one
file; MobileNetV3 at torchvision's width_mult 0.5, where Small's 40 -> 48 block gains its shortcut, and 0.75)."""
TWIN_BUILDERS = {"mobilenet_v3_large_width_0_75": "mobilenet_v3_large", "mobilenet_v3_small_width_0_5": "mobilenet_v3_small"}
"""The torchvision builder of the twins not named after one."""
TWINS = sorted(json.loads((ROOT / "tests" / "data" / "torchvision_ref.json").read_text())["models"]) + [
    "inception_v3",
    *SEGMENTATION,
]
"""The zoo networks whose twin is a torchvision classification or segmentation model (or the plain
LeNet-5 below); the other zoo networks' twins are plain PyTorch, in tests/test_zoo_twins.py."""
TWINS += sorted(set(ZOO_SETTINGS) - set(TWINS))  # and the other members of a zoo file, by --set
SMALL_SIDES = (32, 64, 96)
"""Input sides tried before the network's own: the smallest it accepts keeps the suite fast."""
SMALLEST_SIDE = {"fcn_resnet50": 64}
"""At 32x32 FCN's dilated layer4 sees a 4x4 map, where every tap of its dilation-4 kernels but the
centre falls in the padding: a wrong dilation would hide there. At 64x64 the maps are 8x8."""
RELATIVE = 1e-5
"""Largest difference allowed, relative to the largest output magnitude (float32)."""
TWIN_ARGUMENTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
    "mobilenet_v3_large_width_0_75": {"width_mult": 0.75},
    "mobilenet_v3_small_width_0_5": {"width_mult": 0.5},
}
"""The zoo's GoogLeNet and Inception-v3 are the inference networks, without the auxiliary training heads; MobileNetV3's
width_mult is the zoo file's `width`."""


@pytest.fixture(scope="module")
def torchvision() -> ModuleType:
    """torchvision, or a skip (a failure in CI: the twin tests must run there)."""
    try:
        import torchvision
    except ImportError as err:
        reason = (
            f"torchvision is not installed beside this torch ({err}); run the twins suite with `bash scripts/twins.sh`'s python"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return torchvision


class LeNet5(nn.Module):
    """LeNet-5 as plain PyTorch (tests/data/torchvision_ref.json's `lenet5`: torchvision has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(16, 120, 5)
        )
        self.classifier = nn.Sequential(nn.Tanh(), nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_twin(torchvision: ModuleType, name: str, **kwargs: Any) -> nn.Module:
    if name == "lenet5":
        return LeNet5()
    if name in SEGMENTATION:
        return getattr(torchvision.models.segmentation, name)(**SEGMENTATION[name], **kwargs)
    return getattr(torchvision.models, TWIN_BUILDERS.get(name, name))(**TWIN_ARGUMENTS.get(name, {}), **kwargs)


def twin_output(output: Any) -> torch.Tensor:
    """The twin's output as the network's: a segmentation model's dict holds it under `out`."""
    return output["out"] if isinstance(output, dict) else output


def randomise(twin: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm parameters and running statistics (the defaults, ones and zeros, would hide a swapped pair)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for tensor, low, high in (
                    (module.weight, 0.5, 1.5),
                    (module.bias, -0.2, 0.2),
                    (module.running_mean, -0.2, 0.2),
                    (module.running_var, 0.5, 2.0),
                ):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
                module.num_batches_tracked.fill_(7)
    return twin.eval()


def small_network(name: str) -> cnndsl.Network:
    """The zoo network (with its ZOO_SETTINGS) at the smallest tried input side it accepts (same channels), else as written."""
    stem, settings = ZOO_SETTINGS.get(name, (name, {}))
    network = cnndsl.load(stem, **settings)
    channels = network.input_shape.channels
    for side in (side for side in SMALL_SIDES if side >= SMALLEST_SIDE.get(name, 0)):
        if side >= min(network.input_shape.spatial):
            break
        checked, _ = cnndsl.check_source(network.source, network.filename, (channels, side, side), settings)
        if checked is not None:
            return checked
    return network


def assert_same_hyperparameters(module: nn.Module, twin: nn.Module) -> None:
    """What equal outputs in eval cannot show: BatchNorm's eps and momentum, dropout rates, and the stochastic
    depth rate of every residual block that calls one (torchvision's MBConv builds one in every block)."""

    def rates(model: nn.Module) -> list[list[float]]:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
        return [sorted(m.eps for m in norms), sorted(m.momentum for m in norms), sorted(dropouts)]

    for what, mine, twins in zip(("BatchNorm eps", "BatchNorm momentum", "dropout"), rates(module), rates(twin), strict=True):
        assert mine == pytest.approx(twins, rel=1e-9), what  # MnasNet's momentum is 1 - 0.9997, written 0.0003
    ours = [m.p for m in module.modules() if type(m).__name__ == "StochasticDepth"]
    theirs = [
        m.stochastic_depth.p for m in twin.modules() if getattr(m, "use_res_connect", False) and hasattr(m, "stochastic_depth")
    ]
    assert ours == theirs


def assert_close(actual: Any, expected: torch.Tensor, what: str) -> None:
    actual = torch.as_tensor(np.asarray(actual) if not isinstance(actual, torch.Tensor) else actual)
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert error <= RELATIVE * scale, (
        f"{what}: largest difference {error:.3g}, {error / scale:.3g} of the largest output {scale:.3g}"
    )


def assert_generated_numpy_and_back(
    network: cnndsl.Network,
    module: nn.Module,
    twin: nn.Module,
    fresh: nn.Module,
    saved: Path,
    x: torch.Tensor,
    expected: torch.Tensor,
    tmp_path: Path,
) -> None:
    """After the torch module: the generated file and the NumPy backend, loaded from the same twin
    checkpoint, give the twin's output; the weights exported in the twin's layout have its keys,
    every layer matched, and load strictly into `fresh` (an untrained twin), which then gives it too."""
    generated = compiled_with_weights(network, saved, tmp_path)
    with torch.no_grad():
        assert_close(generated(x), expected, "the generated file")
    assert_close(network.to_numpy(saved)(x.numpy()), expected, "the NumPy backend")

    back, back_report = to_layout(network, module.state_dict(), twin.state_dict())
    layers = len({key.rpartition(".")[0] for key in twin.state_dict()})
    assert list(back) == list(twin.state_dict()) and len(back_report.matched) == layers
    fresh.load_state_dict(back, strict=True)
    with torch.no_grad():
        assert_close(twin_output(fresh(x)), expected, "the twin with the weights exported back")


@pytest.mark.parametrize("name", TWINS)
def test_twin_weights_load_by_structure_and_go_back(name: str, torchvision: ModuleType, tmp_path: Path) -> None:
    torch.manual_seed(0)
    twin = randomise(make_twin(torchvision, name), seed=1)
    network = small_network(name)
    saved = tmp_path / ("twin.pth" if len(name) % 2 else "twin.safetensors")  # both formats over the zoo
    if saved.suffix == ".pth":
        torch.save(twin.state_dict(), saved)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in twin.state_dict().items()}, saved)
    x = torch.randn(2, *network.input_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = twin_output(twin(x))

    module = network.to_torch(weights=saved).eval()
    assert_same_hyperparameters(module, twin)
    report = module.weights_report
    layers = len({key.rpartition(".")[0] for key in twin.state_dict()})
    if report is None:  # the zoo file names its layers as the twin does (AlexNet, VGG): loaded key by key
        assert list(module.state_dict()) == list(twin.state_dict())
    else:
        assert len(report.matched) == layers and not (report.reinitialised or report.unmatched or report.skipped), str(report)
    with torch.no_grad():
        assert_close(module(x), expected, "the torch module")

    assert_generated_numpy_and_back(network, module, twin, make_twin(torchvision, name).eval(), saved, x, expected, tmp_path)


def test_the_twins_are_the_reference_models(torchvision: ModuleType) -> None:
    """The twins built here are the models the reference files describe (their parameter and buffer totals)."""
    for name in [name for name in TWINS if name in REFERENCE]:
        with torch.device("meta"):
            twin = make_twin(torchvision, name) if not name.startswith("regnet") else None
        if twin is None:  # RegNet computes its widths with real tensors
            twin = make_twin(torchvision, name)
        params = sum(p.numel() for p in twin.parameters())
        buffers = sum(b.numel() for b in twin.buffers())
        assert (params, buffers) == (REFERENCE[name]["params"], REFERENCE[name]["buffers"]), name


def test_resnet50_fine_tunes_from_a_torchvision_checkpoint(torchvision: ModuleType, tmp_path: Path) -> None:
    """The acceptance scenario: `cnndsl train resnet50 --init-from resnet50.pth --set num_classes=10`."""
    from click.testing import CliRunner

    from cnndsl.cli import main

    torch.manual_seed(0)
    twin = randomise(torchvision.models.resnet50(), seed=3)
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(twin.state_dict(), checkpoint)
    saved = tmp_path / "tuned"
    arguments = ["train", "resnet50", "--init-from", str(checkpoint), "--set", "num_classes=10", "--input", "3x32x32"]
    arguments += ["--data", "synthetic:40", "--epochs", "1", "--batch-size", "32", "--no-progress", "--freeze", "stem,layer1"]
    arguments += ["--save", str(saved), "--weights-layout", "torchvision.models:resnet50(num_classes=10)"]
    result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "matched by structure: 106 layers matched, 1 re-initialised, 0 unmatched, 0 skipped" in result.output
    assert "re-initialised fc (was fc: shapes differ: weight 1000x2048 instead of 10x2048" in result.output
    tuned = read_weights(saved).state_dict  # no suffix: safetensors
    assert read_weights(saved).preprocess is None  # a foreign layout holds only the template's keys
    head = torchvision.models.resnet50(num_classes=10)
    head.load_state_dict({k: torch.from_numpy(v) for k, v in tuned.items()}, strict=True)
    original = twin.state_dict()
    assert torch.equal(head.conv1.weight, original["conv1.weight"])  # frozen: not trained
    assert torch.equal(head.layer1[0].conv2.weight, original["layer1.0.conv2.weight"])
    assert not torch.equal(head.layer4[0].conv2.weight, original["layer4.0.conv2.weight"])  # trained


def test_a_timm_checkpoint_loads_by_structure(tmp_path: Path) -> None:
    """timm names ResNet's layers as torchvision does but registers more modules (act1, drop_block, aa): same weights, same outputs."""
    try:
        import timm
    except ImportError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"timm is not installed: {err}")
        pytest.skip(f"timm is not installed ({err}); run the twins suite with `bash scripts/twins.sh`'s python")
    torch.manual_seed(0)
    twin = randomise(timm.create_model("resnet18", pretrained=False), seed=4)
    checkpoint = tmp_path / "timm_resnet18.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in twin.state_dict().items()}, checkpoint)
    network = small_network("resnet18")
    module = network.to_torch(weights=checkpoint).eval()
    assert module.weights_report is not None and len(module.weights_report.matched) == 41
    x = torch.randn(2, *network.input_shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert_close(module(x), twin(x), "cnndsl's ResNet-18 with timm's weights")


def test_yolov8n_is_ultralytics_detection_model(tmp_path: Path) -> None:
    """architectures/yolov8.cnn against Ultralytics' DetectionModel built from its packaged yolov8n.yaml (nothing is
    downloaded): the same function, the per-level raw maps the loss reads.

    In train mode Detect returns the maps flattened, {"boxes": 64 x anchors, "scores": nc x anchors} over the three
    levels; our outputs are the three maps [box, class]. BatchNorm runs in eval (running statistics) inside the
    train-mode model. The twin's 16 fixed DFL weights (the box decoder, outside the training graph) are not in the
    file: loading by structure skips exactly that layer, which needs allow_partial.
    """
    try:
        from ultralytics.nn.tasks import DetectionModel
    except ImportError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ultralytics is not installed: {err}")
        pytest.skip(f"ultralytics is not installed ({err}); run the twins suite with `bash scripts/twins.sh`'s python")

    def make() -> nn.Module:
        return DetectionModel("yolov8n.yaml", nc=80, verbose=False)

    def raw_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        model.train()
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        with torch.no_grad():
            out = model(x)
        return {"boxes": out["boxes"], "scores": out["scores"]}

    def flattened(maps: Any) -> dict[str, torch.Tensor]:
        """Our three [box, class] maps as Detect lays them out: each part flattened per level, levels concatenated."""
        maps = [torch.as_tensor(np.asarray(m)) if not isinstance(m, torch.Tensor) else m for m in maps]
        return {
            "boxes": torch.cat([m[:, :64].flatten(2) for m in maps], 2),
            "scores": torch.cat([m[:, 64:].flatten(2) for m in maps], 2),
        }

    def assert_maps(actual: Any, expected: dict[str, torch.Tensor], what: str) -> None:
        assert isinstance(actual, tuple) and len(actual) == 3, what
        got = flattened(actual)
        for part in ("boxes", "scores"):
            assert got[part].shape == expected[part].shape, f"{what}: {part}"
            assert_close(got[part], expected[part], f"{what} ({part})")

    torch.manual_seed(0)
    twin = randomise(make(), seed=6)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # Detect's bias_init gives each output convolution one constant bias: randomise them too
        for module in twin.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
    assert sum(p.numel() for p in twin.parameters() if p.requires_grad) == REFERENCE["yolov8n"]["trainable"]
    saved = tmp_path / "yolov8n.pth"
    torch.save(twin.state_dict(), saved)
    network = cnndsl.load("yolov8", "3x64x64")
    x = torch.randn(2, *network.input_shape, generator=torch.Generator().manual_seed(8))
    expected = raw_maps(twin, x)
    assert expected["boxes"].shape == (2, 64, 8 * 8 + 4 * 4 + 2 * 2)

    module = network.to_torch(weights=saved, allow_partial=True).eval()
    report = module.weights_report
    assert report is not None and len(report.matched) == 120, str(report)
    assert report.skipped == ["model.22.dfl.conv"] and not (report.unmatched or report.reinitialised), str(report)
    assert ("c3.m.1.add.0.cv2.conv", "model.4.m.1.cv2.conv") in report.matched  # C2f runs m before cv2 but registers it after
    assert ("cls5.conv", "model.22.cv3.2.2") in report.matched
    with torch.no_grad():
        assert_maps(module(x), expected, "the torch module")

    generated = compiled_with_weights(network, saved, tmp_path, allow_partial=True)
    with torch.no_grad():
        assert_maps(generated(x), expected, "the generated file")

    assert_maps(network.to_numpy(saved, allow_partial=True)(x.numpy()), expected, "the NumPy backend")

    back, back_report = to_layout(network, module.state_dict(), twin.state_dict(), allow_partial=True)
    assert back_report.skipped == ["model.22.dfl.conv"] and len(back_report.matched) == 120
    fresh = make()
    missing, unexpected = fresh.load_state_dict(back, strict=False)
    assert (missing, unexpected) == (["model.22.dfl.conv.weight"], [])  # the DFL keeps its fixed weights (0 to 15)
    exported = raw_maps(fresh, x)
    for part in ("boxes", "scores"):
        assert_close(exported[part], expected[part], f"the twin with the weights exported back ({part})")


def test_googlenet_aux_heads_are_torchvision_aux_logits(torchvision: ModuleType, tmp_path: Path) -> None:
    """`googlenet.cnn --set aux=true` against googlenet(aux_logits=True): the same three outputs, (logits, aux2, aux1).

    torchvision runs its auxiliary heads in training only: the twin is in training mode with its
    BatchNorm layers (randomised statistics) and dropouts in eval, cnndsl's network in eval.
    """
    torch.manual_seed(0)
    twin = randomise(torchvision.models.googlenet(aux_logits=True, init_weights=False), seed=6)
    twin.train()
    for module in twin.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            module.eval()
    network, diagnostics = cnndsl.check_source(cnndsl.load("googlenet").source, "googlenet.cnn", (3, 64, 64), {"aux": True})
    assert network is not None, diagnostics
    assert network.output_names == ["fc", "aux2", "aux1"]
    saved = tmp_path / "googlenet_aux.pth"
    torch.save(twin.state_dict(), saved)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = twin(x)
    assert type(expected).__name__ == "GoogLeNetOutputs" and len(expected) == 3

    module = network.to_torch(weights=saved).eval()
    report = module.weights_report
    layers = len({key.rpartition(".")[0] for key in twin.state_dict()})
    assert report is not None and len(report.matched) == layers and not (report.reinitialised or report.unmatched), str(report)
    generated = compiled_with_weights(network, saved, tmp_path)
    with torch.no_grad():
        ours = {"the torch module": module(x), "the generated file": generated(x)}
    ours["the NumPy backend"] = network.to_numpy(saved)(x.numpy())
    for what, outputs in ours.items():
        assert len(outputs) == 3, what
        for name, actual, reference in zip(("logits", "aux2", "aux1"), outputs, expected, strict=True):
            assert_close(actual, reference, f"{what}, {name}")

    back, _ = to_layout(network, module.state_dict(), twin.state_dict())
    fresh = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    fresh.load_state_dict(back, strict=True)
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in twin.state_dict().items())


def test_convnext_tiny_is_torchvisions(torchvision: ModuleType, tmp_path: Path) -> None:
    """convnext.cnn (ConvNeXt-T) against torchvision's convnext_tiny at 64x64: weights in by structure (the layer
    scale, a parameter of torchvision's CNBlock listed before its block, found by the key tree), outputs equal in the
    torch module, the generated file and NumPy, and the weights back strict.

    The LayerNorm parameters and layer scales are randomised: at their initial values (ones, zeros, 1e-6) every
    block would add almost nothing, and a swapped pair would pass."""
    torch.manual_seed(0)
    twin = torchvision.models.convnext_tiny().eval()
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, tensor in twin.named_parameters():
            if name.endswith("layer_scale"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.25)
            elif tensor.dim() == 1:  # LayerNorm weights and biases, and the biases of convolutions and linear layers
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.4 + (0.8 if name.endswith("weight") else -0.2))
    network, diagnostics = cnndsl.check_source(cnndsl.load("convnext").source, "convnext.cnn", (3, 64, 64))
    assert network is not None, diagnostics
    saved = tmp_path / "convnext_tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in twin.state_dict().items()}, saved)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = twin(x)

    module = network.to_torch(weights=saved).eval()
    report = module.weights_report
    layers = len({key.rpartition(".")[0] for key in twin.state_dict()})
    assert report is not None and len(report.matched) == layers and not (report.reinitialised or report.unmatched), str(report)
    with torch.no_grad():
        assert_close(module(x), expected, "the torch module")
    fresh = torchvision.models.convnext_tiny().eval()
    assert_generated_numpy_and_back(network, module, twin, fresh, saved, x, expected, tmp_path)
