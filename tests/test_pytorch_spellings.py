"""PyTorch's spellings (`Conv2d`, `Linear`, `BatchNorm2d`, `MaxPool2d`, ...) take PyTorch's signature."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import cnndsl
from cnndsl import CnnDslError
from cnndsl.layers import KINDS, lookup
from cnndsl.layers.base import INFERRED


def layer_args(source: str) -> list[dict[str, object]]:
    return [dict(layer.args) for layer in cnndsl.parse(source).layers]


def error_of(source: str) -> cnndsl.Diagnostic:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    return info.value.errors[0]


def test_conv2d_takes_in_out_kernel_in_pytorch_order() -> None:
    (conv,) = layer_args("input 3x32x32\nConv2d(3, 16, 3)")
    assert conv["out"] == 16 and conv["kernel"] == (3, 3) and conv["stride"] == (1, 1)


def test_conv2d_keywords_are_pytorchs() -> None:
    (conv,) = layer_args("input 3x32x32\nConv2d(in_channels=3, out_channels=8, kernel_size=5, stride=2, padding=2, bias=False)")
    assert (conv["out"], conv["kernel"], conv["stride"], conv["pad"], conv["bias"]) == (8, (5, 5), (2, 2), (2, 2), False)


def test_in_channels_may_be_left_out_by_keyword() -> None:
    (conv,) = layer_args("input 3x32x32\nConv2d(out_channels=8, kernel_size=3)")
    assert conv["out"] == 8


def test_batchnorm2d_first_argument_is_num_features_not_eps() -> None:
    net = cnndsl.parse("input 3x8x8\nConv2d(3, 64, 3), BatchNorm2d(64)")
    assert net.layers[1].args["eps"] == 1e-5
    assert net.layers[1].params == 128


def test_linear_takes_in_and_out_features() -> None:
    net = cnndsl.parse("input 3x32x32\nConv2d(3, 16, 3), MaxPool2d(2), Flatten(), Linear(16*15*15, 10)")
    assert net.output_shape == (10,)
    assert net.layers[-1].params == 16 * 15 * 15 * 10 + 10


def test_pools_dropout_and_activations_take_pytorch_arguments() -> None:
    net = cnndsl.parse(
        "input 4x16x16\n"
        "MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True), ReLU(inplace=True), "
        "AvgPool2d(kernel_size=2, count_include_pad=True), LeakyReLU(negative_slope=0.2, inplace=True), "
        "Dropout(p=0.1, inplace=True), AdaptiveAvgPool2d(output_size=(2, 1)), Flatten(start_dim=1), Softmax(dim=1)"
    )
    maxpool, _, avgpool, leaky, dropout, adaptive, _, _ = (layer.args for layer in net.layers)
    assert maxpool["kernel"] == (3, 3) and maxpool["stride"] == (2, 2) and maxpool["pad"] == (1, 1) and maxpool["ceil"]
    assert avgpool["stride"] == (2, 2)  # stride defaults to the kernel, as in PyTorch
    assert leaky["slope"] == 0.2 and dropout["p"] == 0.1 and adaptive["size"] == (2, 1)


def test_in_channels_that_disagree_with_the_input_is_a_positioned_error() -> None:
    diagnostic = error_of("input 3x32x32\nConv2d(3, 16, 3), Conv2d(3, 8, 3)")
    assert diagnostic.message == "Conv2d's in_channels is 3 but its input has 16 channels"
    assert (diagnostic.position.line, diagnostic.position.column) == (2, 26)
    assert "signature: Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0" in diagnostic.hint


def test_num_features_and_in_features_are_checked_too() -> None:
    assert error_of("input 3x8x8\nBatchNorm2d(64)").message == "BatchNorm2d's num_features is 64 but its input has 3 channels"
    diagnostic = error_of("input 3x32x32\nConv2d(3, 16, 3), flatten, Linear(16*16*16, 10)")
    assert diagnostic.message == "Linear's in_features is 4096 but its input has 14400 features"


def test_old_cnndsl_reading_of_conv2d_is_an_error_not_a_silent_other_network() -> None:
    # Conv2d(16, 3) used to mean out=16, kernel=3; PyTorch reads in=16, out=3 and no kernel.
    diagnostic = error_of("input 3x32x32\nConv2d(16, 3)")
    assert "Conv2d needs `kernel_size`" in diagnostic.message


def test_unsupported_pytorch_options_are_refused_by_name() -> None:
    diagnostic = error_of("input 3x8x8\nMaxPool2d(2, dilation=2)")
    assert diagnostic.message == "MaxPool2d: cnndsl supports only dilation=1; got 2"


def test_short_spellings_keep_their_signature_and_take_unambiguous_pytorch_keywords() -> None:
    conv, pool = layer_args("input 3x8x8\nConv(16, kernel_size=3, padding=1), Pool(kernel_size=2, ceil_mode=true)")
    (fc,) = layer_args("input 12\nFC(out_features=10)")
    assert conv["out"] == 16 and conv["kernel"] == (3, 3) and conv["pad"] == (1, 1)
    assert pool["kernel"] == (2, 2) and pool["ceil"]
    assert fc["out"] == 10


def test_padding_and_pad_together_are_given_twice() -> None:
    assert "`pad` is given twice" in error_of("input 3x8x8\nConv(4, 3, pad=1, padding=1)").message


def test_defaults_given_through_a_pytorch_spelling_apply_to_the_kind() -> None:
    net = cnndsl.parse("input 3x8x8\ndefaults Conv2d(kernel_size=3, padding=1)\nConv(8), Conv2d(out_channels=4)")
    assert [layer.out_shape for layer in net.layers] == [(8, 8, 8), (4, 8, 8)]
    assert "cannot be a default" in error_of("input 3x8x8\ndefaults Conv2d(in_channels=3)\nConv(8, 3)").message


def test_every_alias_with_a_signature_of_its_own_is_exposed_by_the_registry() -> None:
    for kind in KINDS.values():
        for spelling, specs in kind.spelling_signatures.items():
            assert spelling in kind.aliases
            assert kind.signature_text(spelling).startswith(f"{spelling}(")
            for spec in specs:
                assert spec.role != "arg" or spec.canonical in {s.name for s in kind.signature}, (spelling, spec)
    text = KINDS["Conv"].spellings()
    assert text["Conv"].startswith("Conv(out, kernel") and text["Conv2d"].startswith("Conv2d(in_channels, out_channels")
    assert KINDS["FC"].signature_of("linear")[0].default is INFERRED


def test_cli_check_reads_conv2d_as_pytorch_does(tmp_path: Path) -> None:
    path = tmp_path / "torchy.cnn"
    path.write_text(
        "input 3x32x32\nConv2d(3, 16, 3), BatchNorm2d(16), ReLU(inplace=True), MaxPool2d(2), Flatten(), Linear(16*15*15, 10)\n"
    )
    result = subprocess.run([sys.executable, "-m", "cnndsl", "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Conv 16 3x3" in result.stdout and "warning" not in result.stderr


def test_convtranspose2d_takes_pytorchs_signature_in_its_order() -> None:
    torch = pytest.importorskip("torch")
    ours = [spec.name for spec in lookup("ConvTranspose2d").signature_of("ConvTranspose2d")]
    theirs = [name for name in inspect.signature(torch.nn.ConvTranspose2d).parameters if name not in ("device", "dtype")]
    assert ours == theirs
    (layer,) = layer_args("input 4x3x3\nConvTranspose2d(4, 8, 3, 2, 1, 1, 2, False, 1, zeros)")
    assert (layer["out"], layer["stride"], layer["output_pad"], layer["groups"], layer["bias"]) == (8, (2, 2), (1, 1), 2, False)
    assert error_of("input 4x3x3\nConvTranspose2d(4, 8, 3, padding_mode=reflect)").message == (
        "ConvTranspose2d: cnndsl supports only padding_mode=zeros; got reflect"
    )


@pytest.mark.parametrize(("spelling", "in_shape", "rank"), [("ConvTranspose1d", "4x5", 1), ("ConvTranspose3d", "4x2x3x3", 3)])
def test_convtranspose1d_and_3d_take_pytorchs_signature_in_its_order(spelling: str, in_shape: str, rank: int) -> None:
    torch = pytest.importorskip("torch")
    ours = [spec.name for spec in lookup(spelling).signature_of(spelling)]
    theirs = [name for name in inspect.signature(getattr(torch.nn, spelling)).parameters if name not in ("device", "dtype")]
    assert ours == theirs
    (layer,) = layer_args(f"input {in_shape}\n{spelling}(4, 8, 3, 2, 1, 1, 2, False, 1, zeros)")
    assert (layer["out"], layer["stride"], layer["output_pad"], layer["groups"], layer["bias"]) == (
        8,
        (2,) * rank,
        (1,) * rank,
        2,
        False,
    )


def test_unflatten_takes_pytorchs_dim_and_size_tuple() -> None:
    torch = pytest.importorskip("torch")
    network = cnndsl.parse("input 48\nUnflatten(1, (3, 4, 4))")
    assert network.output_shape == (3, 4, 4) and cnndsl.parse("input 48\nUnflatten(3, 4, 4)").output_shape == (3, 4, 4)
    x = torch.randn(2, 48)
    assert torch.equal(network.to_torch()(x), torch.nn.Unflatten(1, (3, 4, 4))(x))
    assert "nn.Unflatten(1, (3, 4, 4))" in network.torch_source()
