"""cnndsl.weights: every weights format in and out, the input normalisation stored with the weights,
clear errors for damaged files (issue 11 D19, D20), and one initial state per seed in every backend."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from strategies import networks

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import CnnDslError
from cnndsl.weights import MEAN_KEY, STD_KEY, Preprocess, float8_table, read_weights, write_weights

torch = pytest.importorskip("torch")
from torch_checks import generated_class, load_generated  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DIGITS = ROOT / "architectures" / "digits_cnn.cnn"
SMALL = "network Small\ninput 3x8x8\nConv(4, 3, pad=1), BN, ReLU, MaxPool(2), flatten, FC(5)\n"


@pytest.fixture
def small() -> cnndsl.Network:
    return cnndsl.parse(SMALL)


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npz"])
def test_every_format_round_trips_weights_and_preprocessing(small: cnndsl.Network, tmp_path: Path, suffix: str) -> None:
    state = small.to_numpy(seed=3).state_dict()
    preprocess = Preprocess((0.25, 0.5, 0.75), (2.0, 3.0, 4.0))
    path = tmp_path / f"w{suffix}"
    write_weights(path, state, preprocess)
    weights = read_weights(path)
    assert weights.preprocess == preprocess
    assert weights.state_dict.keys() == state.keys()
    for key, value in state.items():
        assert weights.state_dict[key].shape == value.shape, key  # 0-d num_batches_tracked stays 0-d
        assert np.array_equal(weights.state_dict[key], value), key


def test_numpy_model_save_keeps_the_preprocessing(small: cnndsl.Network, tmp_path: Path) -> None:
    model = small.to_numpy(seed=1)
    model.preprocess = Preprocess((1.0, 2.0, 3.0), (0.5, 0.5, 0.5))
    model.save(tmp_path / "w.safetensors")
    again = small.to_numpy(tmp_path / "w.safetensors", seed=9)
    assert again.preprocess == model.preprocess
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(again(x), model(x))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's deprecation notices for quantized tensors and TypedStorage
def test_bfloat16_and_float8_convert_exactly_other_tensors_are_refused(small: cnndsl.Network, tmp_path: Path) -> None:
    # D20: these gave TypeError tracebacks.
    state = small.to_torch(seed=0).state_dict()
    bf16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(bf16, tmp_path / "bf16.pt")
    weights = read_weights(tmp_path / "bf16.pt")
    for key, value in bf16.items():
        assert weights.state_dict[key].dtype != np.dtype("O")
        np.testing.assert_array_equal(
            weights.state_dict[key], value.float().numpy() if value.is_floating_point() else value.numpy()
        )
    small.to_numpy(tmp_path / "bf16.pt")  # and it runs
    f8 = dict(state, **{"conv.weight": state["conv.weight"].to(torch.float8_e4m3fn)})
    torch.save(f8, tmp_path / "f8.pt")
    np.testing.assert_array_equal(read_weights(tmp_path / "f8.pt").state_dict["conv.weight"], f8["conv.weight"].float().numpy())
    refused = {
        "sparse": (state["fc.weight"].to_sparse(), "sparse_coo tensor"),
        "quantized": (torch.quantize_per_tensor(state["fc.weight"], 0.01, 0, torch.qint8), "quantized tensor"),
        "complex": (state["fc.weight"].to(torch.complex64), "complex"),
    }
    for name, (tensor, message) in refused.items():
        torch.save(dict(state, **{"fc.weight": tensor}), tmp_path / f"{name}.pt")
        with pytest.raises(CnnDslError, match=message):
            small.to_numpy(tmp_path / f"{name}.pt")
        src = tmp_path / "small.cnn"
        src.write_text(SMALL)
        code, _, err = run_cli("run", str(src), "--weights", str(tmp_path / f"{name}.pt"))
        assert code == 1 and message in err and "Traceback" not in err


def test_safetensors_bfloat16_and_float8_entries(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    values = torch.tensor([1.5, -2.25, 448.0, 0.001953125])
    save_file(
        {"a": values.to(torch.bfloat16), "b": values.to(torch.float8_e4m3fn), "c": values[:3].to(torch.float8_e5m2)},
        str(tmp_path / "w.safetensors"),
    )
    state = read_weights(tmp_path / "w.safetensors").state_dict
    np.testing.assert_array_equal(state["a"], values.to(torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(state["b"], values.to(torch.float8_e4m3fn).float().numpy())
    np.testing.assert_array_equal(state["c"], values[:3].to(torch.float8_e5m2).float().numpy())
    for name, dtype in (("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)):
        every_code = torch.arange(256, dtype=torch.uint8).view(dtype).float().numpy()
        np.testing.assert_array_equal(float8_table(name), every_code)


def _member_claiming(shape: tuple[int, ...]) -> bytes:
    """An .npz whose one member's header claims `shape` float32 values but holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("0.weight.npy", np.lib.format.magic(1, 0) + header.getvalue() + bytes(16))
    return buffer.getvalue()


def test_damaged_npz_weights_are_clear_errors(small: cnndsl.Network, tmp_path: Path) -> None:
    # D19: the review's sample, truncated and empty files, an .npy named .npz, a header claiming 70 TiB.
    good = tmp_path / "good.npz"
    small.to_numpy().save(good)
    data = good.read_bytes()
    cases = {
        "garbage.npz": (DATA / "defects" / "w_garbage.npz").read_bytes(),
        "truncated.npz": data[: len(data) // 2],
        "cut_member.npz": data[: len(data) - 30],
        "empty.npz": b"",
        "huge.npz": _member_claiming((2**20, 2**20, 2**4)),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    src = tmp_path / "small.cnn"
    src.write_text(SMALL)
    for name in [*cases, "array.npz"]:
        began = time.perf_counter()
        with pytest.raises(CnnDslError) as caught:
            read_weights(tmp_path / name)
        assert time.perf_counter() - began < 2
        message = str(caught.value)
        assert ("not a readable .npz weights file" in message) or ("single .npy array" in message), (name, message)
        code, out, err = run_cli("run", str(src), "--weights", str(tmp_path / name))
        assert code == 1 and "Traceback" not in err and err.count("\n") <= 3, (name, err)


def test_other_damaged_files_and_wrong_types(small: cnndsl.Network, tmp_path: Path) -> None:
    write_weights(tmp_path / "w.safetensors", small.to_numpy().state_dict())
    write_weights(tmp_path / "w.pt", small.to_numpy().state_dict())
    for name, message in (("w.safetensors", "not a readable .safetensors"), ("w.pt", "not a readable PyTorch weights")):
        (tmp_path / f"cut_{name}").write_bytes((tmp_path / name).read_bytes()[:100])
        with pytest.raises(CnnDslError, match=message):
            read_weights(tmp_path / f"cut_{name}")
    with pytest.raises(CnnDslError, match="unknown weights file type .bin"):
        read_weights(tmp_path / "w.bin")
    (tmp_path / "folder.npz").mkdir()
    os.mkfifo(tmp_path / "fifo.pt")  # reading it would block forever
    for name in ("folder.npz", "fifo.pt"):
        with pytest.raises(CnnDslError, match="not a regular file"):
            read_weights(tmp_path / name)
    with pytest.raises(CnnDslError, match="file path or a state_dict"):
        read_weights(42)  # type: ignore[arg-type]
    with pytest.raises(CnnDslError, match="without its partner"):
        read_weights({MEAN_KEY: np.zeros(3)})
    with pytest.raises(CnnDslError, match="damaged input normalisation"):
        read_weights({MEAN_KEY: np.zeros(3), STD_KEY: np.array([1.0, 0.0, np.nan])})
    state = dict(small.to_numpy().state_dict(), **Preprocess((0.0,), (1.0,)).arrays())
    with pytest.raises(CnnDslError, match="normalises 1 input channels; network Small takes 3"):
        small.to_numpy(state)


# ---------------------------------------------------------------- preprocessing in every backend


def test_preprocessing_runs_the_same_in_numpy_torch_and_the_generated_class(small: cnndsl.Network, tmp_path: Path) -> None:
    preprocess = Preprocess((10.0, 20.0, 30.0), (2.0, 4.0, 8.0))
    path = tmp_path / "w.safetensors"
    write_weights(path, small.to_numpy(seed=5).state_dict(), preprocess)
    x = np.random.default_rng(1).uniform(0, 40, (3, 3, 8, 8)).astype(np.float32)
    plain = small.to_numpy(seed=5)(preprocess.apply(x))
    numpy_out = small.to_numpy(path)(x)
    np.testing.assert_allclose(numpy_out, plain, rtol=1e-5, atol=1e-5)
    module = small.to_torch(weights=path).eval()
    assert list(module.state_dict()) == list(small.to_torch().state_dict())  # the normalisation adds no keys
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), plain, rtol=1e-4, atol=1e-5)
    out = tmp_path / "model.py"
    code, stdout, err = run_cli(
        "compile", str(_source(tmp_path)), "--weights", str(path), "-o", str(out), "--weights-out", str(tmp_path / "w.pt")
    )
    assert code == 0, err
    assert f"wrote {out}" in stdout and f"wrote {tmp_path / 'w.pt'}" in stdout
    generated = load_generated(out.read_text()).Small().eval()
    generated.load_state_dict(torch.load(tmp_path / "w.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(generated(torch.from_numpy(x)).numpy(), plain, rtol=1e-4, atol=1e-5)
    assert "(x - self.input_mean) / self.input_std" in out.read_text()


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "small.cnn"
    path.write_text(SMALL)
    return path


def test_compile_says_what_it_wrote_and_keeps_stdout_clean(tmp_path: Path) -> None:
    source = _source(tmp_path)
    code, stdout, _ = run_cli("compile", str(source), "-o", str(tmp_path / "m.py"))
    assert code == 0 and stdout == f"wrote {tmp_path / 'm.py'}\n"
    code, stdout, err = run_cli("compile", str(source), "--weights-out", str(tmp_path / "w.safetensors"))
    assert code == 0 and stdout.startswith("# Small: generated") and "wrote" not in stdout
    assert f"wrote {tmp_path / 'w.safetensors'}" in err
    assert read_weights(tmp_path / "w.safetensors").state_dict.keys() == cnndsl.parse(SMALL).to_numpy().state_dict().keys()


def test_compile_refuses_weights_of_another_network(tmp_path: Path) -> None:
    write_weights(tmp_path / "w.npz", cnndsl.parse(SMALL.replace("FC(5)", "FC(7)")).to_numpy().state_dict())
    code, _, err = run_cli("compile", str(_source(tmp_path)), "--weights", str(tmp_path / "w.npz"), "-o", str(tmp_path / "m.py"))
    assert code == 1 and "fc.weight is 7x64, expected 5x64" in err
    assert not (tmp_path / "m.py").exists()


# ---------------------------------------------------------------- one seed, one initial state


def _assert_same_state(network: cnndsl.Network, seed: int) -> None:
    ours = network.to_numpy(seed=seed).state_dict()
    theirs = network.to_torch(seed=seed).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        # PyTorch's AVX2 kernel fuses the last multiply-add as TorchRandom does; other CPUs may differ by one ulp.
        np.testing.assert_allclose(ours[key], value.numpy(), rtol=2**-23, atol=2**-30, err_msg=key)


ZOO = sorted((ROOT / "architectures").glob("*.cnn"))


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if cnndsl.load(p).params > 20_000_000 else []) for p in ZOO]
)
def test_one_seed_gives_one_initial_state_across_the_zoo(path: Path) -> None:
    from test_torch_zoo import small_network

    _assert_same_state(small_network(path), seed=7)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_one_seed_gives_one_initial_state_for_random_networks(text: str) -> None:
    _assert_same_state(cnndsl.parse(text), seed=0)


def test_same_seed_same_outputs_in_numpy_torch_and_the_generated_class(small: cnndsl.Network) -> None:
    # Issue 16 item 6: to_numpy(seed=0) and to_torch(seed=0) differed by 0.19.
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    for seed in (0, 1, 2**40 + 3, -5):
        numpy_out = small.to_numpy(seed=seed)(x)
        with torch.no_grad():
            torch_out = small.to_torch(seed=seed).eval()(torch.from_numpy(x)).numpy()
            torch.manual_seed(seed)
            generated_out = generated_class(small)().eval()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(numpy_out, torch_out, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(generated_out, torch_out)


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 1.5, True, "0"])
def test_bad_seeds_are_clear_errors(small: cnndsl.Network, seed: object) -> None:
    with pytest.raises(CnnDslError, match="seed"):
        small.to_numpy(seed=seed)  # type: ignore[arg-type]
    with pytest.raises(CnnDslError, match="seed"):
        small.to_torch(seed=seed)  # type: ignore[arg-type]


# ---------------------------------------------------------------- input dtypes (issue 16 item 9)


def test_float64_and_integer_inputs_are_cast_to_the_model_dtype(small: cnndsl.Network) -> None:
    model = small.to_numpy(seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))  # float64, as np.random.randn gives
    np.testing.assert_array_equal(model(x), model(x.astype(np.float32)))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(model(pixels), model(pixels.astype(np.float32)))
    np.testing.assert_array_equal(model(pixels.tolist()), model(pixels.astype(np.float32)))
    with pytest.raises(CnnDslError, match="dtype object") as caught:
        model(pixels.astype(object))
    assert "--input" not in str(caught.value)
    with pytest.raises(CnnDslError) as caught:
        model(np.zeros((2, 3, 8, 9)))
    assert "--input" not in str(caught.value) and "--set" not in str(caught.value)


# ---------------------------------------------------------------- train, save, run (issue 16 items 1 and 2)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _predictions(stdout: str) -> list[int]:
    return [int(line.split(":")[1].split()[0]) for line in stdout.splitlines() if line.strip().startswith("sample ")]


def test_trained_weights_run_right_on_raw_digits(tmp_path: Path) -> None:
    sklearn = pytest.importorskip("sklearn.datasets")
    bunch = sklearn.load_digits()
    np.save(tmp_path / "digits.npy", bunch.images[:8][:, None])  # raw 0..16 grey levels, float64, as the source stores them
    labels = bunch.target[:8].tolist()
    trained = _cli(
        "train", str(DIGITS), "--data", "digits", "--epochs", "3", "--no-progress",
        "--checkpoint-dir", str(tmp_path / "ck"), "--save", str(tmp_path / "model.safetensors"), cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert f"saved the weights and the input normalisation to {tmp_path / 'model.safetensors'}" in trained.stdout
    for weights, backend in (("model.safetensors", "numpy"), ("ck/checkpoint.pt", "torch"), ("model.safetensors", "torch")):
        ran = _cli(
            "run",
            str(DIGITS),
            "--backend",
            backend,
            "--weights",
            str(tmp_path / weights),
            "--input",
            str(tmp_path / "digits.npy"),
            cwd=tmp_path,
        )
        assert ran.returncode == 0, ran.stderr
        assert f"input normalised with the training mean/std from {tmp_path / weights}" in ran.stdout
        predicted = _predictions(ran.stdout)
        assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 6, (weights, backend, predicted)
    # Without the normalisation (the bare state_dict), even the 0..1 images the trainer read before
    # standardising them come out mostly as one class: the "predicts 1 for all eight digits".
    network = cnndsl.load(DIGITS)
    bare = network.to_numpy(read_weights(tmp_path / "model.safetensors").state_dict)
    unnormalised = bare(bunch.images[:8][:, None] / 16).argmax(1).tolist()
    assert sum(p == t for p, t in zip(unnormalised, labels, strict=True)) <= 4, unnormalised


def test_numpy_checkpoint_runs_and_compiles(tmp_path: Path) -> None:
    # Issue 16 item 2: "missing keys features.0.0.weight ... unexpected keys model/features.0.0.weight".
    trained = _cli("train", str(DIGITS), "--data", "digits", "--backend", "numpy", "--epochs", "1", "--no-progress",
                   "--checkpoint-dir", str(tmp_path), "--save", str(tmp_path / "w.npz"), cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    from_checkpoint = read_weights(tmp_path / "checkpoint.npz")
    saved = read_weights(tmp_path / "w.npz")
    assert from_checkpoint.preprocess == saved.preprocess and from_checkpoint.preprocess is not None
    assert all(np.array_equal(saved.state_dict[k], v) for k, v in from_checkpoint.state_dict.items())
    ran = _cli("run", str(DIGITS), "--weights", str(tmp_path / "checkpoint.npz"), "--batch", "2", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "input normalised with the training mean/std" in ran.stdout
    assert "after a warm-up)" in ran.stdout
    torch_checkpoint = _cli(
        "train",
        str(DIGITS),
        "--data",
        "digits",
        "--epochs",
        "1",
        "--no-progress",
        "--checkpoint-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert torch_checkpoint.returncode == 0, torch_checkpoint.stderr
    in_memory = read_weights(torch.load(tmp_path / "checkpoint.pt", weights_only=True))  # the loaded dict, as a notebook has it
    assert in_memory.preprocess == saved.preprocess and in_memory.state_dict.keys() == saved.state_dict.keys()
    compiled = _cli(
        "compile", str(DIGITS), "--weights", str(tmp_path / "checkpoint.npz"), "-o", str(tmp_path / "m.py"), cwd=tmp_path
    )
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stdout == f"wrote {tmp_path / 'm.py'}\n"


def test_onnx_export_starts_with_the_normalisation(small: cnndsl.Network, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    write_weights(tmp_path / "w.npz", small.to_numpy().state_dict(), Preprocess((1.0, 2.0, 3.0), (4.0, 5.0, 6.0)))
    code, _, err = run_cli(
        "compile",
        str(_source(tmp_path)),
        "--target",
        "onnx",
        "--weights",
        str(tmp_path / "w.npz"),
        "-o",
        str(tmp_path / "m.onnx"),
    )
    assert code == 0, err
    # Identity nodes only alias initializers (the exporter shares one between equal tensors: untrained BatchNorm's ones).
    ops = [
        node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node if node.op_type not in ("Constant", "Identity")
    ]
    assert ops[:2] == ["Sub", "Div"]
