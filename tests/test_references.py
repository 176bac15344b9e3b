"""References to earlier tensors (`@name`, `@input`, `@name*`) and the `output` line: the checker's
scoping, the IR's data flow, and every backend following it (NumPy against torch in float64,
forward and gradients; generated source; summary, JSON, drawing, ONNX)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnndsl
from cnndsl.ir import Reference, walk

torch = pytest.importorskip("torch")

UNET = """network Skips(width=4)
input 3x16x16
output head, e2
e1: [Conv(width, 3, pad=1), BN, ReLU]
MaxPool(2)
e2: [Conv(2 * width, 3, pad=1), BN, ReLU]
MaxPool(2)
Conv(2 * width, 3, pad=1), ReLU
Concat[@e2, MaxPool(2) | Identity]
Add[@e1, AvgPool(4), Conv(4 * width, 1) | Identity]
head: Conv(2, 1)
"""

C2F = """network C2f(n=2)
input 16x6x6
block Bottleneck(c) = Add[Conv(c, 3, pad=1), BN, SiLU, Conv(c, 3, pad=1), BN, SiLU | Identity]
stem: [Conv(16, 1), BN, SiLU]
a: Chunk(2, 0)
@stem, b: Chunk(2, 1)
m: Bottleneck(8) x n
Concat[@a | @b | @m*]
Conv(16, 1), BN, SiLU
"""

# ReLU right after a referenced Conv: computed in place, it would overwrite the tensor that
# the Add reads again (the Conv's output is a fresh tensor, which in a chain may be reused).
INPLACE_TRAP = "input 3x6x6\nc: Conv(4, 1), ReLU, Add[@c | Identity], ReLU\n"

# A tensor read four times (two references, the chain, an output): its gradient is the sum.
READ_TWICE = "input 2x5x5\noutput s, t\ns: Conv(3, 3, pad=1)\nt: Add[@s, Tanh | Identity]\nMul[@s | Sigmoid]\n"

# A block's @input: a residual unit written with a reference.
RESIDUAL_BLOCK = """input 4x6x6
block Unit(c) = [Conv(c, 3, pad=1), BN, ReLU, Add[@input | Identity]]
Unit(4) x 2
"""

# What precedes `@input, ...` at top level is read by nothing: its parameters get zero gradients.
DEAD = "input 3x5x5\nConv(4, 1), @input, Conv(2, 3)\n"

# Upsample(like=@name): to the size of the block call's input, of a label, of the network's input.
LIKE = """input 3x12x10
block Down = [Conv(4, 3, stride=2, pad=1), ReLU, Upsample(like=@input, mode=bilinear)]
s: [Conv(4, 3, stride=2, pad=1), BN, ReLU]
Down
Conv(6, 3, stride=2, pad=1)
Upsample(like=@s)
Upsample(like=@input, mode=bilinear, align_corners=true)
"""

NETWORKS = {
    "unet": UNET,
    "c2f": C2F,
    "inplace": INPLACE_TRAP,
    "read_twice": READ_TWICE,
    "block": RESIDUAL_BLOCK,
    "dead": DEAD,
    "like": LIKE,
}


def as_tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def twins(net: cnndsl.Network) -> tuple[Any, Any]:
    module = net.to_torch(seed=3).double()
    model = net.to_numpy({k: v.detach().numpy() for k, v in module.state_dict().items()}, dtype="float64")
    return module, model


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("train", [False, True])
def test_numpy_and_torch_agree_forward_and_float64_gradients(name: str, train: bool) -> None:
    net = cnndsl.parse(NETWORKS[name])
    module, model = twins(net)
    module.train(train)
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape))
    x_t = torch.tensor(x, requires_grad=True)
    ys_t = as_tuple(module(x_t))
    ys = as_tuple(model.forward(x, train=train, grad=True))
    assert [y.shape[1:] for y in ys] == [tuple(s) for s in net.output_shapes]
    for y, y_t in zip(ys, ys_t, strict=True):
        np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dys = [np.random.default_rng(1 + i).standard_normal(y.shape) for i, y in enumerate(ys)]
    torch.autograd.backward(list(ys_t), [torch.from_numpy(dy) for dy in dys])
    dx, grads = model.backward(dys if len(dys) > 1 else dys[0])
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-9, atol=1e-12)
    for key, parameter in module.named_parameters():
        expected = parameter.grad.numpy() if parameter.grad is not None else np.zeros(parameter.shape)
        np.testing.assert_allclose(grads[key], expected, rtol=1e-9, atol=1e-12, err_msg=key)


def test_dead_layers_get_zero_gradients_and_the_output_restarts_from_the_input() -> None:
    net = cnndsl.parse(DEAD)
    _, model = twins(net)
    model.forward(np.ones((1, 3, 5, 5)), grad=True)
    _, grads = model.backward(np.ones((1, 2, 3, 3)))
    assert not grads["conv1.weight"].any() and grads["conv2.weight"].any()


def test_a_referenced_tensor_is_never_overwritten_in_place() -> None:
    net = cnndsl.parse(INPLACE_TRAP)
    module = net.to_torch(seed=0)
    assert module.relu1.inplace is False  # the ReLU after the referenced Conv
    assert module.relu2.inplace is True  # after the merge: nothing reads its input again


def test_scoping_current_iteration_then_last_and_block_input() -> None:
    net = cnndsl.parse("input 4x6x6\nr: [a: Conv(4, 3, pad=1), Add[@a | Identity]] x 3\nConcat[@a | Identity]\n")
    refs = [node for node, _ in walk(net.root) if isinstance(node, Reference)]
    # Inside the repetition each iteration reads its own `a`; after it, `@a` is the last iteration's.
    assert [(ref.path, ref.source.path) for ref in refs] == [
        ("r.0.add.0.ref", "r.0.a"),
        ("r.1.add.0.ref", "r.1.a"),
        ("r.2.add.0.ref", "r.2.a"),
        ("concat.0.ref", "r.2.a"),
    ]
    net = cnndsl.parse(RESIDUAL_BLOCK)
    refs = [node for node, _ in walk(net.root) if isinstance(node, Reference)]
    assert [(ref.of_input, ref.source.path) for ref in refs] == [(True, "blocks.0"), (True, "blocks.1")]  # each call's input


def test_the_data_flow_names_what_every_step_reads() -> None:
    net = cnndsl.parse(UNET)
    reads = {layer["path"]: layer["reads"] for layer in net.to_json()["layers"]}
    assert reads["concat.0.maxpool"] == ["e2.relu"]  # the MaxPool after @e2 reads e2's last layer
    assert reads["concat.1.identity"] == ["relu"]  # the Identity branch reads the current input, the ReLU's output
    assert reads["concat"] == ["concat.0.maxpool", "concat.1.identity"]  # Concat: the skip branch first
    assert reads["add.0.avgpool"] == ["e1.relu"]
    assert reads["e1.conv"] == ["input"]
    assert net.to_json()["outputs"] == [{"name": "head", "shape": [2, 4, 4]}, {"name": "e2", "shape": [8, 8, 8]}]


def test_every_iteration_follows_the_parameter() -> None:
    for n in (1, 2, 4):
        net = cnndsl.parse(C2F, n=n)
        concat = net.root.children[5]
        assert len(concat.branches) == 2 + n
        assert concat.out_shape == (8 * (2 + n), 6, 6)
        sources = [branch.children[0].source.path for branch in concat.branches[2:]]
        assert sources == [f"m.{i}" for i in range(n)]


def test_summary_lists_references_and_outputs() -> None:
    text = str(cnndsl.parse(UNET).summary(depth=None))
    assert "input 3x16x16 -> outputs head 2x4x4, e2 8x8x8" in text
    assert "  concat.0.ref       @e2 " in text
    assert "  concat.0.ref reads @e2: the output of `e2.relu`, 8x8x8" in text
    assert "References" not in str(cnndsl.load(Path(__file__).parent.parent / "architectures" / "lenet5.cnn").summary())


def test_drawing_has_a_dashed_skip_edge_per_reference_and_a_box_per_output() -> None:
    source = cnndsl.parse(UNET).to_dot(expand=True).source
    assert source.count("style=dashed") == 2  # @e2 and @e1
    assert "<b>head</b>" in source and "<b>e2</b>" in source


def load_generated(net: cnndsl.Network, tmp_path: Path) -> Any:
    path = tmp_path / "generated.py"
    path.write_text(net.torch_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("generated", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, net.name)()


def test_upsample_like_reads_the_size_of_its_reference_as_a_data_edge() -> None:
    net = cnndsl.parse(LIKE)
    ups = [layer for layer in net.layers if layer.kind.name == "Upsample"]
    assert [(layer.path, tuple(layer.out_shape), layer.args["size"], layer.args["like"]) for layer in ups] == [
        ("down.upsample", (4, 6, 5), (6, 5), "@input"),
        ("upsample1", (6, 6, 5), (6, 5), "@s"),
        ("upsample2", (6, 12, 10), (12, 10), "@input"),
    ]
    # Each reference's source: the block call, the labelled group, the network (whose input it means).
    assert [(ref.source.path, ref.of_input) for layer in ups for ref in layer.arg_refs.values()] == [
        ("down", True),
        ("s", False),
        ("", True),
    ]
    assert not net.is_graph and net.reads_shapes  # the size is static: no backend reads the tensor at run time
    layers = {layer["path"]: layer for layer in net.to_json()["layers"]}
    assert [(layers[p]["reads"], layers[p]["reads_shape_of"]) for p in ("down.upsample", "upsample1", "upsample2")] == [
        (["down.relu"], ["s.relu"]),  # the block's input is the output of `s`
        (["conv"], ["s.relu"]),
        (["upsample1"], ["input"]),
    ]
    assert layers["conv"]["reads_shape_of"] == []
    text = str(net.summary(depth=None))
    assert "  upsample2 reads the size of like=@input: the network's input, 3x12x10" in text
    assert "  upsample1 reads the size of like=@s: the output of `s.relu`, 4x6x5" in text
    assert "Upsample to 12x10 (like @input) bilinear corners" in text
    source = net.to_dot(expand=True).source
    assert source.count("style=dotted") == 3 and source.count("like: 3×12×10") == 1


def test_upsample_like_follows_the_input_size_it_is_checked_at() -> None:
    net, diagnostics = cnndsl.check_source(LIKE, "like.cnn", (3, 20, 16))
    assert net is not None and not diagnostics
    assert tuple(net.output_shape) == (6, 20, 16)
    module = net.to_torch(seed=0).eval()
    with torch.no_grad():
        assert tuple(module(torch.zeros(1, 3, 20, 16)).shape) == (1, 6, 20, 16)


def test_onnx_upsample_like_resizes_to_a_size() -> None:
    onnx = pytest.importorskip("onnx")
    from cnndsl.compiler import export_onnx

    model = onnx.load_from_string(export_onnx(cnndsl.parse(LIKE), seed=0))
    resizes = [node for node in model.graph.node if node.op_type == "Resize"]
    modes = [{a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING} for node in resizes]
    assert [(m["mode"], m["coordinate_transformation_mode"]) for m in modes] == [
        ("linear", "half_pixel"),
        ("nearest", "asymmetric"),
        ("linear", "align_corners"),
    ]
    # Each Resize takes its output size (the last input), as nn.Upsample(size=...) exports it.
    assert all(node.input[3] for node in resizes)


@pytest.mark.parametrize("name", ["unet", "c2f", "read_twice", "block", "like"])
def test_generated_source_names_its_tensors_and_equals_the_module(name: str, tmp_path: Path) -> None:
    net = cnndsl.parse(NETWORKS[name], "net.cnn")
    module = net.to_torch(seed=1).eval()
    generated = load_generated(net, tmp_path)
    generated.load_state_dict(module.state_dict())
    generated.eval()
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        for a, b in zip(as_tuple(module(x)), as_tuple(generated(x)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    if name == "unet":
        source = net.torch_source()
        assert "        e1 = self.e1(x)  # width x 16 x 16" in source  # comments hold for every width
        assert "        return head, e2" in source


def test_onnx_has_one_output_per_name() -> None:
    onnx = pytest.importorskip("onnx")
    from cnndsl.compiler import export_onnx

    model = onnx.load_from_string(export_onnx(cnndsl.parse(UNET), seed=0))
    assert [output.name for output in model.graph.output] == ["head", "e2"]


def test_numpy_backward_wants_one_gradient_per_output() -> None:
    net = cnndsl.parse(UNET)
    model = net.to_numpy()
    model.forward(np.zeros((1, 3, 16, 16), np.float32), grad=True)
    with pytest.raises(cnndsl.CnnDslError, match="2 outputs: backward needs a sequence"):
        model.backward(np.zeros((1, 2, 4, 4), np.float32))


SEVERAL = "input 3x8x8\noutput logits, s\ns: Conv(4, 3, pad=1)\nGlobalAvgPool, flatten\nlogits: FC(10)\n"


def test_run_shows_the_first_output_and_train_reads_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cnndsl.cli import main

    path = tmp_path / "several.cnn"
    path.write_text(SEVERAL, encoding="utf-8")
    for backend in ("numpy", "torch"):
        result = CliRunner().invoke(main, ["run", str(path), "--backend", backend])
        assert result.exit_code == 0, result.output
        assert "output 1x10" in result.output
    # The loss trains the first output (tests/test_train_outputs.py checks the engines).
    result = CliRunner().invoke(main, ["train", str(path), "--data", "synthetic", "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


HEADS = """network Heads(aux=false)
input 3x16x16
output logits, side if aux
a: [Conv(4, 3, pad=1), ReLU]
side: [GAP, flatten, FC(3)] x (1 if aux else 0)
@a, MaxPool(2), GAP, flatten, logits: FC(5)
"""


@pytest.mark.parametrize("aux", [False, True])
def test_an_output_listed_under_a_condition_follows_the_parameter(aux: bool) -> None:
    """`output logits, side if aux`: a training head behind a boolean parameter (GoogLeNet's auxiliary classifiers)."""
    net = cnndsl.parse(HEADS, aux=aux)
    assert net.output_names == (["logits", "side"] if aux else ["logits"])
    assert [tuple(shape) for shape in net.output_shapes] == [(5,), (3,)][: 2 if aux else 1]
    assert net.params == 4 * 3 * 9 + 4 + 4 * 5 + 5 + (4 * 3 + 3 if aux else 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    module = net.to_torch().eval()
    with torch.no_grad():
        result = module(torch.from_numpy(x))
    outputs = result if aux else (result,)
    assert [tuple(o.shape) for o in outputs] == [(2, 5), (2, 3)][: len(outputs)]
    numpy_outputs = net.to_numpy(module.state_dict())(x)
    for ours, theirs in zip(numpy_outputs if aux else (numpy_outputs,), outputs, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_a_misspelt_output_condition_suggests_the_parameter() -> None:
    _, diagnostics = cnndsl.check_source(HEADS.replace("side if aux", "side if axu"), "heads.cnn")
    (diagnostic,) = diagnostics
    assert diagnostic.message == "the condition of output `side` must be true or false; got axu"
    assert diagnostic.hint == "did you mean `aux`?"


def test_an_output_line_trains_with_or_without_its_heads(tmp_path: Path) -> None:
    """`aux=false` leaves GoogLeNet's output line with its last element alone: the network trains as without the
    line; with the heads listed, the loss reads the first output (docs/TRAINING.md)."""
    from click.testing import CliRunner

    from cnndsl.cli import main

    path = tmp_path / "heads.cnn"
    path.write_text(HEADS, encoding="utf-8")
    arguments = ["train", str(path), "--data", "synthetic:40", "--epochs", "1", "--batch-size", "8", "--no-progress"]
    result = CliRunner().invoke(main, [*arguments, "--backend", "numpy"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*arguments, "--set", "aux=true"])
    assert result.exit_code == 0, result.output
