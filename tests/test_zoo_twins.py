"""Zoo files against plain-PyTorch twins written from their papers: the same function.

Each twin is the reference definition of tests/data/architectures_v2.json (see
tests/data/README.md) written out in PyTorch. It gets random weights; its state_dict is
loaded into the cnndsl network's module by position (the twin's keys need not match ours),
and both must compute the same outputs in eval mode, as must the NumPy backend. The U-Net's
twin is also loaded by structure from a saved file (cnndsl.weights_match), into the torch
module, the compiled stand-alone file and the NumPy backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch_checks import compiled_with_weights, one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl

torch = pytest.importorskip("torch")
nn = torch.nn

ARCHITECTURES = Path(__file__).resolve().parent.parent / "architectures"


def espcn_twin(upscale: int = 3, channels: int = 1) -> nn.Module:
    """ESPCN (Shi et al. 2016) as the reference README defines it: Conv2d(1, 64, 5, padding=2), Tanh,
    Conv2d(64, 32, 3, padding=1), Tanh, Conv2d(32, r^2, 3, padding=1), PixelShuffle(r)."""
    return nn.Sequential(
        nn.Conv2d(channels, 64, 5, padding=2),
        nn.Tanh(),
        nn.Conv2d(64, 32, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(32, channels * upscale * upscale, 3, padding=1),
        nn.PixelShuffle(upscale),
    )


def load_by_position(module: nn.Module, twin: nn.Module | dict[str, torch.Tensor]) -> dict[str, str]:
    """Copy the twin's state_dict (or the one given) into `module` entry by entry, in order (shapes must agree); our key -> theirs."""
    ours, theirs = module.state_dict(), twin if isinstance(twin, dict) else twin.state_dict()
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]
    mapping = dict(zip(ours, theirs, strict=True))
    module.load_state_dict({key: theirs[mapping[key]] for key in ours})
    return mapping


@pytest.mark.parametrize(("settings", "side"), [({}, 64), ({"upscale": 2, "channels": 3}, 20)], ids=["x3-luma", "x2-rgb"])
def test_espcn_is_its_pytorch_twin(settings: dict[str, int], side: int) -> None:
    network = cnndsl.load("espcn", f"{settings.get('channels', 1)}x{side}x{side}", **settings)  # by its zoo name
    assert network.filename == str(ARCHITECTURES / "espcn.cnn")
    torch.manual_seed(0)
    twin = espcn_twin(**settings).eval()
    module = network.to_torch().eval()
    load_by_position(module, twin)
    x = torch.randn(2, *network.input_shape)
    with torch.no_grad():
        expected, got = twin(x), module(x)
    r = settings.get("upscale", 3)
    assert tuple(got.shape) == (2, settings.get("channels", 1), side * r, side * r)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    numpy_model = network.to_numpy({key: value.numpy() for key, value in module.state_dict().items()})
    np.testing.assert_allclose(numpy_model(x.numpy()), expected.numpy(), rtol=1e-4, atol=1e-5)


def dcgan_generator_twin(nz: int = 100, ngf: int = 64, nc: int = 3) -> nn.Module:
    """The PyTorch DCGAN tutorial's Generator (Radford et al. 2015), written out as the tutorial does."""
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


@pytest.mark.parametrize("settings", [{}, {"ngf": 8, "nc": 1}], ids=["tutorial", "small"])
def test_dcgan_generator_is_its_pytorch_twin(settings: dict[str, int]) -> None:
    network = cnndsl.load("dcgan_generator", **settings)
    assert network.filename == str(ARCHITECTURES / "dcgan_generator.cnn")
    torch.manual_seed(0)
    twin = dcgan_generator_twin(**settings)
    with torch.no_grad():  # non-trivial running statistics, so that eval-mode BatchNorm is checked too
        for module in twin.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    twin.eval()
    module = network.to_torch().eval()
    load_by_position(module, twin)
    x = torch.randn(2, *network.input_shape)
    with torch.no_grad():
        expected, got = twin(x), module(x)
    assert tuple(got.shape) == (2, settings.get("nc", 3), 64, 64)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    numpy_model = network.to_numpy({key: value.numpy() for key, value in module.state_dict().items()})
    np.testing.assert_allclose(numpy_model(x.numpy()), expected.numpy(), rtol=1e-4, atol=1e-5)


def dcgan_discriminator_twin(nc: int = 3, ndf: int = 64) -> nn.Module:
    """The PyTorch DCGAN tutorial's Discriminator (Radford et al. 2015), written out as the tutorial does."""
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )


def test_dcgan_discriminator_is_its_pytorch_twin_and_reads_the_generator() -> None:
    generator, discriminator = cnndsl.load("dcgan_generator"), cnndsl.load("dcgan_discriminator")
    assert tuple(discriminator.input_shape) == tuple(generator.output_shape) == (3, 64, 64)
    torch.manual_seed(0)
    twin = dcgan_discriminator_twin().eval()
    module = discriminator.to_torch().eval()
    load_by_position(module, twin)
    x = generator.to_torch(seed=1).eval()(torch.randn(2, *generator.input_shape)).detach()  # generated images
    with torch.no_grad():
        expected, got = twin(x), module(x)
    assert tuple(got.shape) == (2, 1, 1, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    numpy_model = discriminator.to_numpy({key: value.numpy() for key, value in module.state_dict().items()})
    np.testing.assert_allclose(numpy_model(x.numpy()), expected.numpy(), rtol=1e-4, atol=1e-6)


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """The reference README's DoubleConv(i, o): twice a padded 3x3 convolution without bias, BatchNorm2d, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetTwin(nn.Module):
    """The padded U-Net with BatchNorm and transposed-conv upsampling (Ronneberger et al. 2015) as the reference README
    defines it, with its module names (architectures_v2.json's leaf paths): `inc`, `downs.k` (MaxPool2d(2), DoubleConv),
    the decoder in two lists run interleaved, `ups.k` (ConvTranspose2d(2c, c, 2, stride=2)) and `convs.k` (DoubleConv on
    [skip, upsampled]), and `outc` (Conv2d(base, classes, 1) with bias)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 64) -> None:
        super().__init__()
        widths = [base * 2**level for level in range(5)]  # 64, 128, 256, 512, 1024
        self.inc = double_conv(in_channels, base)
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), double_conv(c, 2 * c)) for c in widths[:4])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(2 * c, c, 2, stride=2) for c in reversed(widths[:4]))
        self.convs = nn.ModuleList(double_conv(2 * c, c) for c in reversed(widths[:4]))
        self.outc = nn.Conv2d(base, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up, conv, skip in zip(self.ups, self.convs, reversed(skips), strict=True):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.outc(x)


def randomise_batch_norm(module: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics in every BatchNorm2d, so that eval-mode BatchNorm is checked."""
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, nn.BatchNorm2d):
                child.weight.uniform_(0.5, 1.5)
                child.bias.uniform_(-0.5, 0.5)
                child.running_mean.uniform_(-0.5, 0.5)
                child.running_var.uniform_(0.5, 2.0)
    return module


def leaves_in_execution_order(twin: nn.Module, x: torch.Tensor) -> list[str]:
    """The paths of the twin's leaf modules in the order they run on `x` (which need not be their registration order)."""
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda _module, _input, _output, name=name: order.append(name))
        for name, module in twin.named_modules()
        if not list(module.children())
    ]
    try:
        with torch.no_grad():
            twin(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def test_the_unet_twin_is_the_reference_definition() -> None:
    """Written right: the twin's state_dict (keys in order, shapes), counts and leaves in execution order are the
    reference's (tests/data/architectures_v2.json), and so are the zoo file's counts."""
    reference = json.loads((Path(__file__).parent / "data" / "architectures_v2.json").read_text())["models"]["unet"]
    with torch.device("meta"):
        twin = UNetTwin()
        leaves = leaves_in_execution_order(twin, torch.empty(reference["input"]))
    assert [(key, list(value.shape)) for key, value in twin.state_dict().items()] == list(reference["param_shapes"].items())
    assert leaves == [path for path, _, _ in reference["leaf_outputs"]]
    network = cnndsl.load("unet")
    assert sum(p.numel() for p in twin.parameters()) == reference["params"] == network.params
    assert sum(b.numel() for b in twin.buffers()) == reference["buffers"] == network.buffers


@pytest.mark.parametrize(("settings", "side"), [({}, 32), ({"base": 8, "num_classes": 3}, 64)], ids=["base64", "base8"])
def test_unet_is_its_pytorch_twin(settings: dict[str, int], side: int, tmp_path: Path) -> None:
    network = cnndsl.load("unet", f"3x{side}x{side}", **settings)
    assert network.filename == str(ARCHITECTURES / "unet.cnn")
    torch.manual_seed(0)
    twin = randomise_batch_norm(UNetTwin(**settings)).eval()
    x = torch.randn(2, *network.input_shape)
    with torch.no_grad():
        expected = twin(x)
    assert tuple(expected.shape) == (2, settings.get("num_classes", 2), side, side)

    # By position: the twin registers its decoder's upsamplings (`ups`) before its convolutions (`convs`), which
    # run interleaved; the network's modules come in the order they run, so the twin's entries are taken in that order.
    module = network.to_torch().eval()
    state = twin.state_dict()
    leaves = leaves_in_execution_order(twin, x)
    load_by_position(module, {key: state[key] for leaf in leaves for key in state if key.rpartition(".")[0] == leaf})
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=0, atol=0)

    # By structure, from the twin's own file, as `--weights twin.pth` loads it.
    saved = tmp_path / "twin.pth"
    torch.save(twin.state_dict(), saved)
    matched = network.to_torch(weights=saved).eval()
    report = matched.weights_report
    layers = len({key.rpartition(".")[0] for key in state})
    assert report is not None and len(report.matched) == layers, str(report)
    assert not (report.reinitialised or report.unmatched or report.skipped), str(report)
    with torch.no_grad():
        torch.testing.assert_close(matched(x), expected, rtol=0, atol=0)

    # The stand-alone file `cnndsl compile unet.cnn --weights twin.pth --weights-out unet.safetensors` writes.
    generated = compiled_with_weights(network, saved, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), expected, rtol=0, atol=0)

    numpy_model = network.to_numpy(saved)  # by structure too
    np.testing.assert_allclose(numpy_model(x.numpy()), expected.numpy(), rtol=1e-4, atol=1e-4)
