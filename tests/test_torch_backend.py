"""The in-memory PyTorch target: `Network.to_torch()` against the IR, and its training readiness."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from strategies import networks
from torch import nn
from torch_checks import assert_counts_match, assert_forward_matches, generated_class, one_torch_thread  # noqa: F401  (autouse fixture)

import cnndsl
from cnndsl.errors import CnnDslError
from cnndsl.layers import KINDS, LayerKind
from cnndsl.names import module_names
from cnndsl.resources import estimate_bytes

SMALL = """network Small(classes=5)
input 3x17x13
defaults Conv(bias=false)
stem: [Conv(8, 3, stride=2, pad=1), BN, ReLU]
res: Add[ Conv(8, 3, pad=1), BN, ReLU, Conv(8, 3, pad=1), BN | ]
ReLU
mix: Concat[ Conv(4, 1) | Conv(4, 3, pad=same, dilation=1) | MaxPool(3, stride=1, pad=1) ]
gate: Mul[ | GlobalAvgPool, Conv(2, 1), ReLU, Conv(16, 1), Sigmoid ]
split: Concat[ Chunk(2, 0) | Chunk(2, 1), Conv(8, 1), BN, ReLU ], ChannelShuffle(4)
[DWConv(3, pad=1), BN, ReLU6] x 2
AvgPool(2, ceil=true)
GlobalAvgPool, flatten, FC(12), BN, Dropout(0.1), fc: FC(classes)
"""


@pytest.fixture(scope="module")
def small() -> cnndsl.Network:
    return cnndsl.parse(SMALL)


def test_state_dict_keys_are_the_layer_paths(small: cnndsl.Network) -> None:
    module = small.to_torch(seed=0)
    keys = set(module.state_dict())
    expected = set()
    for layer in small.layers:
        if layer.kind.name in ("Conv", "DWConv"):
            expected |= {f"{layer.path}.weight"} | ({f"{layer.path}.bias"} if layer.args["bias"] else set())
        elif layer.kind.name == "FC":
            expected |= {f"{layer.path}.weight", f"{layer.path}.bias"}
        elif layer.kind.name == "BatchNorm":
            expected |= {f"{layer.path}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert keys == expected
    assert "stem.conv.weight" in keys and "res.0.conv1.weight" in keys and "fc.weight" in keys


def test_counts_and_shapes_match_the_ir(small: cnndsl.Network) -> None:
    module = small.to_torch(seed=0)
    assert_counts_match(small, module)
    assert_forward_matches(small, module)


def test_structure_mirrors_the_ir(small: cnndsl.Network) -> None:
    module = small.to_torch()
    assert isinstance(module, nn.Sequential)
    names = [name for name, _ in module.named_children()]
    assert names == [child.name for child in small.root.children]
    res = module.get_submodule("res")
    assert type(res).__name__ == "Add" and [n for n, _ in res.named_children()] == ["0", "1"]
    assert isinstance(res.get_submodule("1"), nn.Identity)  # the empty branch


def test_seed_gives_reproducible_weights_and_keeps_the_global_rng(small: cnndsl.Network) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = small.to_torch(seed=7).state_dict()
    after = torch.rand(1)
    assert torch.equal(before, after), "to_torch(seed=...) must not disturb the caller's RNG"
    b = small.to_torch(seed=7).state_dict()
    c = small.to_torch(seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.conv.weight"], c["stem.conv.weight"])


def test_default_initialisation_is_pytorchs(small: cnndsl.Network) -> None:
    torch.manual_seed(0)
    ours = small.to_torch().get_submodule("stem.conv").weight
    torch.manual_seed(0)
    theirs = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False).weight
    assert torch.equal(ours, theirs)


def test_generated_and_in_memory_exchange_weights(small: cnndsl.Network) -> None:
    memory = small.to_torch(seed=1).eval()
    cls = generated_class(small)
    generated = cls().eval()
    assert list(generated.state_dict()) == list(memory.state_dict())
    generated.load_state_dict(memory.state_dict())
    x = torch.randn(3, *small.input_shape)
    with torch.no_grad():
        assert torch.equal(generated(x), memory(x))
    # and back: weights saved from the generated class load into the in-memory module
    other = small.to_torch(seed=2).eval()
    other.load_state_dict(cls().state_dict())
    torch.manual_seed(5)
    fresh = cls().eval()
    other.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        assert torch.equal(other(x), fresh(x))


def test_seeded_generated_source_matches_seeded_module(small: cnndsl.Network) -> None:
    torch.manual_seed(11)
    generated = generated_class(small)().state_dict()
    memory = small.to_torch(seed=11).state_dict()
    assert all(torch.equal(generated[k], memory[k]) for k in memory)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(graphs=False))  # every leaf runs once and gets a gradient; graphs: test_references, test_differential
def test_random_networks_match_the_ir_and_the_generated_source(text: str) -> None:
    network = cnndsl.parse(text)
    module = network.to_torch(seed=0)
    assert_counts_match(network, module)
    x = assert_forward_matches(network, module)
    generated = generated_class(network)().eval()
    assert list(generated.state_dict()) == list(module.state_dict())
    generated.load_state_dict(module.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(generated(x), module(x), rtol=0, atol=0)
    # training mode: one backward pass through every layer
    module.train()
    batch = torch.randn(2, *network.input_shape, requires_grad=True)  # a network may have no parameters
    module(batch).sum().backward()
    assert batch.grad is not None and all(p.grad is not None for p in module.parameters())


def test_inplace_activations_never_break_autograd_or_shared_inputs() -> None:
    # ReLU after Sigmoid (which saves its output), ReLU opening a branch (its input is shared),
    # and ReLU right after an identity branch merge: none may run in place.
    text = "input 2x4x4\nConv(2, 1), Sigmoid, ReLU, Add[ ReLU | Identity ], Add[ Conv(2, 1) | ], ReLU, Mul[ | ReLU ]"
    network = cnndsl.parse(text)
    module = network.to_torch(seed=0)
    inplace = [m for m in module.modules() if isinstance(m, nn.ReLU) and m.inplace]
    assert len(inplace) == 1  # only the ReLU after the two-branch Add
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    x_before = x.detach().clone()
    module(x).sum().backward()
    assert torch.equal(x.detach(), x_before)
    reference = _reference_forward(x_before, module)
    torch.testing.assert_close(module(x_before), reference)


def test_inplace_add_only_into_a_fresh_first_branch_and_same_gradients() -> None:
    text = "input 2x5x5\nAdd[ Conv(2, 3, pad=1), BN | ], Add[ Conv(2, 1), Sigmoid | Conv(2, 1) ], Add[ | Conv(2, 1) ], ReLU"
    network = cnndsl.parse(text)
    module = network.to_torch(seed=0)
    assert [m.inplace for m in module.children()][:3] == [True, False, False]
    reference = network.to_torch(seed=0)
    for child in reference.modules():  # the same network, everything out of place
        if hasattr(child, "inplace"):
            child.inplace = False
    x = torch.randn(3, 2, 5, 5, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    x_before = x.detach().clone()
    module(x).square().sum().backward()
    reference(x_ref).square().sum().backward()
    assert torch.equal(x.detach(), x_before)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for (name, p), (_, q) in zip(module.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def _reference_forward(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The same computation written out by hand, out of place."""
    conv0, conv1 = module.get_submodule("conv"), module.get_submodule("add2.0.conv")
    y = torch.relu(torch.sigmoid(conv0(x)))
    y = torch.relu(y) + y
    y = torch.relu(conv1(y) + y)
    return y * torch.relu(y)


def test_labels_that_python_or_torch_reserve_are_renamed_consistently() -> None:
    text = "input 3x6x6\nforward: Conv(4, 3, pad=1), training: [class: BN, _modules: ReLU], forward_: Conv(2, 1), to: flatten"
    network = cnndsl.parse(text)
    module = network.to_torch()
    paths = {layer.label: layer.path for layer in network.layers}
    assert paths["forward"] == "forward_2" and paths["forward_"] == "forward_"
    assert paths["class"] == "training_.class_" and paths["_modules"] == "training_.modules_"
    # the NumPy backend has the same keys without any mapping
    assert set(network.to_numpy().state_dict()) == set(module.state_dict())
    assert set(generated_class(network)().state_dict()) == set(module.state_dict())
    assert_counts_match(network, module)
    assert_forward_matches(network, module)


def test_module_names() -> None:
    assert module_names(["0", "conv", "forward", "forward_", "class", "_x", "x_"]) == [
        "0",
        "conv",
        "forward_2",
        "forward_",
        "class_",
        "x_2",
        "x_",
    ]
    # a name that is no identifier once `_` is stripped gets `layer` in front; a taken `base_` takes a number
    assert module_names(["_1", "_", "__", "requires_grad_", "_1", "layer_1_"]) == [
        "layer_1_2",
        "layer_",
        "layer_2",
        "requires_grad__",
        "layer_1_3",
        "layer_1_",
    ]


def test_too_large_is_refused_from_the_ir_before_allocating() -> None:
    network = cnndsl.parse("input 100000\nFC(100000)\nFC(100000)", filename="big.cnn")
    assert estimate_bytes(network) == 4 * network.params
    start = time.perf_counter()
    with pytest.raises(CnnDslError) as info:
        network.to_torch()
    assert time.perf_counter() - start < 1
    diagnostic = info.value.errors[0]
    assert "GiB" in diagnostic.message and diagnostic.position is not None
    assert diagnostic.position.line == 2 and diagnostic.filename == "big.cnn"
    assert "FC(100000)" in info.value.format()
    with pytest.raises(CnnDslError):
        cnndsl.parse("input 64\nFC(64)").to_torch(max_bytes=100)


def test_a_kind_without_torch_lowering_is_a_positioned_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(KINDS["GELU"]), "torch_call", LayerKind.torch_call)
    network = cnndsl.parse("input 3x4x4\nConv(2, 1)\nGELU", filename="n.cnn")
    with pytest.raises(CnnDslError) as info:
        network.to_torch()
    diagnostic = info.value.errors[0]
    assert "`GELU` is not supported by the torch backend" in diagnostic.message
    assert (diagnostic.position.line, diagnostic.position.column) == (3, 1)
    with pytest.raises(CnnDslError):
        network.torch_source()


def test_a_torch_failure_becomes_a_positioned_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated allocation failure\ndetails")

    monkeypatch.setattr(nn, "Conv2d", fail)
    network = cnndsl.parse("input 3x4x4\nReLU, Conv(2, 1)")
    with pytest.raises(CnnDslError) as info:
        network.to_torch()
    assert "simulated allocation failure" in info.value.errors[0].message
    assert info.value.errors[0].position.column == 7


# ---- training readiness ------------------------------------------------------------------


def test_train_and_eval_modes(small: cnndsl.Network) -> None:
    module = small.to_torch(seed=0)
    x = torch.randn(4, *small.input_shape)
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(module(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    bn = module.get_submodule("stem.bn")
    assert int(bn.num_batches_tracked) == 1
    module.eval()
    with torch.no_grad():
        assert torch.equal(module(x), module(x))  # dropout off, running statistics used


def test_channels_last_and_autocast(small: cnndsl.Network) -> None:
    module = small.to_torch(seed=0).eval()
    x = torch.randn(2, *small.input_shape)
    with torch.no_grad():
        reference = module(x)
        last = module.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(last, reference, rtol=1e-4, atol=1e-5)
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                low = module(x)
            assert low.dtype == dtype
            torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.1)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_export_trace_and_compile(small: cnndsl.Network) -> None:
    module = small.to_torch(seed=0).eval()
    x = torch.randn(2, *small.input_shape)
    with torch.no_grad():
        reference = module(x)
    exported = torch.export.export(module, (x,))
    torch.testing.assert_close(exported.module()(x), reference)
    traced = torch.jit.trace(module, x)
    torch.testing.assert_close(traced(x), reference)
    # Dynamo must capture the whole forward as one graph (no graph breaks); the eager backend
    # keeps the test fast, since Inductor's C++ compilation takes a minute on a CPU.
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), reference)


@pytest.mark.slow  # Inductor compiles C++ for about a minute on a CPU
def test_inductor_compile_trains(small: cnndsl.Network) -> None:
    module = small.to_torch(seed=0)
    compiled = torch.compile(module)
    x = torch.randn(4, *small.input_shape)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-5)
    module.train()
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def test_distributed_data_parallel_on_cpu(small: cnndsl.Network, tmp_path: pytest.TempPathFactory) -> None:
    script = f"""
import torch, torch.distributed as dist
import cnndsl
dist.init_process_group("gloo", init_method="file://{tmp_path}/store", rank=0, world_size=1)
net = cnndsl.parse({SMALL!r})
model = torch.nn.parallel.DistributedDataParallel(net.to_torch(seed=0))
loss = model(torch.randn(4, *net.input_shape)).sum()
loss.backward()
assert all(p.grad is not None for p in model.parameters())
dist.destroy_process_group()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_check_never_imports_torch() -> None:
    code = "import sys, cnndsl; n = cnndsl.parse('input 3x8x8\\nConv(4, 3)'); n.summary(); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
