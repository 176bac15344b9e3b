"""Zoo files against plain-PyTorch twins written from their papers: the same function.

Each twin is the reference definition of tests/data/architectures_v2.json (see
tests/data/README.md) written out in PyTorch. It gets random weights; its state_dict is
loaded into the cnndsl network's module by position (the twin's keys need not match ours),
and both must compute the same outputs in eval mode, as must the NumPy backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch_checks import one_torch_thread  # noqa: F401  (autouse fixture)

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


def load_by_position(module: nn.Module, twin: nn.Module) -> dict[str, str]:
    """Copy the twin's state_dict into `module` entry by entry, in order (shapes must agree); our key -> theirs."""
    ours, theirs = module.state_dict(), twin.state_dict()
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
