"""The normalisation and dropout kinds of issue 15 item 1 beyond the registry-driven rows:
LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm, Scale, Dropout2d, StochasticDepth.

Every bad argument's message (position and hint), float64 agreement with PyTorch in train
and eval mode, the random kinds' statistics and edge cases, and the torch helpers' state_dict
keys, shapes and TorchScript.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from numpy_reference import compare_with_torch, require_torch
from test_numpy_layers import NUMPY_CASES

import cnndsl
from cnndsl import CnnDslError

NEW_KINDS = ("LayerNorm", "GroupNorm", "InstanceNorm", "LocalResponseNorm", "Scale", "Dropout2d", "StochasticDepth")
NEW_CASES = [(kind, shape, body) for kind in NEW_KINDS for shape, body in NUMPY_CASES[kind]]

# (input, call, message, column of the caret, a fragment of the hint)
MESSAGES = [
    (
        "4x6x6",
        "GroupNorm(2, 8)",
        "GroupNorm's num_channels is 8 but its input has 4 channels",
        14,
        "write 4, or leave `num_channels` out",
    ),
    (
        "4x6x6",
        "GroupNorm(num_groups=3)",
        "GroupNorm: groups=3 must divide the channels; got 4",
        11,
        "choose a divisor of 4 (1, 2, 4)",
    ),
    ("48x6x6", "GroupNorm(5)", "GroupNorm: groups=5 must divide the channels; got 48", 11, "(6, 8, 12, 16, 24, 48, ...)"),
    (
        "4x6x6",
        "GroupNorm",
        "GroupNorm needs `groups` (its 1st argument)",
        1,
        "GroupNorm(groups, num_channels, eps=1e-05, affine=true, bias=true)",
    ),
    ("4x6x6", "GroupNorm(2, bias=false)", "GroupNorm: cnndsl supports only bias=true; got false", 14, "remove `bias`"),
    ("4x6x6", "GroupNorm(0)", "GroupNorm: `groups` must be a positive integer; got 0", 11, "signature: GroupNorm("),
    ("4x6x6", "GroupNorm(2, num_channels=4, groups=2)", "`groups` is given twice", 30, "signature: GroupNorm("),
    (
        "16",
        "GroupNorm(2)",
        "GroupNorm needs channels with spatial axes (CxL, CxHxW or CxDxHxW); got a flat vector of 16",
        1,
        "flatten",
    ),
    ("8x4x4", "LayerNorm(6)", "LayerNorm's normalized_shape is 6 but its input has 8 channels", 11, "write 8"),
    ("8", "LayerNorm(6)", "LayerNorm's normalized_shape is 6 but its input has 8 features", 11, "write 8"),
    ("8x4x4", "LayerNorm(bias=false)", "LayerNorm: cnndsl supports only bias=true; got false", 11, "remove `bias`"),
    ("8x4x4", "LayerNorm(eps=0)", "LayerNorm: eps must be positive; got 0", 11, "1e-5"),
    ("8x4x4", "LayerNorm(affine=2)", "LayerNorm: `elementwise_affine` must be true or false; got 2", 18, "signature: LayerNorm("),
    ("8x1x1", "InstanceNorm", "InstanceNorm needs more than one position per channel; got an image 8x1x1", 1, "global pooling"),
    (
        "8x4x4",
        "InstanceNorm(momentum=2)",
        "InstanceNorm: momentum must be between 0 and 1; got 2",
        14,
        "signature: InstanceNorm(",
    ),
    ("8x4x4", "InstanceNorm(eps=-1e-5)", "InstanceNorm: eps must be positive; got -1e-05", 14, "1e-5"),
    (
        "8x4x4",
        "InstanceNorm2d(4)",
        "InstanceNorm2d's num_features is 4 but its input has 8 channels",
        16,
        "InstanceNorm2d(num_features",
    ),
    # PyTorch's habit of giving the channels first meets the short spelling's signature: refused, not read as eps.
    ("8x4x4", "InstanceNorm(64)", "InstanceNorm: `affine` must be true or false; got 64", 14, "signature: InstanceNorm("),
    ("8x4x4", "LRN(0)", "LocalResponseNorm: `size` must be a positive integer; got 0", 5, "LocalResponseNorm(size"),
    ("8x4x4", "LRN(5, alpha=-1)", "LocalResponseNorm: alpha must not be negative; got -1", 8, "signature: LocalResponseNorm("),
    ("8x4x4", "LocalResponseNorm(5, k=0)", "LocalResponseNorm: k must be positive; got 0", 22, "AlexNet's paper uses 2"),
    ("8x4x4", "LRN", "LocalResponseNorm needs `size` (its 1st argument)", 1, "signature: LocalResponseNorm("),
    (
        "8",
        "LRN(3)",
        "LocalResponseNorm needs channels with spatial axes (CxL, CxHxW or CxDxHxW); got a flat vector of 8",
        1,
        "flatten",
    ),
    ("8", "Scale", "Scale needs channels with spatial axes (CxL, CxHxW or CxDxHxW); got a flat vector of 8", 1, "flatten"),
    ("8x4x4", "Scale(init=true)", "Scale: `init` must be a number; got true", 12, "signature: Scale(init=1e-06)"),
    ("8x4x4", "StochasticDepth", "StochasticDepth needs `p` (its 1st argument)", 1, "signature: StochasticDepth(p, mode=row)"),
    ("8x4x4", "StochasticDepth(1.5)", "StochasticDepth: p must be between 0 and 1; got 1.5", 17, "probability of dropping"),
    ("8x4x4", "StochasticDepth(-0.1)", "StochasticDepth: p must be between 0 and 1; got -0.1", 17, "probability of dropping"),
    ("8x4x4", "StochasticDepth(0.1, mode=col)", "StochasticDepth: `mode` must be one of row, batch; got col", 27, "mode=row"),
    ("8x4x4", "StochasticDepth(0.1, mode=2)", "StochasticDepth: `mode` must be one of row, batch; got 2", 27, "mode=row"),
    ("8x4x4", "StochasticDepth(0.1, true)", "StochasticDepth: `mode` must be one of row, batch; got true", 22, "mode=row"),
    ("8", "Dropout2d", "Dropout2d needs an image (CxHxW); got a flat vector of 8", 1, "flatten"),
    ("8", "Dropout1d(0.1)", "Dropout1d needs a 1-D input (CxL); got a flat vector of 8", 1, "flatten"),
    (
        "8x5",
        "Dropout2d(0.1)",
        "Dropout2d needs an image (CxHxW); got a 1-D signal 8x5 (CxL)",
        1,
        "write `Dropout1d`, as in PyTorch",
    ),
    (
        "8x5x5",
        "Dropout3d(0.1)",
        "Dropout3d needs a 3-D input (CxDxHxW); got an image 8x5x5",
        1,
        "write `Dropout2d`, as in PyTorch",
    ),
    (
        "8x5",
        "InstanceNorm2d(8)",
        "InstanceNorm2d needs an image (CxHxW); got a 1-D signal 8x5 (CxL)",
        1,
        "`InstanceNorm1d` or `InstanceNorm`",
    ),
    ("8x1", "InstanceNorm", "InstanceNorm needs more than one position per channel; got a 1-D signal 8x1 (CxL)", 1, "LayerNorm"),
    ("8x4x4", "Dropout2d(2)", "Dropout2d: p must be between 0 and 1; got 2", 11, "probability of dropping"),
]


@pytest.mark.parametrize(("in_shape", "call", "message", "column", "hint"), MESSAGES, ids=[m[1] for m in MESSAGES])
def test_bad_arguments_are_positioned_with_a_hint(in_shape: str, call: str, message: str, column: int, hint: str) -> None:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(f"input {in_shape}\n{call}\n")
    [diagnostic] = [d for d in info.value.diagnostics if d.severity == "error"]
    assert diagnostic.message == message
    assert (diagnostic.position.line, diagnostic.position.column) == (2, column)
    assert hint in (diagnostic.hint or "")
    assert "^" in diagnostic.format()


def test_a_rate_from_a_block_call_is_checked_where_it_is_used() -> None:
    """p is an expression: a rising rate that leaves [0, 1] is reported at the layer, with the call that reached it."""
    source = "network N(drop=0.1)\ninput 8x4x4\nblock B(p) = Add[ Conv(8, 1), StochasticDepth(p) | ]\nB(drop), B(drop * 20)\n"
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    [diagnostic] = info.value.diagnostics
    assert diagnostic.message == "StochasticDepth: p must be between 0 and 1; got 2"
    assert (diagnostic.position.line, diagnostic.position.column) == (3, 47)
    assert "B(drop * 20)" in " ".join(diagnostic.notes)
    net = cnndsl.parse(source.replace("drop * 20", "drop * 2"))
    assert [layer.args["p"] for layer in net.layers if layer.kind.name == "StochasticDepth"] == [0.1, 0.2]


def test_pytorch_keywords_and_the_second_positional_of_groupnorm() -> None:
    """GroupNorm(num_groups, num_channels) means what it means in PyTorch; the lowering is nn.GroupNorm(groups, C)."""
    require_torch()
    net = cnndsl.parse("input 6x3x3\nGroupNorm(3, 6)\nGroupNorm(num_channels=6, num_groups=2, eps=1e-3, affine=false)")
    first, second = net.to_torch()[0], net.to_torch()[1]
    assert (first.num_groups, first.num_channels, first.affine) == (3, 6, True)
    assert (second.num_groups, second.num_channels, second.eps, second.affine) == (2, 6, 1e-3, False)


@pytest.mark.parametrize(("kind", "shape", "body"), NEW_CASES, ids=[f"{k}-{b}@{s}" for k, s, b in NEW_CASES])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_float64_forward_and_gradients_match_torch(kind: str, shape: str, body: str, train: bool) -> None:
    """In float64 NumPy and PyTorch compute the same function to rounding, in train mode too
    (batch-independent statistics, running statistics, the dropout masks shared by a hook)."""
    net = cnndsl.parse(f"input {shape}\n{body}\n")
    x = np.random.default_rng(3).standard_normal((4, *net.input_shape))
    errors = compare_with_torch(net, x, train=train)
    assert max(errors.values()) < 1e-9, errors


def test_instance_norm_running_statistics_serve_in_eval_as_in_torch() -> None:
    """Three train steps update the running statistics as PyTorch does (num_batches_tracked stays 0, as there); eval then uses them."""
    torch = require_torch()
    net = cnndsl.parse("input 3x4x5\nInstanceNorm(affine=true, track_running_stats=true, momentum=0.2)")
    module = net.to_torch(seed=0).double()
    model = net.to_numpy({k: v.numpy() for k, v in module.state_dict().items()}, dtype=np.float64)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((2, 3, 4, 5)) * 3 + 1
        model.forward(x, train=True)
        module.train()(torch.from_numpy(x))
    state = model.state_dict()
    for key, value in module.state_dict().items():
        assert np.allclose(state[key], value.numpy(), rtol=1e-12, atol=1e-12), key
    assert int(state["instancenorm.num_batches_tracked"]) == 0
    assert not np.allclose(state["instancenorm.running_mean"], 0)
    x = rng.standard_normal((2, 3, 4, 5))
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    assert np.allclose(model.forward(x, train=False), expected, rtol=1e-12, atol=1e-12)


def test_group_norm_keeps_float32_precision_far_from_zero() -> None:
    """The kernel takes var = E[x^2] - E[x]^2 from one pass; when the mean dwarfs the spread that
    cancels (in float32 at a mean of 1000 and a spread of 0.5, to noise or a negative variance),
    so those groups are recomputed centred, as is a constant group (variance 0: the output is 0)."""
    torch = require_torch()
    net = cnndsl.parse("input 4x3x5\nGroupNorm(2)")
    x = (np.random.default_rng(0).standard_normal((3, 4, 3, 5)) * 0.5 + 1000).astype(np.float32)
    x[1, :2] = 7
    expected = torch.nn.functional.group_norm(torch.from_numpy(x.astype(np.float64)), 2).numpy()
    model = net.to_numpy()
    y = model.forward(x, grad=True)
    assert np.abs(y - expected).max() < 1e-3
    assert np.all(y[1, :2] == 0)
    x_t = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    torch.nn.functional.group_norm(x_t, 2).backward(torch.from_numpy(dy))
    dx, _ = model.backward(dy.astype(np.float32))
    assert dx is not None
    assert np.abs(dx - x_t.grad.numpy()).max() < 1e-3  # PyTorch's own float32 kernel is off by 2.5e-4 here


def test_layer_norm_normalises_over_channels_at_every_position() -> None:
    """ConvNeXt's LayerNorm2d: mean 0 and variance 1 over C at each (h, w) (weight 1, bias 0 at first)."""
    net = cnndsl.parse("input 5x3x4\nLayerNorm")
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 4)) * 4 + 2
    y = net.to_numpy(dtype=np.float64).forward(x)
    assert np.allclose(y.mean(axis=1), 0, atol=1e-12)
    assert np.allclose(y.var(axis=1), 1 / (1 + 1e-5 / x.var(axis=1)), atol=1e-9)
    assert not np.allclose(y.mean(axis=(2, 3)), 0)  # not over the positions


def _rows(y: np.ndarray) -> np.ndarray:
    return y.reshape(y.shape[0], -1)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_stochastic_depth_drops_whole_samples_and_keeps_the_expectation(p: float) -> None:
    net = cnndsl.parse(f"input 2x3x3\nStochasticDepth({p})")
    x = np.random.default_rng(0).uniform(1, 2, (4000, 2, 3, 3))
    model = net.to_numpy(dtype=np.float64)
    assert np.array_equal(model.forward(x, train=False), x)  # the identity in eval, whatever p
    y = model.forward(x, train=True, grad=True)
    ratio = _rows(y) / _rows(x)
    dropped = np.all(ratio == 0, axis=1)
    kept = np.all(np.isclose(ratio, 1 / (1 - p)), axis=1) if p < 1 else np.zeros(len(x), bool)
    assert np.all(dropped | kept), "each sample is dropped or kept whole"
    assert abs(dropped.mean() - p) < 0.03
    if 0 < p < 1:
        assert abs(y.mean() / x.mean() - 1) < 0.05
    dy = np.ones_like(y)
    dx, _ = model.backward(dy)
    assert np.allclose(dx, y / x, rtol=1e-14, atol=0)  # the gradient goes through the same mask


def test_stochastic_depth_batch_mode_drops_the_whole_batch_or_nothing() -> None:
    net = cnndsl.parse("input 2x3x3\nStochasticDepth(0.5, mode=batch)")
    model = net.to_numpy(dtype=np.float64)
    x = np.ones((8, 2, 3, 3))
    outcomes = {float(np.unique(model.forward(x, train=True)).item()) for _ in range(60)}
    assert outcomes == {0.0, 2.0}


@pytest.mark.parametrize(
    ("in_shape", "call"), [("50x3x3", "Dropout2d(0.25)"), ("50x9", "Dropout1d(0.25)"), ("50x1x3x3", "Dropout3d(0.25)")]
)
def test_channel_dropout_drops_whole_channels(in_shape: str, call: str) -> None:
    net = cnndsl.parse(f"input {in_shape}\n{call}")
    x = np.ones((40, *net.input_shape), np.float32)
    y = net.to_numpy(seed=1).forward(x, train=True)
    per_channel = y.reshape(40, 50, 9)
    assert np.all(per_channel == per_channel[:, :, :1]), "one value per channel"
    assert set(np.unique(per_channel)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.2 < np.mean(per_channel[:, :, 0] == 0) < 0.3


def test_torch_stochastic_depth_matches_torchvision_semantics() -> None:
    """The helper: identity in eval and at p=0, zeros at p=1, whole samples (row) or the batch (batch) otherwise."""
    torch = require_torch()
    from cnndsl.torch_modules import StochasticDepth

    x = torch.rand(2000, 2, 3) + 1
    assert torch.equal(StochasticDepth(0.7).eval()(x), x)
    assert torch.equal(StochasticDepth(0.0).train()(x), x)
    assert torch.equal(StochasticDepth(1.0).train()(x), torch.zeros_like(x))
    torch.manual_seed(0)
    ratio = (StochasticDepth(0.3).train()(x) / x).flatten(1)
    assert torch.all((ratio == 0).all(1) | torch.isclose(ratio, torch.tensor(1 / 0.7)).all(1))
    assert abs(float((ratio[:, 0] == 0).double().mean()) - 0.3) < 0.04
    batch = {float(StochasticDepth(0.5, mode="batch").train()(x).sum() == 0) for _ in range(40)}
    assert batch == {0.0, 1.0}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_helpers_state_dict_and_torchscript() -> None:
    """LayerNorm2d keeps torchvision's keys (weight, bias); Scale's layer_scale is (C, 1, 1) at init;
    every helper compiles with torch.jit.script and computes what the eager module does."""
    torch = require_torch()
    from cnndsl.torch_modules import LayerNorm2d, Scale, StochasticDepth

    net = cnndsl.parse("input 6x4x4\nLayerNorm(eps=1e-6), Scale(init=0.5), StochasticDepth(0.2)")
    module = net.to_torch(seed=0)
    state = module.state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == {
        "layernorm.weight": (6,),
        "layernorm.bias": (6,),
        "scale.layer_scale": (6, 1, 1),
    }
    assert torch.all(state["scale.layer_scale"] == 0.5)
    assert np.array_equal(net.to_numpy(seed=0).state_dict()["scale.layer_scale"], state["scale.layer_scale"].numpy())
    x = torch.randn(3, 6, 4, 4)
    for helper in (LayerNorm2d(6, eps=1e-6), Scale(6, init=0.25), StochasticDepth(0.4, mode="batch")):
        scripted = torch.jit.script(helper)
        helper.eval()
        scripted.eval()
        assert torch.allclose(scripted(x), helper(x))
        helper.train()
        scripted.train()
        torch.manual_seed(1)
        eager = helper(x)
        torch.manual_seed(1)
        assert torch.allclose(scripted(x), eager)
    layer_norm = LayerNorm2d(6, eps=1e-6)
    reference = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(layer_norm(x), reference, atol=1e-6)


def _doc_example(name: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "docs" / "LANGUAGE.md").read_text(encoding="utf-8")
    [source] = [block for block in re.findall(r"^```cnn\n(.*?)^```", text, re.S | re.M) if f"network {name}" in block]
    return source


def test_the_convnext_block_example_runs_the_same_in_every_backend() -> None:
    """docs/LANGUAGE.md's ConvNeXt block: NumPy equals torch in float64, train mode included (masks shared)."""
    net = cnndsl.parse(_doc_example("TinyConvNeXt"))
    assert [layer.kind.name for layer in net.layers if layer.kind.name in NEW_KINDS].count("StochasticDepth") == 2
    x = np.random.default_rng(0).standard_normal((3, *net.input_shape))
    for train in (False, True):
        errors = compare_with_torch(net, x, train=train)
        # 1e-6, not 1e-9: GELU's ops.erf is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7),
        # which the layer_scale gradient (the sum of the GELU branch's output) collects.
        assert max(errors.values()) < 1e-6, errors


def test_generated_source_writes_words_as_black_does() -> None:
    source = cnndsl.parse("input 4x3x3\nStochasticDepth(0.2, mode=batch)").torch_source()
    assert 'StochasticDepth(0.2, mode="batch")' in source


@pytest.mark.parametrize(
    ("spelling", "torch_class"),
    [
        ("LayerNorm", "LayerNorm"),
        ("GroupNorm", "GroupNorm"),
        ("InstanceNorm2d", "InstanceNorm2d"),
        ("InstanceNorm1d", "InstanceNorm1d"),
        ("InstanceNorm3d", "InstanceNorm3d"),
        ("LocalResponseNorm", "LocalResponseNorm"),
        ("Dropout2d", "Dropout2d"),
        ("Dropout1d", "Dropout1d"),
        ("Dropout3d", "Dropout3d"),
    ],
)
def test_pytorch_names_take_pytorchs_arguments_in_pytorchs_order(spelling: str, torch_class: str) -> None:
    """Code copied from a PyTorch model means what it meant there: the same positions, defaults and keywords."""
    import inspect

    torch = require_torch()
    from cnndsl.layers import lookup
    from cnndsl.layers.base import INFERRED, REQUIRED

    # PyTorch's keyword-only arguments (`bias` of GroupNorm and InstanceNorm2d) come last in cnndsl's.
    parameters = sorted(
        (p for p in inspect.signature(getattr(torch.nn, torch_class)).parameters.values() if p.name not in ("device", "dtype")),
        key=lambda p: p.kind == inspect.Parameter.KEYWORD_ONLY,
    )
    specs = lookup(spelling).signature_of(spelling)
    assert len(specs) == len(parameters)
    for spec, parameter in zip(specs, parameters, strict=True):
        assert parameter.name in (spec.name, *spec.keywords), (spec, parameter)
        if spec.default is REQUIRED or spec.default is INFERRED:
            assert parameter.default is inspect.Parameter.empty
        else:
            assert spec.default == parameter.default, (spec, parameter)


def test_huge_arguments_cost_no_more_than_the_input() -> None:
    """An LRN window far wider than the channels, a GroupNorm mistake on a very wide input: fast, and the same answer."""
    import time

    start = time.perf_counter()
    net = cnndsl.parse("input 3x4x4\nLRN(1000000000, alpha=0.1)")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    wide = net.to_numpy(dtype=np.float64).forward(x)
    # Every channel's window holds all three channels: the sum of squares is the same everywhere.
    expected = x / (1 + 0.1 / 1e9 * np.sum(x * x, axis=1, keepdims=True)) ** 0.75
    assert np.allclose(wide, expected, rtol=1e-12)
    with pytest.raises(CnnDslError, match="choose a divisor of 99999989"):
        cnndsl.parse("input 99999989x1x1\nGroupNorm(2)")
    assert time.perf_counter() - start < 2


def test_onnx_export_computes_what_torch_does() -> None:
    """Every new kind exports (eval mode: the dropouts are the identity) and ONNX's reference evaluator agrees with torch."""
    onnx = pytest.importorskip("onnx", reason="the onnx package is not installed; ONNX files cannot be checked")
    torch = require_torch()
    from onnx.reference import ReferenceEvaluator

    from cnndsl.compiler import export_onnx

    net = cnndsl.parse(
        "input 8x6x6\n"
        "LayerNorm(eps=1e-6), GroupNorm(4), InstanceNorm(affine=true), Add[ Conv(8, 1), StochasticDepth(0.3) | ]\n"
        "InstanceNorm, Scale(0.5), Dropout2d(0.2), LRN(3, alpha=0.1, k=2), GAP, flatten, LayerNorm, FC(3)\n"
    )
    # (InstanceNorm after LRN would fail: PyTorch's TorchScript exporter loses the channel count after LRN.)
    model = onnx.load_from_string(export_onnx(net, seed=0))
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((2, 8, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = net.to_torch(seed=0).eval()(torch.from_numpy(x)).numpy()
    [actual] = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})
    assert np.allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_onnx_export_of_running_instance_statistics_is_refused_in_words() -> None:
    """PyTorch's exporter cannot export InstanceNorm2d with running statistics for a dynamic batch: one clear error."""
    pytest.importorskip("onnx", reason="the onnx package is not installed")
    require_torch()
    from cnndsl.compiler import export_onnx

    net = cnndsl.parse("input 8x6x6\nInstanceNorm(track_running_stats=true)")
    with pytest.raises(CnnDslError, match="ONNX export failed: Unsupported: ONNX export of instance_norm") as info:
        export_onnx(net, seed=0)
    assert "--target torch" in (info.value.diagnostics[0].hint or "")


TRAINABLE_NET = """network NormNet(num_classes=10)
input 1x8x8
block CN(c, p) = Add[ DWConv(3, pad=1), LayerNorm(eps=1e-6), Conv(2 * c, 1), GELU, Conv(c, 1), Scale(0.1), StochasticDepth(p) | ]
Conv(16, 3, pad=1), InstanceNorm(affine=true), ReLU, CN(16, 0.1), Dropout2d(0.1), MaxPool(2), CN(16, 0.2)
GroupNorm(4), ReLU, LRN(3), GAP, flatten, LayerNorm, FC(num_classes)
"""
"""Every new kind in one small network (no per-sample norm right before the global average, which would undo it)."""


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_network_of_the_new_kinds_learns_digits(backend: str) -> None:
    """`cnndsl train` in both backends: train-mode dropouts, running statistics and every gradient together (~77% after 6 epochs)."""
    if backend == "torch":
        require_torch()
    from cnndsl.train import TrainConfig, train

    config = TrainConfig(data="digits", progress=False, threads=1, backend=backend, epochs=6)  # type: ignore[arg-type]
    metrics = train(cnndsl.parse(TRAINABLE_NET), config)
    assert metrics["test_accuracy"] >= 0.6, metrics["history"]


def test_channel_dropout_is_described_by_its_rank() -> None:
    """Summaries and drawings name the module the layer lowers to (Dropout1d on a signal), not the kind."""
    for in_shape, call, described in (("4x9", "Dropout1d(0.1)", "Dropout1d 0.1"), ("4x2x3x3", "Dropout3d", "Dropout3d 0.5")):
        assert cnndsl.parse(f"input {in_shape}\n{call}").layers[-1].describe == described
