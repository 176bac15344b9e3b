"""`cnndsl check` through click's runner and through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli import main

RESNET_LIKE = """network Small(num_classes=10)
input 3x32x32
block Basic(c) = [Add[ Conv(c, 3, pad=1), BN, ReLU | Identity ], ReLU]
stem: [Conv(16, 3, pad=1), BN, ReLU]
Basic(16) x 2
GlobalAvgPool, flatten, FC(num_classes)
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.cnn"
    path.write_text(RESNET_LIKE)
    return path


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def test_check_prints_summary_and_totals(small: Path, golden) -> None:
    result = run("check", str(small))
    assert result.exit_code == 0, result.output
    out = result.output.replace(str(small), "small.cnn")
    assert "Total params:" in out and "Receptive field:" in out
    assert "stem.conv" in out and "Basic(16)" in out
    assert "\x1b[" not in out  # colours only on a terminal
    golden("check_small.txt", out)


def test_check_json_schema(small: Path) -> None:
    result = run("check", "--json", str(small))
    assert result.exit_code == 0
    report = json.loads(result.output)
    for key, kind in [
        ("file", str),
        ("network", str),
        ("input", list),
        ("output", list),
        ("params", int),
        ("trainable_params", int),
        ("buffers", int),
        ("macs", int),
        ("activation_bytes", int),
        ("layers", list),
        ("diagnostics", list),
    ]:
        assert isinstance(report[key], kind), key
    assert report["network"] == "Small" and report["output"] == [10]
    layer = report["layers"][0]
    assert set(layer) >= {"path", "kind", "output", "params", "macs", "line", "column"}
    assert (layer["path"], layer["kind"], layer["line"], layer["column"]) == ("stem.conv", "Conv", 4, 8)
    kinds = [entry["kind"] for entry in report["layers"]]
    assert kinds.index("Add") > kinds.index("Identity")  # a merge after its branches
    assert report["params"] == sum(entry["params"] for entry in report["layers"])


def test_set_and_input_overrides(small: Path) -> None:
    report = json.loads(run("check", "--json", "--set", "num_classes=7", "--input", "3x64x64", str(small)).output)
    assert report["output"] == [7] and report["input"] == [3, 64, 64]


def test_errors_exit_1_with_positions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x8x8\nCnov(3, 1)\n")
    result = run("check", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:2:1: error: unknown layer or block `Cnov`" in result.output
    assert "hint: did you mean `Conv`?" in result.output
    report = json.loads(run("check", "--json", str(bad)).output)
    assert report["diagnostics"][0]["line"] == 2


def test_strict_and_quiet(tmp_path: Path) -> None:
    path = tmp_path / "fit.cnn"
    path.write_text("input 3x7x7\nConv(8, 3, stride=3)\n")
    loose = run("check", "-q", str(path))
    assert loose.exit_code == 0 and "warning:" in loose.output and "Total params" not in loose.output
    strict = run("check", "--strict", str(path))
    assert strict.exit_code == 1 and "error: Conv doesn't fit" in strict.output


def test_usage_errors_exit_2(small: Path) -> None:
    assert run("check").exit_code == 2
    assert run("check", "--input", "3x3x3x3x3", str(small)).exit_code == 2
    assert run("check", "--set", "novalue", str(small)).exit_code == 2


def test_stdin_and_several_files(small: Path, tmp_path: Path) -> None:
    result = run("check", "-q", "-", input="input 3x8x8\nConv(4, 3)\n")
    assert result.exit_code == 0
    other = tmp_path / "other.cnn"
    other.write_text("input 3x8x8\nConv(4, 3)\n")
    result = run("check", str(small), str(other))
    assert result.exit_code == 0 and result.output.count("Total params") == 2
    assert run("check", str(small), str(tmp_path / "missing.cnn")).exit_code == 1


def test_real_subprocess_never_imports_torch(small: Path) -> None:
    code = (
        "import sys, runpy; sys.argv = ['cnndsl', 'check', '-q', sys.argv[1]];\n"
        "try:\n    runpy.run_module('cnndsl', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'check imported torch'\n"
        "assert 'numpy' not in sys.modules, 'check imported numpy (slow start-up)'\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(small)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "cnndsl", "check", str(small)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Total params:" in done.stdout


@pytest.mark.parametrize("name", ["classic", "resnet18", "googlenet"])
def test_golden_summaries_of_zoo_networks(name: str, golden) -> None:
    root = Path(__file__).resolve().parent.parent
    net = cnndsl.load(root / "architectures" / f"{name}.cnn")
    golden(f"summary_{name}.txt", net.summary().replace(str(root) + "/", "") + "\n")


def zoo(name: str) -> str:
    return str(Path(__file__).resolve().parent.parent / "architectures" / f"{name}.cnn")


def table_rows(output: str) -> dict[str, str]:
    """Path -> the rest of its row, for the rows between the second and third rules."""
    lines = output.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    rows = [line.split(None, 1) for line in lines[rules[1] + 1 : rules[2]]]
    return {path: " ".join(rest[0].split()) if rest else "" for path, *rest in rows}


def test_default_summary_folds_deep_blocks_so_resnet18_fits_a_screen() -> None:
    result = run("check", zoo("resnet18"))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) <= 45, len(lines)
    assert table_rows(result.output)["layer1"].startswith("Basic(64) x 2 64x56x56 147,968")
    assert "Conv 64 3x3 pad 1" not in result.output  # inside the blocks: folded into their rows
    assert "DenseLayer x 6" in run("check", zoo("densenet121")).output
    assert len(run("check", zoo("densenet121")).output.splitlines()) <= 45


def test_depth_opens_levels_and_expand_shows_every_layer() -> None:
    shallow = table_rows(run("check", "--depth", "0", zoo("resnet18")).output)
    assert "layer1.0" not in shallow and shallow["layer1"].startswith("Basic(64) x 2")
    deeper = run("check", "--depth", "3", zoo("resnet18")).output
    assert table_rows(deeper)["layer1.0.add.0.conv1"].startswith("Conv 64 3x3 pad 1")
    expanded = run("check", "--expand", zoo("resnet18")).output
    assert expanded.count("Conv ") == 20 and "folded" not in expanded
    net = cnndsl.load(zoo("resnet18"))
    assert str(net.summary(depth=3)) == deeper.rstrip("\n")
    assert len(net.summary(depth=None).rows) > len(net.summary().rows)


def test_no_noise_rows_one_row_per_merge() -> None:
    out = run("check", "--expand", zoo("resnet18")).output
    lines = out.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    paths = [line.split()[0] for line in lines[rules[1] + 1 : rules[2]]]
    assert len(paths) == len(set(paths)), "a path printed twice"
    assert len(paths) == 74 + 1 + 4 + 8  # layers, the stem, the four stages' rows (layer1's repetition) and 8 blocks
    assert " branch " not in out and "[...]" not in out
    rows = table_rows(out)
    assert rows["layer1.0.add"].startswith("Add[2 branches] 64x56x56 73,984")


def test_columns_and_sizes_in_mb() -> None:
    result = run("check", "--columns", "input,output,rf,kernel", zoo("classic"))
    assert result.exit_code == 0
    header = result.output.splitlines()[3].split()
    assert header == ["Layer", "Kind", "Input", "Output", "RF", "Kernel"]
    net = cnndsl.load(zoo("classic"))
    conv = net.layers[3]  # the second Conv: its receptive field comes from the IR
    row = next(r for r in net.summary(depth=None, columns=("rf", "kernel")).rows if r.node is conv)
    assert row.cell("rf") == f"{conv.receptive_field[0]}x{conv.receptive_field[1]}" and row.cell("kernel") == "3x3"
    assert "Input size:           0.01 MB" in result.output
    assert "Params size:          1.16 MB (parameters and buffers, float32)" in result.output
    assert run("check", "--columns", "flops", zoo("classic")).exit_code == 2
    with pytest.raises(ValueError, match="unknown summary column 'flops'"):
        net.summary(columns=("flops",))


def test_golden_summary_layouts(golden) -> None:
    root = Path(__file__).resolve().parent.parent
    for args, name in [
        (("--depth", "0"), "summary_resnet18_depth0.txt"),
        (("--expand", "--columns", "input,output,params,macs,rf,kernel"), "summary_resnet18_expanded_columns.txt"),
    ]:
        result = run("check", *args, zoo("resnet18"))
        assert result.exit_code == 0
        golden(name, result.output.replace(str(root) + "/", ""))


def test_readme_example_table_is_what_check_prints() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    start = readme.index("$ cnndsl check architectures/classic.cnn\n") + len("$ cnndsl check architectures/classic.cnn\n")
    shown = readme[start : readme.index("```", start)]
    result = run("check", zoo("classic"))
    assert shown == result.output.replace(str(root) + "/", "")


def test_summary_is_its_text_and_copies_as_text() -> None:
    import copy
    import pickle

    summary = cnndsl.load(zoo("classic")).summary()
    assert isinstance(summary, str) and summary.startswith("classic (") and repr(summary) == str(summary)
    assert copy.deepcopy(summary) == summary and pickle.loads(pickle.dumps(summary)) == summary
