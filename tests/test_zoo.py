"""The model zoo (architectures/*.cnn) against torchvision, layer by layer.

Ground truth is tests/data/torchvision_ref.json and, for the networks added since,
tests/data/architectures_v2.json (see tests/data/README.md): counts, FLOPs, the output shape
of every leaf module call and every state_dict shape, recorded from torchvision itself.
Each zoo file must agree on all of them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import cnndsl
from cnndsl.ir import Node, Parallel, Sequence
from cnndsl.layers import MergeKind

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ROOT / "architectures"
REFERENCE = Path(os.environ.get("CNNDSL_REFERENCE", ROOT / "tests" / "data" / "torchvision_ref.json"))
REFERENCE_V2 = ROOT / "tests" / "data" / "architectures_v2.json"

# File stem -> reference model key.
ZOO = {
    "lenet5": "lenet5",
    "alexnet": "alexnet",
    "vgg11": "vgg11",
    "vgg16": "vgg16",
    "vgg16_bn": "vgg16_bn",
    "vgg19": "vgg19",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnext50_32x4d": "resnext50_32x4d",
    "wide_resnet50_2": "wide_resnet50_2",
    "googlenet": "googlenet",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "mnasnet1_0": "mnasnet1_0",
    "efficientnet": "efficientnet_b0",  # B0 by default; B1-B7 by --set, in VARIANTS below
    "regnet_y_400mf": "regnet_y_400mf",
    "shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
    "squeezenet1_0": "squeezenet1_0",
    "squeezenet1_1": "squeezenet1_1",
    "densenet121": "densenet121",
    "inception_v3": "inception_v3",
}
LECTURE = {"classic", "lecture_conv760", "digits_cnn"}  # digits_cnn is trained in tests/test_train.py
REFERENCE_V2 = ROOT / "tests" / "data" / "architectures_v2.json"
ZOO_V2 = {
    "espcn": "espcn",
    "dcgan_generator": "dcgan_generator",
    "dcgan_discriminator": "dcgan_discriminator",
    "fcn_resnet50": "fcn_resnet50",
    "unet": "unet",
    "yolov8": "yolov8n",
    "convnext": "convnext_tiny",
}
"""File stem -> model key in architectures_v2.json (the next wave; see tests/data/README.md)."""
V2 = {"m5", "r3d_18"}
"""1-D and 3-D networks, against architectures_v2.json in tests/test_zoo_v2.py: their module paths are not
torchvision's and M5 has one expected "doesn't fit" warning, so not in ZOO_V2's leaf-by-leaf tests here."""

V2_MODULE_LEAVES = {"fcn_resnet50"}
"""Zoo files whose reference calls one module several times (torchvision's ResNet has one `relu`
per block) and computes some steps without a module (`out += identity`, F.interpolate): their
leaves cannot carry the reference's module paths. Their leaves of the kinds the reference has
as modules are compared instead, in order, kind and output shape."""
TORCH_LEAF_KINDS = {"Conv2d": "Conv", "BatchNorm2d": "BatchNorm", "ReLU": "ReLU", "MaxPool2d": "MaxPool", "Dropout": "Dropout"}
RENAMED_V2 = {
    "unet": {
        "inc": "e1",
        "downs.0": "e2",
        "downs.1": "e3",
        "downs.2": "e4",
        "downs.3": "bottom",
        "ups.0": "up4.1.0",
        "convs.0": "d4",
        "ups.1": "up3.1.0",
        "convs.1": "d3",
        "ups.2": "up2.1.0",
        "convs.2": "d2",
        "ups.3": "up1.1.0",
        "convs.3": "d1",
    }
}
"""Reference module path prefix -> ours, where a file cannot take the reference's names. The reference U-Net keeps
its decoder in two ModuleLists, `ups.k` and `convs.k`, run interleaved; a .cnn body names its elements in the order
they run, so unet.cnn names its levels (e1..e4 are the skips the decoder reads) and its leaves are compared through
this table, every one of them."""
DETECTION = {"yolov8"}
"""Ultralytics detection models: recorded in train mode with shared modules, checked by the YOLO tests below instead."""

# torchvision module type -> cnndsl kind, for the layers that carry weights.
TORCH_KINDS = {"Conv2d": "Conv", "BatchNorm2d": "BatchNorm", "BatchNorm1d": "BatchNorm", "Linear": "FC"}
# DWConv lowers to nn.Conv2d (groups = channels).
WEIGHTED_KINDS = {"Conv": "Conv", "DWConv": "Conv", "BatchNorm": "BatchNorm", "FC": "FC"}

# Expected "doesn't fit" warnings: SqueezeNet's strided stems really do skip the last input
# row and column in torchvision as well. Every other zoo file must check without any.
# dcgan_discriminator ends in the tutorial's Sigmoid (trained there with BCELoss): the warning that cross-entropy wants logits is right.
EXPECTED_WARNINGS = {"squeezenet1_0": 1, "squeezenet1_1": 1, "dcgan_discriminator": 1}


@cache
def reference() -> dict[str, Any]:
    """The models of both reference files; the first one's where both describe a model (the same torchvision figures)."""
    assert REFERENCE.is_file(), f"the torchvision reference is missing: {REFERENCE} (set CNNDSL_REFERENCE)"
    later = json.loads(REFERENCE_V2.read_text(encoding="utf-8"))["models"]
    return {**later, **json.loads(REFERENCE.read_text(encoding="utf-8"))["models"]}


@cache
def load(stem: str) -> cnndsl.Network:
    return cnndsl.load(ARCHITECTURES / f"{stem}.cnn")


def tensor_shapes(layer: Any) -> list[tuple[int, ...]]:
    """The state_dict tensor shapes one leaf layer owns, as PyTorch would create them."""
    kind, args, shape = layer.kind.name, layer.args, layer.in_shape
    if kind == "Conv":
        kh, kw = args["kernel"]
        out = [(args["out"], shape[0] // args["groups"], kh, kw)]
        return out + [(args["out"],)] if args["bias"] else out
    if kind == "ConvTranspose":  # nn.ConvTranspose2d's weight is (in, out/groups, kh, kw)
        kh, kw = args["kernel"]
        out = [(shape[0], args["out"] // args["groups"], kh, kw)]
        return out + [(args["out"],)] if args["bias"] else out
    if kind == "DWConv":
        kh, kw = args["kernel"]
        channels = shape[0] * args["multiplier"]
        out = [(channels, 1, kh, kw)]
        return out + [(channels,)] if args["bias"] else out
    if kind == "FC":
        out = [(args["out"], shape[0])]
        return out + [(args["out"],)] if args["bias"] else out
    if kind == "PointwiseFC":  # nn.Linear's weight, over the channels
        out = [(args["out"], shape[0])]
        return out + [(args["out"],)] if args["bias"] else out
    if kind == "BatchNorm":
        # weight, bias, running_mean, running_var, num_batches_tracked (a scalar)
        return [(shape[0],)] * 4 + [()]
    if kind == "LayerNorm":
        return [(shape[0],)] * 2 if args["elementwise_affine"] else []
    if kind == "Scale":  # torchvision's CNBlock.layer_scale
        return [(shape[0], 1, 1)]
    return []


def leaf_shape(recorded: list[Any]) -> tuple[int, ...]:
    """A leaf module's output shape without the batch: the first reference file records one shape, the later one a list."""
    (shape,) = recorded if recorded and isinstance(recorded[0], list) else [recorded]
    return tuple(shape[1:])


def weighted_leaves(net: cnndsl.Network) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (WEIGHTED_KINDS[layer.kind.name], tuple(layer.out_shape)) for layer in net.layers if layer.kind.name in WEIGHTED_KINDS
    ]


def header(stem: str) -> str:
    lines = (ARCHITECTURES / f"{stem}.cnn").read_text(encoding="utf-8").splitlines()
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line)
    return "\n".join(comment)


# -- the zoo is complete and every file is tested ---------------------------------------


def test_every_architecture_file_is_tested() -> None:
    stems = {path.stem for path in ARCHITECTURES.glob("*.cnn")}
    assert stems == set(ZOO) | set(ZOO_V2) | LECTURE | V2, (
        "add new architectures/*.cnn files to ZOO, ZOO_V2 (or LECTURE) in this test"
    )


def test_every_zoo_entry_has_a_reference() -> None:
    assert set(ZOO.values()) <= set(reference())


# -- each model against torchvision ---------------------------------------------------


@pytest.mark.parametrize("stem", sorted(ZOO))
def test_counts_match_torchvision(stem: str) -> None:
    net, ref = load(stem), reference()[ZOO[stem]]
    assert net.params == ref["params"]
    assert net.buffers == ref["buffers"]
    assert list(net.input_shape) == ref["input"][1:]
    assert [list(net.output_shape)] == [shape[1:] for shape in ref.get("outputs", [ref.get("output")])]
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate of convolutions and matmuls.
    assert net.macs * 2 == ref["flops"]


@pytest.mark.parametrize("stem", sorted(ZOO))
def test_weighted_layers_match_torchvision_in_order(stem: str) -> None:
    net, ref = load(stem), reference()[ZOO[stem]]
    expected = [(TORCH_KINDS[kind], leaf_shape(shape)) for _, kind, shape in ref["leaf_outputs"] if kind in TORCH_KINDS]
    assert weighted_leaves(net) == expected


@pytest.mark.parametrize("stem", sorted(ZOO))
def test_tensor_shapes_match_torchvision_state_dict(stem: str) -> None:
    net, ref = load(stem), reference()[ZOO[stem]]
    ours = sorted(shape for layer in net.layers for shape in tensor_shapes(layer))
    theirs = sorted(tuple(shape) for shape in ref["param_shapes"].values())
    assert ours == theirs


@pytest.mark.parametrize("stem", sorted(ZOO))
def test_tensor_shapes_account_for_every_count(stem: str) -> None:
    """The helper above must see every parameter and buffer the checker counts, layer by layer."""
    for layer in load(stem).layers:
        assert sum(math.prod(shape) for shape in tensor_shapes(layer)) == layer.params + layer.buffers, layer.path


@pytest.mark.parametrize("stem", sorted(ZOO) + sorted(ZOO_V2))
def test_header_cites_paper_and_parameter_count(stem: str) -> None:
    text = header(stem)
    assert text.startswith(f"# {stem}.cnn — ")
    assert re.search(r"\b(19|20)\d\d\b", text), "cite the paper's year"
    params = reference()[ZOO[stem]]["params"] if stem in ZOO else reference_v2()[ZOO_V2[stem]]["params"]
    assert f"{params:,}" in text


# -- the next wave, against architectures_v2.json: every leaf's path and output shape ----


@cache
def reference_v2() -> dict[str, Any]:
    return json.loads(REFERENCE_V2.read_text(encoding="utf-8"))["models"]


def positional_paths(network: cnndsl.Network) -> dict[int, str]:
    """Every node's path (by id) with each unlabelled element of a sequence named by its position, as the
    references' nn.Sequential and ModuleList name theirs (`features.0`, Ultralytics' `model.0`), where cnndsl
    names it by its kind (`features.conv1`, LANGUAGE.md's module names): the trees are compared, not the naming."""
    paths: dict[int, str] = {}
    stack: list[tuple[Node, str]] = [(network.root, "")]
    while stack:
        node, path = stack.pop()
        paths[id(node)] = path
        if isinstance(node, Parallel):
            paths[id(node.merge)] = path
        children = node.branches if isinstance(node, Parallel) else node.children if isinstance(node, Sequence) else []
        for index, child in enumerate(children):
            name = child.name if child.label is not None or child.name.isdigit() else str(index)
            stack.append((child, f"{path}.{name}" if path else name))
    return paths


def renamed(path: str, renames: dict[str, str]) -> str:
    """`path` with its longest prefix (whole components) that `renames` lists replaced."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in renames:
            return ".".join([renames[prefix], *parts[end:]])
    return path


@pytest.mark.parametrize("stem", sorted(set(ZOO_V2) - DETECTION))
def test_v2_counts_match_the_reference(stem: str) -> None:
    net, ref = load(stem), reference_v2()[ZOO_V2[stem]]
    assert (net.params, net.trainable_params, net.buffers) == (ref["params"], ref["trainable"], ref["buffers"])
    assert [1, *net.input_shape] == ref["input"] and [[1, *net.output_shape]] == ref["outputs"]
    assert net.macs * 2 == ref["flops"]


LEAVES_BY_SHAPE = {"convnext"}
"""Networks whose leaves are compared by kind and shape, not path (below): torchvision's modules have no cnndsl counterpart one to one."""


@pytest.mark.parametrize("stem", sorted(set(ZOO_V2) - DETECTION - LEAVES_BY_SHAPE))
def test_v2_leaf_outputs_and_tensor_shapes_match_the_reference(stem: str) -> None:
    net, ref = load(stem), reference_v2()[ZOO_V2[stem]]
    if stem in V2_MODULE_LEAVES:
        theirs = [(TORCH_LEAF_KINDS[kind], shapes) for _, kind, shapes in ref["leaf_outputs"]]
        kinds = {kind for kind, _ in theirs}
        assert [(layer.kind.name, [[1, *layer.out_shape]]) for layer in net.layers if layer.kind.name in kinds] == theirs
    else:
        # A merge is torch.cat or +, not a module: PyTorch records no leaf for it.
        leaves = [layer for layer in net.layers if not isinstance(layer.kind, MergeKind)]
        positions = positional_paths(net)
        assert [(positions[id(layer)], layer.kind.name, [[1, *layer.out_shape]]) for layer in leaves] == [
            (renamed(path, RENAMED_V2.get(stem, {})), kind.removesuffix("2d"), shapes)
            for path, kind, shapes in ref["leaf_outputs"]
        ]
    ours = sorted(shape for layer in net.layers for shape in tensor_shapes(layer))
    assert ours == sorted(tuple(shape) for shape in ref["param_shapes"].values())


# -- several reference models from one file: EfficientNet B0-B7 by `--set` and `--input` ---


EFFICIENTNET = {"width": 1.0, "depth": 1.0, "dropout": 0.2}
EFFICIENTNET_B5_B7_NORM = {"bn_eps": 0.001, "bn_momentum": 0.01}  # torchvision's norm_layer for B5, B6 and B7
VARIANTS: dict[str, tuple[str, dict[str, float]]] = {
    "efficientnet_b0": ("efficientnet", {}),
    "efficientnet_b1": ("efficientnet", {"width": 1.0, "depth": 1.1, "dropout": 0.2}),
    "efficientnet_b2": ("efficientnet", {"width": 1.1, "depth": 1.2, "dropout": 0.3}),
    "efficientnet_b3": ("efficientnet", {"width": 1.2, "depth": 1.4, "dropout": 0.3}),
    "efficientnet_b4": ("efficientnet", {"width": 1.4, "depth": 1.8, "dropout": 0.4}),
    "efficientnet_b5": ("efficientnet", {"width": 1.6, "depth": 2.2, "dropout": 0.4, **EFFICIENTNET_B5_B7_NORM}),
    "efficientnet_b6": ("efficientnet", {"width": 1.8, "depth": 2.6, "dropout": 0.5, **EFFICIENTNET_B5_B7_NORM}),
    "efficientnet_b7": ("efficientnet", {"width": 2.0, "depth": 3.1, "dropout": 0.5, **EFFICIENTNET_B5_B7_NORM}),
    "mobilenet_v3_large": ("mobilenet_v3_large", {}),
}
"""Model key in architectures_v2.json -> the zoo file and its `--set` values (torchvision's multipliers);
the input size is the reference's, given as `--input` would."""
# torchvision module type of a leaf -> the cnndsl kind that lowers to it, where the names differ.
TORCH_TYPES = {
    "Conv": "Conv2d",
    "DWConv": "Conv2d",
    "BatchNorm": "BatchNorm2d",
    "FC": "Linear",
    "GlobalAvgPool": "AdaptiveAvgPool2d",
}
# Our layers that torchvision computes in forward() instead of with a module: merges (`+=`, the
# gate's `scale * input`), the flatten, and the identity branch of a residual.
FUNCTIONAL_KINDS = {"Add", "Mul", "Flatten", "Identity"}


def load_variant(key: str) -> cnndsl.Network:
    stem, settings = VARIANTS[key]
    return cnndsl.load(ARCHITECTURES / f"{stem}.cnn", input=tuple(reference_v2()[key]["input"][1:]), **settings)


def test_every_efficientnet_of_the_reference_is_a_variant() -> None:
    assert {key for key in reference_v2() if re.fullmatch(r"efficientnet_b\d", key)} <= set(VARIANTS)


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variant_counts_match_the_reference(key: str) -> None:
    net, ref = load_variant(key), reference_v2()[key]
    assert (net.params, net.trainable_params, net.buffers) == (ref["params"], ref["trainable"], ref["buffers"])
    assert [[1, *net.output_shape]] == ref["outputs"]
    assert net.macs * 2 == ref["flops"]
    assert not net.diagnostics
    assert f"{ref['params']:,}" in header(VARIANTS[key][0]), "the file's header lists each member's parameter count"


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variant_leaf_outputs_and_tensor_shapes_match_the_reference(key: str) -> None:
    """Every leaf module's type and output shape in execution order, and every state_dict shape.

    The module paths differ: torchvision names a block's layers `block`, a keyword of the language."""
    net, ref = load_variant(key), reference_v2()[key]
    ours = [
        (TORCH_TYPES.get(layer.kind.name, layer.kind.name), [[1, *layer.out_shape]])
        for layer in net.layers
        if layer.kind.name not in FUNCTIONAL_KINDS
    ]
    assert ours == [(kind, shapes) for _, kind, shapes in ref["leaf_outputs"]]
    tensors = sorted(shape for layer in net.layers for shape in tensor_shapes(layer))
    assert tensors == sorted(tuple(shape) for shape in ref["param_shapes"].values())


def _torchvision_make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision.models._utils._make_divisible, written out (min_value = divisor)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


# torchvision's _efficientnet_conf for B0-B7: stride, input and output channels, repeats of each stage.
EFFICIENTNET_STAGES = [
    (1, 32, 16, 1),
    (2, 16, 24, 2),
    (2, 24, 40, 2),
    (2, 40, 80, 3),
    (1, 80, 112, 3),
    (2, 112, 192, 4),
    (1, 192, 320, 1),
]


@pytest.mark.parametrize("key", [key for key in sorted(VARIANTS) if key.startswith("efficientnet")])
def test_efficientnet_stochastic_depth_rises_as_torchvisions(key: str) -> None:
    """EfficientNet's loop: block j of all `total` drops at 0.2 * j / total; only residual blocks call it."""
    settings = {**EFFICIENTNET, **VARIANTS[key][1]}
    stages = [
        (stride, _torchvision_make_divisible(cin * settings["width"]), _torchvision_make_divisible(cout * settings["width"]))
        for stride, cin, cout, _ in EFFICIENTNET_STAGES
    ]
    repeats = [math.ceil(n * settings["depth"]) for *_, n in EFFICIENTNET_STAGES]
    total, block, expected = sum(repeats), 0, []
    for (stride, cin, cout), n in zip(stages, repeats, strict=True):
        for first in [True] + [False] * (n - 1):
            if not first or (stride == 1 and cin == cout):
                expected.append(0.2 * float(block) / total)
            block += 1
    net = load_variant(key)
    rates = [layer.args["p"] for layer in net.layers if layer.kind.name == "StochasticDepth"]
    assert rates == expected and len(rates) == total - len(EFFICIENTNET_STAGES)
    assert {layer.args["p"] for layer in net.layers if layer.kind.name == "Dropout"} == {settings["dropout"]}


# -- YOLOv8 against Ultralytics: architectures_v2.json's yolov8n ... yolov8x, recorded in train mode -------

YOLOV8_SCALES = {
    "yolov8n": {},
    "yolov8s": {"depth": 0.33, "width": 0.50, "max_channels": 1024},
    "yolov8m": {"depth": 0.67, "width": 0.75, "max_channels": 768},
    "yolov8l": {"depth": 1.00, "width": 1.00, "max_channels": 512},
    "yolov8x": {"depth": 1.00, "width": 1.25, "max_channels": 512},
}
"""Reference key -> `--set` values of yolov8.cnn (the scales of Ultralytics' yolov8.yaml; n is the file's default)."""
YOLOV8_DFL = "model.22.dfl.conv.weight"
"""The DFL decoder's 16 fixed weights (no gradient): they decode boxes outside the training graph, and are not in the file."""
YOLOV8_LABELS = {"c3": 4, "c4": 6, "c5": 9, "p4": 12, "p3": 15, "n4": 18, "n5": 21}
"""The file's labels -> the YAML's layer index (an unlabelled top-level element's path is already its index)."""
YOLO_TORCH_TYPES = {"Conv": "Conv2d", "BatchNorm": "BatchNorm2d", "SiLU": "SiLU", "MaxPool": "MaxPool2d", "Upsample": "Upsample"}


def ultralytics_path(layer: Any, path: str) -> str | None:
    """Our leaf's module path in Ultralytics' DetectionModel, from its positional path (`positional_paths`); None where
    Ultralytics computes it in a forward, without a module."""
    kind = layer.kind.name
    top, _, rest = path.partition(".")
    if kind == "SiLU":
        return "model.0.act"  # Conv.default_act: one SiLU module shared by every Conv, named after its first owner
    if kind in ("Chunk", "Add", "Identity") or (kind == "Concat" and not path.isdigit()):
        return None  # C2f's chunk, Bottleneck's sum, the concatenations of C2f, SPPF and Detect
    head = re.fullmatch(r"(box|cls)([345])", top)
    prefix = (
        f"model.22.{'cv2' if head[1] == 'box' else 'cv3'}.{int(head[2]) - 3}" if head else f"model.{YOLOV8_LABELS.get(top, top)}"
    )
    rest = "m" if kind == "MaxPool" else re.sub(r"^m\.(\d+)\.0\.0\.", r"m.\1.", rest)  # SPPF's one pool; Add's main branch
    return f"{prefix}.{rest}" if rest else prefix


@cache
def yolov8(scale: str) -> cnndsl.Network:
    return cnndsl.load(ARCHITECTURES / "yolov8.cnn", **YOLOV8_SCALES[scale])


@pytest.mark.parametrize("scale", sorted(YOLOV8_SCALES))
def test_yolov8_counts_and_outputs_match_ultralytics(scale: str) -> None:
    net, ref = yolov8(scale), reference_v2()[scale]
    assert net.params == net.trainable_params == ref["trainable"]
    assert ref["params"] - ref["trainable"] == math.prod(ref["param_shapes"][YOLOV8_DFL]) == 16
    assert net.buffers == ref["buffers"]
    assert [1, *net.input_shape] == ref["input"] and net.macs * 2 == ref["flops"]
    # Our outputs: one [box, class] map per level at strides 8, 16, 32. Ultralytics' train-mode outputs: the box and
    # class parts flattened and concatenated over the levels, then Detect's inputs (the neck's outputs).
    side = ref["input"][-1]
    assert [tuple(shape) for shape in net.output_shapes] == [(64 + 80, side // s, side // s) for s in (8, 16, 32)]
    anchors = sum(h * w for _, h, w in net.output_shapes)
    boxes, scores, *features = ref["outputs"]
    assert (boxes, scores) == ([1, 64, anchors], [1, 80, anchors])
    necks = {layer.path: layer.out_shape for layer in net.layers}
    assert [[1, *necks[f"{label}.cv2.act"]] for label in ("p3", "n4", "n5")] == features


@pytest.mark.parametrize("scale", sorted(YOLOV8_SCALES))
def test_yolov8_leaf_outputs_and_tensor_shapes_match_ultralytics(scale: str) -> None:
    net, ref = yolov8(scale), reference_v2()[scale]
    positions = positional_paths(net)
    ours = [
        (path, YOLO_TORCH_TYPES.get(layer.kind.name, layer.kind.name), [[1, *layer.out_shape]])
        for layer in net.layers
        if (path := ultralytics_path(layer, positions[id(layer)])) is not None
    ]
    assert ours == [tuple(leaf) for leaf in ref["leaf_outputs"]]
    theirs = sorted(tuple(shape) for key, shape in ref["param_shapes"].items() if key != YOLOV8_DFL)
    assert sorted(shape for layer in net.layers for shape in tensor_shapes(layer)) == theirs


def test_yolov8_class_count_is_a_parameter() -> None:
    """nc sets the class branch's output and, below 100 classes, its width: max(P3 channels, min(nc, 100))."""
    net = cnndsl.load(ARCHITECTURES / "yolov8.cnn", nc=20)
    assert [tuple(shape) for shape in net.output_shapes] == [(64 + 20, 640 // s, 640 // s) for s in (8, 16, 32)]
    widths = {layer.path: layer.out_shape[0] for layer in net.layers if layer.kind.name == "Conv"}
    assert (widths["cls3.cbs1.conv"], widths["cls3.conv"], widths["box3.cbs1.conv"]) == (64, 20, 64)


@pytest.mark.parametrize("stem", sorted(ZOO) + sorted(ZOO_V2))
def test_zoo_files_check_cleanly(stem: str) -> None:
    net = load(stem)
    assert not [d for d in net.diagnostics if d.severity == "error"]
    assert len(net.warnings) == EXPECTED_WARNINGS.get(stem, 0), [d.message for d in net.warnings]


@pytest.mark.parametrize("stem", ["squeezenet1_0", "squeezenet1_1"])
def test_squeezenet_stem_warning_is_the_real_one(stem: str) -> None:
    (warning,) = load(stem).warnings
    assert "doesn't fit" in warning.message
    assert "last 1 input rows and columns unread" in warning.message


# -- network parameters ------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["resnet18", "mobilenet_v3_small", "densenet121", "squeezenet1_0"])
def test_num_classes_override(stem: str) -> None:
    default, ten = load(stem), cnndsl.load(ARCHITECTURES / f"{stem}.cnn", num_classes=10)
    assert list(ten.output_shape) == [10]
    last = [layer for layer in default.layers if layer.kind.name in ("FC", "Conv")][-1]
    fan_in = last.params // last.args["out"] - 1  # weights per output plus its bias
    assert default.params - ten.params == (1000 - 10) * (fan_in + 1)


def test_resnext_groups_are_parameters() -> None:
    net = cnndsl.load(ARCHITECTURES / "resnext50_32x4d.cnn", groups=64, width_per_group=4)
    grouped = [layer for layer in net.layers if layer.kind.name == "Conv" and layer.args["groups"] != 1]
    assert {layer.args["groups"] for layer in grouped} == {64}
    # width = c * 4 / 64 * 64 = 4c: 256 on the first stage
    assert grouped[0].out_shape[0] == 256


def test_googlenet_batch_norm_eps() -> None:
    bns = [layer for layer in load("googlenet").layers if layer.kind.name == "BatchNorm"]
    assert bns and all(layer.args["eps"] == 0.001 for layer in bns)


# -- the lecture's examples ---------------------------------------------------------------


def test_classic_lecture_pattern() -> None:
    net = load("classic")
    assert list(net.output_shape) == [10]
    # Conv 3->32, 3x3:  32 * 3 * 9 + 32   =     896   (32x32x32, pooled to 32x16x16)
    # Conv 32->32, 3x3: 32 * 32 * 9 + 32  =   9,248   (32x16x16, pooled to 32x8x8)
    # FC 2048->128:     2048 * 128 + 128  = 262,272   (flatten: 32 * 8 * 8 = 2048)
    # FC 128->128:      128 * 128 + 128   =  16,512
    # FC 128->10:       128 * 10 + 10     =   1,290
    #                                total  290,218
    assert net.params == 290_218
    assert net.buffers == 0
    assert [(layer.kind.name, tuple(layer.out_shape)) for layer in net.layers] == [
        ("Conv", (32, 32, 32)), ("ReLU", (32, 32, 32)), ("MaxPool", (32, 16, 16)),
        ("Conv", (32, 16, 16)), ("ReLU", (32, 16, 16)), ("MaxPool", (32, 8, 8)),
        ("Flatten", (2048,)),
        ("FC", (128,)), ("ReLU", (128,)),
        ("FC", (128,)), ("ReLU", (128,)),
        ("FC", (10,)),
    ]  # fmt: skip
    assert "290,218" in header("classic")


def test_lecture_conv_760_parameters() -> None:
    net = load("lecture_conv760")
    # 10 filters of 5 x 5 x 3 weights, plus one bias each: 10 * (75 + 1) = 760
    assert net.params == 760
    (conv,) = net.layers
    assert conv.kind.name == "Conv"
    assert tuple(conv.out_shape) == (10, 28, 28)  # (32 - 5)/1 + 1 = 28
    assert tensor_shapes(conv) == [(10, 3, 5, 5), (10,)]
    assert "760" in header("lecture_conv760")


def test_lenet5_classic_layout() -> None:
    net = load("lenet5")
    assert [(layer.kind.name, tuple(layer.out_shape)) for layer in net.layers if layer.kind.name != "Tanh"] == [
        ("Conv", (6, 28, 28)), ("AvgPool", (6, 14, 14)),
        ("Conv", (16, 10, 10)), ("AvgPool", (16, 5, 5)),
        ("Conv", (120, 1, 1)),
        ("Flatten", (120,)), ("FC", (84,)), ("FC", (10,)),
    ]  # fmt: skip


def test_labels_name_the_torchvision_modules() -> None:
    """Labels make the top-level module names the ones torchvision uses."""
    tops = {stem: Counter(layer.path.split(".")[0] for layer in load(stem).layers) for stem in ("resnet50", "densenet121")}
    assert {"stem", "layer1", "layer2", "layer3", "layer4", "fc"} <= set(tops["resnet50"])
    assert {"features", "classifier"} <= set(tops["densenet121"])
    dense = {layer.path.split(".")[1] for layer in load("densenet121").layers if layer.path.startswith("features.")}
    assert {f"denseblock{i}" for i in range(1, 5)} | {f"transition{i}" for i in range(1, 4)} <= dense


# -- GoogLeNet's auxiliary classifiers (issue 14): `--set aux=true` is torchvision's aux_logits=True --


def googlenet_aux() -> cnndsl.Network:
    return cnndsl.load(ARCHITECTURES / "googlenet.cnn", aux=True)


def test_googlenet_aux_counts_and_state_dict_match_the_reference() -> None:
    net, ref = googlenet_aux(), reference_v2()["googlenet_aux"]
    assert (net.params, net.trainable_params, net.buffers) == (ref["params"], ref["trainable"], ref["buffers"])
    ours = sorted(shape for layer in net.layers for shape in tensor_shapes(layer))
    assert ours == sorted(tuple(shape) for shape in ref["param_shapes"].values())
    for layer in net.layers:
        assert sum(math.prod(shape) for shape in tensor_shapes(layer)) == layer.params + layer.buffers, layer.path


def test_googlenet_aux_outputs_are_torchvisions_in_its_order() -> None:
    """(logits, aux2, aux1), as GoogLeNetOutputs; the heads read inception 4d and 4a."""
    net = googlenet_aux()
    assert net.output_names == ["fc", "aux2", "aux1"]
    assert [tuple(shape) for shape in net.output_shapes] == [(1000,)] * 3
    heads = {name: [layer for layer in net.layers if layer.path.startswith(f"{name}.")] for name in ("aux1", "aux2")}
    assert [layer.in_shape[0] for layer in heads["aux1"] if layer.kind.name == "Conv"] == [512]  # inception4a's output
    assert [layer.in_shape[0] for layer in heads["aux2"] if layer.kind.name == "Conv"] == [528]  # inception4d's output
    for layers in heads.values():
        assert [(layer.kind.name, tuple(layer.out_shape)) for layer in layers] == [
            ("AdaptiveAvgPool", (layers[0].in_shape[0], 4, 4)), ("Conv", (128, 4, 4)), ("BatchNorm", (128, 4, 4)),
            ("ReLU", (128, 4, 4)), ("Flatten", (2048,)), ("FC", (1024,)), ("ReLU", (1024,)), ("Dropout", (1024,)),
            ("FC", (1000,)),
        ]  # fmt: skip
        assert [layer.args["p"] for layer in layers if layer.kind.name == "Dropout"] == [0.7]


def test_googlenet_aux_main_path_is_the_evaluated_reference() -> None:
    """The reference's leaf outputs are recorded in eval, where torchvision skips the heads: without them, every layer agrees;
    the FLOPs are the reference's plus the heads'."""
    net, ref = googlenet_aux(), reference_v2()["googlenet_aux"]
    main = [layer for layer in net.layers if not layer.path.startswith(("aux1.", "aux2."))]
    expected = [(TORCH_KINDS[kind], leaf_shape(shape)) for _, kind, shape in ref["leaf_outputs"] if kind in TORCH_KINDS]
    assert [
        (WEIGHTED_KINDS[layer.kind.name], tuple(layer.out_shape)) for layer in main if layer.kind.name in WEIGHTED_KINDS
    ] == expected
    heads = sum(layer.macs for layer in net.layers if layer.path.startswith(("aux1.", "aux2.")))
    assert heads > 0 and (net.macs - heads) * 2 == ref["flops"]


def test_googlenet_without_aux_is_unchanged_and_names_a_misspelt_output() -> None:
    """aux=false (the default) has no trace of the heads; the output line's names are checked whatever `aux` is."""
    plain_net = load("googlenet")
    assert plain_net.output_names == ["fc"] and plain_net.params == reference()["googlenet"]["params"]
    assert not [layer for layer in plain_net.layers if layer.path.startswith("aux")]
    source = (ARCHITECTURES / "googlenet.cnn").read_text(encoding="utf-8").replace("aux1 if aux", "aux3 if aux")
    _, diagnostics = cnndsl.check_source(source, "googlenet.cnn")
    assert [d.message for d in diagnostics] == ["unknown label `aux3` in `output aux3`"]


# -- ConvNeXt (issue 15): T by default, S, B and L by `--set`, against torchvision's convnext_* --

CONVNEXT_SIZES: dict[str, dict[str, int]] = {
    "convnext_tiny": {},
    "convnext_small": {"stage3": 27},
    "convnext_base": {"width": 128, "stage3": 27},
    "convnext_large": {"width": 192, "stage3": 27},
}
CONVNEXT_KINDS = {
    "Conv2d": "Conv",
    "LayerNorm2d": "LayerNorm",
    "LayerNorm": "LayerNorm",
    "GELU": "GELU",
    "StochasticDepth": "StochasticDepth",
    "AdaptiveAvgPool2d": "GlobalAvgPool",
    "Flatten": "Flatten",
    "Linear": "FC",
}


def convnext(key: str) -> cnndsl.Network:
    return cnndsl.load(ARCHITECTURES / "convnext.cnn", **CONVNEXT_SIZES[key])


def convnext_reference_leaves(ref: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's leaves as cnndsl writes the network: its Permute modules left out (LayerNorm and PointwiseFC
    permute inside), the channels-last shapes between two Permutes back to C x H x W, a Linear there a PointwiseFC."""
    leaves, channels_last = [], False
    for _, kind, shapes in ref["leaf_outputs"]:
        if kind == "Permute":
            channels_last = not channels_last
            continue
        shape = leaf_shape(shapes)
        if channels_last:
            shape = (shape[-1], *shape[:-1])
        leaves.append(("PointwiseFC" if kind == "Linear" and channels_last else CONVNEXT_KINDS.get(kind, kind), shape))
    return leaves


@pytest.mark.parametrize("key", sorted(CONVNEXT_SIZES))
def test_convnext_counts_and_state_dict_match_torchvision(key: str) -> None:
    net, ref = convnext(key), reference_v2()[key]
    assert (net.params, net.trainable_params, net.buffers) == (ref["params"], ref["trainable"], ref["buffers"])
    assert [1, *net.input_shape] == ref["input"] and [[1, *net.output_shape]] == ref["outputs"]
    assert net.macs * 2 == ref["flops"]
    ours = sorted(shape for layer in net.layers for shape in tensor_shapes(layer))
    assert ours == sorted(tuple(shape) for shape in ref["param_shapes"].values())
    for layer in net.layers:
        assert sum(math.prod(shape) for shape in tensor_shapes(layer)) == layer.params + layer.buffers, layer.path


@pytest.mark.parametrize("key", sorted(CONVNEXT_SIZES))
def test_convnext_every_layer_matches_torchvision(key: str) -> None:
    """Every leaf in order, kind and output shape; the layer scale (a parameter of torchvision's CNBlock, not a
    module) and the residual (`result += input`: an Identity branch and the Add) are the cnndsl layers without a
    torchvision leaf."""
    net = convnext(key)
    ours = [
        ("Conv" if layer.kind.name == "DWConv" else layer.kind.name, tuple(layer.out_shape))
        for layer in net.layers
        if layer.kind.name not in ("Scale", "Identity", "Add")
    ]
    assert ours == convnext_reference_leaves(reference_v2()[key])
    blocks = [layer for layer in net.layers if layer.kind.name == "Add"]
    assert len(blocks) == [layer.kind.name for layer in net.layers].count("Scale") == 9 + CONVNEXT_SIZES[key].get("stage3", 9)
    assert all(layer.args["eps"] == 1e-6 for layer in net.layers if layer.kind.name == "LayerNorm")


@pytest.mark.parametrize(
    ("key", "top"), [("convnext_tiny", 0.1), ("convnext_small", 0.4), ("convnext_base", 0.5), ("convnext_large", 0.5)]
)
def test_convnext_stochastic_depth_rises_as_torchvision(key: str, top: float) -> None:
    """torchvision: block j of n drops its residual branch with probability `stochastic_depth_prob * j / (n - 1)`."""
    rates = [layer.args["p"] for layer in convnext(key).layers if layer.kind.name == "StochasticDepth"]
    assert rates == [top * j / (len(rates) - 1.0) for j in range(len(rates))]
    assert all(layer.args["mode"] == "row" for layer in convnext(key).layers if layer.kind.name == "StochasticDepth")
