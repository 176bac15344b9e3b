"""Weights by structure (cnndsl.weights_match): another module's layout onto the network's keys, without torch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.weights_match import group_layers, match_weights, shapes_of

SOURCE = """
network Twin(num_classes=5)
input 3x8x8
stem: [Conv(4, 3, pad=1), BN, ReLU]
Add[ Conv(6, 1), BN, ReLU, Conv(6, 3, pad=1) | Conv(6, 1), BN ]
GlobalAvgPool, flatten, fc: FC(num_classes)
"""


def foreign_layout(state: dict[str, np.ndarray], shortcut_first: bool = False) -> dict[str, np.ndarray]:
    """The network's weights as a hand-written module would name them (its shortcut registered first, if asked)."""
    names = {
        "stem.conv": "conv1",
        "stem.bn": "bn1",
        "add.0.conv1": "block.conv_a",
        "add.0.bn": "block.bn_a",
        "add.0.conv2": "block.conv_b",
        "add.1.conv": "block.shortcut.0",
        "add.1.bn": "block.shortcut.1",
        "fc": "head",
    }
    order = list(names)
    if shortcut_first:
        order = order[:2] + order[5:7] + order[2:5] + order[7:]
    out: dict[str, np.ndarray] = {}
    for prefix in order:
        for key, value in state.items():
            if key.rpartition(".")[0] == prefix:
                out[f"{names[prefix]}.{key.rpartition('.')[2]}"] = value
    return out


def randomised(network: cnndsl.Network, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = network.to_numpy(seed=seed).state_dict()
    return {
        k: (rng.uniform(0.5, 2, v.shape) if k.endswith("running_var") else rng.normal(size=v.shape)).astype(v.dtype)
        for k, v in state.items()
    }


@pytest.mark.parametrize("shortcut_first", [False, True])
def test_foreign_keys_load_by_structure_and_compute_the_same(shortcut_first: bool) -> None:
    network = cnndsl.parse(SOURCE)
    own = randomised(network, 1)
    model = network.to_numpy(foreign_layout(own, shortcut_first))
    report = model.weights_report
    assert report is not None and len(report.matched) == 8 and not report.reinitialised
    assert ("add.1.conv", "block.shortcut.0") in report.matched
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), network.to_numpy(own)(x))


def test_own_layout_gives_no_report() -> None:
    network = cnndsl.parse(SOURCE)
    assert network.to_numpy(randomised(network, 1)).weights_report is None


def test_a_head_changed_by_a_parameter_is_reinitialised_and_named() -> None:
    written = cnndsl.parse(SOURCE)
    tuned = cnndsl.parse(SOURCE, num_classes=2)
    foreign = foreign_layout(randomised(written, 3))
    model = tuned.to_numpy(foreign, seed=7)
    report = model.weights_report
    assert report is not None and [r[:2] for r in report.reinitialised] == [("fc", "head")]
    assert "re-initialised fc" in str(report) and "1 re-initialised" in str(report)
    np.testing.assert_array_equal(model.state_dict()["fc.weight"], tuned.to_numpy(seed=7).state_dict()["fc.weight"])
    np.testing.assert_array_equal(model.state_dict()["stem.conv.weight"], foreign["conv1.weight"])


def test_any_other_disagreement_is_refused_naming_both_layers() -> None:
    network = cnndsl.parse(SOURCE)
    foreign = foreign_layout(randomised(network, 1))
    foreign["block.conv_b.weight"] = np.zeros((6, 6, 5, 5), np.float32)
    with pytest.raises(cnndsl.CnnDslError) as caught:
        network.to_numpy(foreign)
    message = str(caught.value)
    assert "our `add.0.conv2` (conv, weight 6x6x3x3)" in message and "their `block.conv_b`" in message and "5x5" in message
    report = network.to_numpy(foreign, allow_partial=True).weights_report
    assert report is not None and "add.0.conv2" in report.unmatched and "block.conv_b" in report.skipped
    assert len(report.matched) == 7


def test_extra_or_missing_layers_are_refused() -> None:
    network = cnndsl.parse(SOURCE)
    foreign = foreign_layout(randomised(network, 1))
    extra = {**foreign, "aux.weight": np.zeros((3, 6), np.float32), "aux.bias": np.zeros(3, np.float32)}
    with pytest.raises(cnndsl.CnnDslError, match="more layers than the network"):
        network.to_numpy(extra)
    report = network.to_numpy(extra, allow_partial=True).weights_report
    assert report is not None and report.skipped == ["aux"] and len(report.matched) == 8
    missing = {k: v for k, v in foreign.items() if not k.startswith("head.")}
    with pytest.raises(cnndsl.CnnDslError, match="have no more layers"):
        network.to_numpy(missing)


def test_branches_that_fit_in_two_orders_are_ambiguous() -> None:
    network = cnndsl.parse(
        "network Amb\ninput 3x8x8\nConcat[ Conv(4, 1) | Conv(4, 1) | Conv(6, 3, pad=1) ]\nGlobalAvgPool, flatten, FC(2)\n"
    )
    state = network.to_numpy().state_dict()
    order = ["concat.2.conv", "concat.0.conv", "concat.1.conv", "fc"]  # the third branch first: its own order does not fit
    foreign = {
        f"m{i}.{k.rpartition('.')[2]}": v for i, p in enumerate(order) for k, v in state.items() if k.rpartition(".")[0] == p
    }
    with pytest.raises(cnndsl.CnnDslError, match="fit the weights in 2 orders"):
        network.to_numpy(foreign)


SPLIT = """
network Split(n=2)
input 4x8x8
cv1: Conv(8, 1)
a: Chunk(2, 0)
@cv1, b: Chunk(2, 1)
m: Conv(4, 3, pad=1) x n
Concat[@a | @b | @m*]
cv2: Conv(6, 1)
"""


def c2f_layout(state: dict[str, np.ndarray], decoder: bool = False) -> dict[str, np.ndarray]:
    """The weights as Ultralytics' C2f registers its modules: cv1, cv2, then the bottlenecks `m` that run before cv2;
    with `decoder`, a fixed convolution ours lacks after them (YOLOv8's DFL)."""
    out = {f"model.2.{key}": state[key] for key in ("cv1.weight", "cv1.bias", "cv2.weight", "cv2.bias")}
    out.update({f"model.2.{key}": value for key, value in state.items() if key.startswith("m.")})
    if decoder:
        out["model.3.dfl.conv.weight"] = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    return out


def test_a_network_with_references_matches_a_module_registered_out_of_order() -> None:
    network = cnndsl.parse(SPLIT)
    own = randomised(network, 5)
    model = network.to_numpy(c2f_layout(own))
    assert model.weights_report is not None and model.weights_report.matched == [
        ("cv1", "model.2.cv1"),
        ("m.0", "model.2.m.0"),
        ("m.1", "model.2.m.1"),
        ("cv2", "model.2.cv2"),
    ]
    x = np.random.default_rng(3).normal(size=(2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), network.to_numpy(own)(x))


def test_extra_submodules_of_a_module_registered_out_of_order_are_skipped_with_allow_partial() -> None:
    """Out of order and one layer more: the order is recovered leaving out exactly that submodule, not cut at the first difference."""
    network = cnndsl.parse(SPLIT)
    own = randomised(network, 6)
    foreign = c2f_layout(own, decoder=True)
    with pytest.raises(cnndsl.CnnDslError, match="do not fit network Split by structure"):
        network.to_numpy(foreign)
    model = network.to_numpy(foreign, allow_partial=True)
    report = model.weights_report
    assert report is not None and report.skipped == ["model.3.dfl.conv"] and not report.unmatched, str(report)
    assert len(report.matched) == 4 and ("cv2", "model.2.cv2") in report.matched
    x = np.random.default_rng(4).normal(size=(2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), network.to_numpy(own)(x))


def test_matching_reads_only_shapes() -> None:
    network = cnndsl.parse(SOURCE)
    own = network.to_numpy().state_dict()
    shapes = {k: v.shape for k, v in foreign_layout(own).items()}
    mapping, report = match_weights(network, shapes_of(own), {k: np.empty(s) for k, s in shapes.items()})
    assert mapping["fc.weight"] == "head.weight" and len(report.matched) == 8
    assert [layer.kind for layer in group_layers(shapes)] == [
        "conv",
        "batchnorm",
        "conv",
        "batchnorm",
        "conv",
        "conv",
        "batchnorm",
        "linear",
    ]


def test_sorted_keys_of_a_safetensors_file_find_their_order(tmp_path: Path) -> None:
    """safetensors stores keys sorted (by dtype, then name: `block.bn_a` before `conv1`): the order comes back from the module tree."""
    from cnndsl.weights import read_weights, write_weights

    network = cnndsl.parse(SOURCE)
    own = randomised(network, 4)
    path = tmp_path / "twin.safetensors"
    write_weights(path, foreign_layout(own))
    weights = read_weights(path)
    assert not weights.ordered and list(weights.state_dict) != list(foreign_layout(own))
    model = network.to_numpy(path)
    assert model.weights_report is not None and ("stem.conv", "conv1") in model.weights_report.matched
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), network.to_numpy(own)(x))


def test_a_smaller_image_makes_no_layer_re_initialisable() -> None:
    """Only arguments or input channels changed by a parameter excuse a shape difference, not another image size."""
    network = cnndsl.parse(SOURCE, input=(3, 16, 16))
    foreign = foreign_layout(randomised(cnndsl.parse(SOURCE), 1))
    foreign["block.conv_b.weight"] = np.zeros((6, 6, 5, 5), np.float32)
    with pytest.raises(cnndsl.CnnDslError, match="our `add.0.conv2`"):
        network.to_numpy(foreign)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("no_such_module_here:make", "cannot find the layout template"),
        ("collections:OrderedDict", "made a OrderedDict, which has no state_dict()"),
        ("collections:OrderedDict(x=len)", "only keyword=literal arguments"),
        ("math:sqrt", "calling math:sqrt failed"),
    ],
)
def test_a_bad_layout_template_is_one_clear_error(template: str, message: str) -> None:
    from cnndsl.weights_match import to_layout

    network = cnndsl.parse(SOURCE)
    with pytest.raises(cnndsl.CnnDslError, match=re.escape(message)):
        to_layout(network, network.to_numpy().state_dict(), template)


def test_to_layout_names_our_weights_as_the_template(tmp_path: Path) -> None:
    from cnndsl.weights_match import to_layout

    network = cnndsl.parse(SOURCE)
    own = randomised(network, 6)
    template = foreign_layout(randomised(network, 7))
    out, report = to_layout(network, own, template)
    assert list(out) == list(template) and len(report.matched) == 8
    np.testing.assert_array_equal(out["block.shortcut.0.weight"], own["add.1.conv.weight"])


def renamed(state: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, np.ndarray]:
    """`state` under other layer names, in the order `names` lists them (our layer path -> theirs)."""
    return {
        f"{names[prefix]}.{key.rpartition('.')[2]}": value
        for prefix in names
        for key, value in state.items()
        if key.rpartition(".")[0] == prefix
    }


def test_lists_registered_apart_and_run_interleaved_find_their_order() -> None:
    """A U-Net registers its decoder's upsamplings and convolutions as two lists (`ups.k`, `convs.k`) and runs them
    in turns: each list's items keep their order, the lists interleave."""
    network = cnndsl.parse("input 3x8x8\nConv(4, 1), Conv(4, 3, pad=1), Conv(4, 1), Conv(4, 3, pad=1)\n")
    own = randomised(network, 5)
    foreign = renamed(own, {"conv1": "pointwise.0", "conv3": "pointwise.1", "conv2": "spatial.0", "conv4": "spatial.1"})
    model = network.to_numpy(foreign)
    assert model.weights_report is not None
    assert model.weights_report.matched == [
        ("conv1", "pointwise.0"),
        ("conv2", "spatial.0"),
        ("conv3", "pointwise.1"),
        ("conv4", "spatial.1"),
    ]
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), network.to_numpy(own)(x))


def test_a_list_stays_together_when_an_interleaving_fits_too() -> None:
    """`b.1` and `a.0` have the same shapes: after `b.0`, both `b.0 b.1 a.0 a.1` and `b.0 a.0 b.1 a.1` fit; the
    order that keeps each list together is the one taken."""
    network = cnndsl.parse("input 3x8x8\nConv(4, 1), Conv(4, 3, pad=1), Conv(4, 3, pad=1), Conv(4, 1)\n")
    own = randomised(network, 6)
    foreign = renamed(own, {"conv3": "a.0", "conv4": "a.1", "conv1": "b.0", "conv2": "b.1"})
    model = network.to_numpy(foreign)
    assert model.weights_report is not None
    assert model.weights_report.matched == [("conv1", "b.0"), ("conv2", "b.1"), ("conv3", "a.0"), ("conv4", "a.1")]
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), network.to_numpy(own)(x))


def test_a_network_with_references_matches_by_structure() -> None:
    """`@name` elements hold no weights: the matching walks past them (GoogLeNet's auxiliary heads, a U-Net's skips),
    and a head registered after the main path (torchvision's aux1 after inception5b) is found by the key tree."""
    network = cnndsl.parse(
        "input 3x16x16\noutput logits, side\na: [Conv(4, 3, pad=1), BN, ReLU]\nside: [GAP, flatten, FC(3)]\n"
        "@a, Conv(6, 3, pad=1), GAP, flatten, logits: FC(5)"
    )
    own = network.to_numpy().state_dict()
    names = {"a.conv": "stem.conv", "a.bn": "stem.bn", "conv": "body", "logits": "head", "side.fc": "aux.fc"}
    foreign: dict[str, np.ndarray] = {}
    for prefix in ("a.conv", "a.bn", "conv", "side.fc", "logits"):  # the side head's keys before the main head's
        for key, value in own.items():
            if key.rpartition(".")[0] == prefix:
                foreign[f"{names[prefix]}.{key.rpartition('.')[2]}"] = value + 1
    mapping, report = match_weights(network, shapes_of(own), foreign)
    assert mapping["side.fc.weight"] == "aux.fc.weight" and mapping["logits.weight"] == "head.weight"
    assert len(report.matched) == 5 and not (report.unmatched or report.skipped or report.reinitialised)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_module_s_own_tensor_used_after_its_submodules_is_found(ordered: bool) -> None:
    """torchvision's ConvNeXt block registers `layer_scale` (its own parameter) before its `block` of layers and
    multiplies by it after them: the key tree places a module's own tensors among its submodules where they fit."""
    network = cnndsl.parse("input 4x6x6\nunit: [DWConv(3, pad=1), PointwiseFC(4), Scale] x 2\nGAP, flatten, FC(3)")
    own = network.to_numpy().state_dict()
    foreign: dict[str, np.ndarray] = {}
    for index in range(2):
        foreign[f"stage.{index}.layer_scale"] = own[f"unit.{index}.scale.layer_scale"] + 1
        for layer, theirs in (("dwconv", "block.0"), ("pointwisefc", "block.1")):
            for name in ("weight", "bias"):
                foreign[f"stage.{index}.{theirs}.{name}"] = own[f"unit.{index}.{layer}.{name}"] + 1
    foreign |= {"head.weight": own["fc.weight"], "head.bias": own["fc.bias"]}
    if not ordered:
        foreign = dict(sorted(foreign.items()))
    mapping, report = match_weights(network, shapes_of(own), foreign, ordered=ordered)
    assert (
        mapping["unit.1.scale.layer_scale"] == "stage.1.layer_scale"
        and mapping["unit.0.pointwisefc.weight"] == "stage.0.block.1.weight"
    )
    assert len(report.matched) == 7 and not (report.unmatched or report.skipped or report.reinitialised)


# ---------------------------------------------------------------- which layers a setting reshaped, from the IR

ARCHITECTURES = Path(__file__).resolve().parent.parent / "architectures"


def state_shapes(network: cnndsl.Network) -> dict[str, tuple[int, ...]]:
    return {key: value.shape for key, value in network.to_numpy(seed=0).state_dict().items()}


def really_reshaped(written: cnndsl.Network, tuned: cnndsl.Network) -> set[str]:
    """The layers of `tuned` whose tensors' shapes differ from (or are absent in) the network as written."""
    before, after = state_shapes(written), state_shapes(tuned)
    return {key.rpartition(".")[0] for key, shape in after.items() if before.get(key) != shape}


def test_regnet_with_other_classes_reshapes_only_the_head() -> None:
    from cnndsl.weights_match import changed_layers

    tuned = cnndsl.load(ARCHITECTURES / "regnet_y_400mf.cnn", num_classes=10)
    assert (
        changed_layers(tuned)
        == {tuned.layers[-1].path}
        == really_reshaped(cnndsl.load(ARCHITECTURES / "regnet_y_400mf.cnn"), tuned)
    )


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("digits_cnn", {"width": 8}),
        ("m5", {"width": 16}),
        ("dcgan_generator", {"nc": 1}),
        ("unet", {"base": 16}),
        ("densenet121", {"growth": 16}),
        ("densenet121", {"bn_size": 2}),
        ("regnet_y_400mf", {"group_width": 4}),  # only the 16 grouped convolutions
        ("resnext50_32x4d", {"groups": 16}),
        ("efficientnet", {"width": 0.5}),  # through `def` functions: the terms are opaque, every use of width counts
        ("mobilenet_v3_small", {"width": 0.5}),  # a structural parameter: the layer list changes too
        ("mobilenet_v2", {"dropout": 0.1}),  # no weight reads the rate
        ("lenet5", {"input": (1, 36, 36)}),  # the first convolution's channels and the first FC's features
        ("resnet18", {"input": (1, 160, 160)}),  # a global pool: the head keeps its features
    ],
)
def test_a_setting_marks_exactly_the_layers_whose_weights_it_reshaped(name: str, values: dict[str, object]) -> None:
    from cnndsl.weights_match import changed_layers

    path = ARCHITECTURES / f"{name}.cnn"
    tuned = cnndsl.load(path, **values)  # type: ignore[arg-type]
    reshaped = really_reshaped(cnndsl.load(path), tuned)
    assert bool(reshaped) == (values != {"dropout": 0.1})  # the comparison below is not between empty sets
    assert changed_layers(tuned) == reshaped


STRIDED = """
network Strided(stride=1, width=4, k=3)
input 3x8x8
Conv(width, k, stride=stride, pad=k // 2), BN, ReLU
Conv(8, 3, pad=1, groups=width // 4)
flatten, fc: FC(2)
"""


@pytest.mark.parametrize("values", [{"stride": 2}, {"width": 8}, {"k": 5}, {"k": 3, "width": 4}, {"width": 8, "stride": 2}])
def test_arguments_that_size_no_weight_reshape_nothing_by_themselves(values: dict[str, int]) -> None:
    """A stride or a padding a parameter sets sizes no weight: only the layers whose weights it reaches count."""
    from cnndsl.weights_match import changed_layers

    tuned = cnndsl.parse(STRIDED, **values)
    assert changed_layers(tuned) == really_reshaped(cnndsl.parse(STRIDED), tuned)
    if values == {"stride": 2}:
        assert changed_layers(tuned) == {"fc"}  # the strided convolution keeps its kernel; the flattened features shrink


def test_a_value_the_ir_cannot_follow_marks_every_layer_it_reaches() -> None:
    """A `def` function (an opaque term) or a parameter without a default: the written value is unknown, so
    every layer the parameter reaches is taken as reshaped (a difference excused, never a setting refused)."""
    from cnndsl.weights_match import changed_layers

    source = "network F(w=4, n)\ninput 3x8x8\ndef twice(x) = 2 * x\nConv(twice(w), 3), Conv(8, 1), Conv(n, 1), GlobalAvgPool, flatten, FC(2)\n"
    assert changed_layers(cnndsl.parse(source, n=4)) == {"conv3", "fc"}  # the FC's features are n channels
    # twice(w) is unknown as written: the Conv reading it and the next one (its input); Conv(8, 1) gives 8 channels all the same.
    assert changed_layers(cnndsl.parse(source, w=8, n=4)) == {"conv1", "conv2", "conv3", "fc"}


def test_a_setting_equal_to_the_written_value_reshapes_nothing() -> None:
    from cnndsl.weights_match import changed_layers

    assert changed_layers(cnndsl.load(ARCHITECTURES / "resnet18.cnn", num_classes=1000)) == set()
    assert changed_layers(cnndsl.load(ARCHITECTURES / "resnet18.cnn", input=(3, 224, 224))) == set()
    assert changed_layers(cnndsl.parse(SOURCE, num_classes="5")) == set()  # --set gives text: the value is what counts


def test_the_head_is_re_initialised_without_checking_the_source_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends read only the IR (issue 12): weights matching never calls the front end."""
    written = cnndsl.parse(SOURCE)
    tuned = cnndsl.parse(SOURCE, num_classes=2)
    foreign = foreign_layout(randomised(written, 3))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the front end was called")

    monkeypatch.setattr("cnndsl.frontend.check_source", refuse)
    report = tuned.to_numpy(foreign, seed=7).weights_report
    assert report is not None and [r[:2] for r in report.reinitialised] == [("fc", "head")] and len(report.matched) == 7


def test_weights_of_another_repetition_count_are_refused_naming_the_parameter() -> None:
    source = "network Deep(blocks=2)\ninput 3x8x8\n[Conv(4, 3, pad=1), BN, ReLU] x blocks\nGlobalAvgPool, flatten, fc: FC(2)\n"
    written = cnndsl.parse(source)
    foreign = {f"m.{key}": value for key, value in randomised(written, 1).items()}
    with pytest.raises(cnndsl.CnnDslError) as caught:
        cnndsl.parse(source, blocks=3).to_numpy(foreign)
    assert "blocks=3 (written: 2) may change which layers the network has" in str(caught.value)
    # Weights saved with the same count load, and those that fit load with allow_partial.
    deeper = cnndsl.parse(source, blocks=3)
    assert deeper.to_numpy({f"m.{k}": v for k, v in randomised(deeper, 2).items()}).weights_report is not None
    report = deeper.to_numpy(foreign, allow_partial=True).weights_report
    assert report is not None and report.unmatched and len(report.matched) == 5


def test_the_checker_records_the_written_values_beside_the_set_ones() -> None:
    """A default that reads another parameter is recorded as written (`h` = 8 for the written w=4), so a
    layer that reads only `h` counts as reshaped when `w` is set; the --input override keeps the `input` line's shape."""
    from cnndsl.weights_match import changed_layers, changed_parameters

    source = "network Tied(w=4, h=w * 2, n)\ninput 3x8x8\nConv(w, 3), Conv(h, 1), Conv(n, 1)\n"
    tuned = cnndsl.parse(source, input=(1, 8, 8), w=8, n=2)
    assert tuned.written_parameters == {"w": 4, "h": 8} and tuned.parameters == {"w": 8, "h": 16, "n": 2}
    assert tuned.written_input == (3, 8, 8) and tuned.input_shape == (1, 8, 8)
    assert changed_parameters(tuned) == {"w", "h", "n"}
    assert changed_layers(tuned) == {"conv1", "conv2", "conv3"}
    assert changed_layers(cnndsl.parse(source, n=2)) == {"conv3"}  # n has no written value: its layer counts as reshaped
    plain = cnndsl.parse(source, n=2, w=4)
    assert plain.written_parameters == {"w": 4, "h": 8} and changed_parameters(plain) == {"n"}
