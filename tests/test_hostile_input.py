"""Hostile input to the front end (issue 11): each class of defect a security review found, with its
sample from tests/data/defects/ and variants. Subprocess timeouts are hang guards, not timings
(bench/hostile.py measures time and memory)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl import CnnDslError
from cnndsl.checker import parse_value
from cnndsl.codegen_torch import identifier, literal
from cnndsl.errors import Diagnostic
from cnndsl.limits import MAX_BLOCK_BINDINGS, MAX_ERRORS, MAX_FILE_BYTES
from cnndsl.names import module_names

ROOT = Path(__file__).resolve().parent.parent
DEFECTS = Path(__file__).resolve().parent / "data" / "defects"
HANG_GUARD = 120  # seconds: far above the expected time; only a hang reaches it


def cli(
    *args: str, stdin: object = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cnndsl", *args],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        env=environment,
        cwd=cwd,
    )


def errors_of(source: str | bytes, **params: object) -> list[Diagnostic]:
    network, diagnostics = cnndsl.check_source(source, "hostile.cnn", params=params)
    assert network is None, "expected the source to be refused"
    errors = [d for d in diagnostics if d.severity == "error"]
    assert errors
    return errors


def assert_positioned(error: Diagnostic, line: int, column: int | None = None) -> None:
    assert error.position is not None and error.position.line == line, error.format()
    if column is not None:
        assert error.position.column == column, error.format()
    text = error.format()
    assert "^" in text and error.hint, text  # the line with a caret, and a hint


# -- D31: no unpickling of a file another user can plant ----------------------------------


def test_a_planted_lark_cache_in_tmpdir_is_never_loaded(tmp_path: Path) -> None:
    # Lark's cache=True unpickles $TMPDIR/.lark_cache_<user>_<hash>_<py>.tmp. Make Lark write the
    # cache file the old parser would read, then replace it with a pickle that leaves a marker.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = tmp_path / "pwned"
    make_cache = textwrap.dedent(
        """
        from lark import Lark
        from cnndsl.parser import SeparatorPostLex, ToAst, grammar_text
        Lark(grammar_text(), parser="lalr", lexer="basic", postlex=SeparatorPostLex(), transformer=ToAst(),
             maybe_placeholders=True, cache=True)
        """
    )
    environment = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", make_cache], check=True, env=environment, timeout=HANG_GUARD)
    planted = list(tmp.glob(".lark_cache_*"))
    assert planted, "Lark wrote no cache to plant over"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.write_text, (marker, "ran"))

    for path in planted:
        path.write_bytes(pickle.dumps(Payload()))
    done = cli("check", str(ROOT / "architectures" / "resnet18.cnn"), env={"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert sorted(tmp.iterdir()) == sorted(planted)  # and nothing new is written there


def test_shipped_parse_tables_are_current_and_parse_like_a_fresh_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import lark

    from cnndsl import _parse_tables as tables
    from cnndsl import parser

    hint = "run scripts/build_parse_tables.py"
    assert tables.GRAMMAR_SHA256 == parser.grammar_sha256(), hint
    assert tables.LARK_VERSION == lark.__version__, hint
    parser._parser.cache_clear()
    shipped = parser._parser()
    fresh = parser._build_parser(transformer=parser.ToAst())
    sources = [path.read_text(encoding="utf-8") for path in sorted((ROOT / "architectures").glob("*.cnn"))]
    sources += [
        "network N(a=2, b=-3.5e-2)\ninput 3x8x8\ndefaults Conv(stride=1)\nblock B(c) = Add[Conv(c, 3, pad=1) | ]\nB(4) x2"
    ]
    for source in sources:
        assert shipped.parse(source) == fresh.parse(source)
    # Tables made from another grammar are not used: the parser is built in memory instead.
    monkeypatch.setattr(tables, "GRAMMAR_SHA256", "0" * 64)
    parser._parser.cache_clear()
    try:
        assert cnndsl.parse("input 3x8x8\nReLU").output_shape == (3, 8, 8)
    finally:
        parser._parser.cache_clear()


# -- D1, D2, D3: literals and expressions that raised --------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ((DEFECTS / "hugeint.cnn").read_text(encoding="utf-8"), 2, 6),
        ((DEFECTS / "int400.cnn").read_text(encoding="utf-8"), 2, 6),
        ("input 3x8x" + "9" * 5000 + "\nReLU", 1, 7),
        ("input " + "9" * 5000 + "\nReLU", 1, 7),
        ("input 3x8x8\nConv(-" + "9" * 400 + ", 1)", 2, 7),
        ("input 3x8x8\nDropout(" + "9" * 400 + ")", 2, 9),
        ("input 3x8x8\nblock B(p=" + "9" * 400 + ") = [Conv(p, 1)]\nB", 2, 11),
        ("network N(c=" + "9" * 400 + ")\ninput 3x8x8\nConv(c, 1)", 1, 13),
        ("input 3x8x8\nReLU x " + "9" * 400, 2, 8),
        ("input 3x8x8\nReLU x" + "9" * 400, 2, 7),
        ("input 3x8x8\nConv(4611686018427387905, 1)", 2, 6),
    ],
)
def test_huge_integer_literals_are_positioned_errors(source: str, line: int, column: int) -> None:
    error = errors_of(source)[0]
    assert "too large" in error.message and "2^62" in error.message
    assert_positioned(error, line, column)


def test_huge_computed_values_and_parameters_are_positioned_errors() -> None:
    error = errors_of("input 3x8x8\nConv(4611686018427387904 * 4611686018427387904, 1)")[0]
    assert "too large" in error.message
    assert_positioned(error, 2, 6)
    error = errors_of("network N(c=4)\ninput 3x8x8\nConv(c, 1)", c=10**5000)[0]
    assert "too large" in error.message and "5,001 digits" in error.message
    error = errors_of("network N(c=4)\ninput 3x8x8\nConv(c, 1)", c="9" * 5000)[0]
    assert "5,000 digits" in error.message
    with pytest.raises(ValueError, match="digits"):
        parse_value("-" + "9" * 5000)
    done = cli("check", str(DEFECTS / "nanparams.cnn"), "--set", "s=" + "9" * 5000)
    assert done.returncode == 2 and "digits" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "operand",
    ["-" * 60_000 + "1", "+".join(["1"] * 30_000), "(" * 150 + "-" * 1000 + "1" + ")" * 150],
)
@pytest.mark.parametrize(
    "template",
    [
        "input 3x8x8\nblock B(c) = [Conv(4, 1)]\nB({})",
        "input 3x8x8\nConv({}, 1)",
        "network N(c={})\ninput 3x8x8\nConv(c, 1)",
        "input 3x8x8\nReLU x ({})",
    ],
)
def test_deep_expressions_are_positioned_errors(template: str, operand: str) -> None:
    error = errors_of(template.format(operand))[0]
    assert "nested deeper" in error.message, error.format()
    assert error.position is not None and error.hint


def test_deep_unary_sample() -> None:
    error = errors_of((DEFECTS / "deepneg_block.cnn").read_text(encoding="utf-8"))[0]
    assert "nested deeper" in error.message
    assert_positioned(error, 3)


# -- D4, D5: module names -------------------------------------------------------------------


def test_labels_that_are_not_identifiers_once_stripped_check() -> None:
    assert cli("check", "-q", str(DEFECTS / "hang_label_underscore_digit.cnn")).returncode == 0
    network = cnndsl.parse("input 3x8x8\n_1: ReLU, __2: ReLU, _: ReLU, layer_1_: ReLU")
    assert [layer.path for layer in network.layers] == ["layer_1_2", "layer_2_", "layer_", "layer_1_"]
    inside = cnndsl.parse("input 3x8x8\nblock B = [_1: ReLU, _1_: ReLU]\nb: B")
    assert [layer.path for layer in inside.layers] == ["b.layer_1_", "b.layer_1__"]


def test_renaming_thousands_of_reserved_labels_is_linear() -> None:
    names = module_names(["forward"] * 50_000 + [f"_x{i}" for i in range(50_000)])
    assert len(set(names)) == 100_000 and max(len(n) for n in names) < 20
    errors = errors_of((DEFECTS / "labels_reserved_4000.cnn").read_text(encoding="utf-8"))
    assert "defined twice" in errors[0].message
    assert len(errors) == MAX_ERRORS + 1 and "too many errors" in errors[-1].message
    network = cnndsl.parse("input 3x8x8\n" + "".join(f"_f{i}: ReLU\n" for i in range(20_000)))
    assert network.layers[-1].path == "f19999_"


# -- D6, D7: block expansion ----------------------------------------------------------------


def test_many_defaulted_block_parameters() -> None:
    network, diagnostics = cnndsl.check_source((DEFECTS / "blockparams_2000_1000.cnn").read_text(encoding="utf-8"))
    assert network is not None, diagnostics
    assert len(network.layers) == 1000
    assert network.root.children[0].children[0].block_args["p1999"] == 1
    # Past the budget: refused at the call that crosses it, with the call's position.
    params = 10_000
    source = "input 3x8x8\nblock B(" + ",".join(f"p{i}=1" for i in range(params)) + ") = [ReLU]\nB x 10000"
    error = errors_of(source)[0]
    assert f"{MAX_BLOCK_BINDINGS:,}" in error.message and error.position == (3, 1)
    # Defaults that read other parameters or in_channels are still evaluated per call.
    network = cnndsl.parse("input 3x8x8\nblock B(a=2, b=a*2, c=in_channels) = [Conv(b + c, 1)]\nB, B(a=1), B(c=1)")
    assert [layer.out_shape[0] for layer in network.layers] == [7, 9, 5]


@pytest.mark.parametrize(
    "body",
    ["[B{0}, B{0}]", "Add[B{0} | B{0}]", "[B{0} x 2]", "[B{0}, [], B{0}]", "Concat[B{0} | B{0} | ]"],
)
def test_exponential_blocks_are_refused_before_expanding(body: str) -> None:
    source = "input 3x8x8\nblock B0 = [ReLU]\n" + "".join(f"block B{i} = " + body.format(i - 1) + "\n" for i in range(1, 60))
    error = errors_of(source + "x: B59\n")[0]
    assert "block `B59` expands to at least" in error.message
    assert_positioned(error, 62, 4)
    error = errors_of((DEFECTS / "exp60.cnn").read_text(encoding="utf-8"))[0]
    assert "expands to at least" in error.message


def test_empty_exponential_blocks_are_refused_too() -> None:
    source = "input 3x8x8\nblock B0 = []\n" + "".join(f"block B{i} = [B{i - 1}, B{i - 1}]\n" for i in range(1, 60)) + "B59"
    assert "layers and groups" in errors_of(source)[0].message


# -- D8, D9: many errors ----------------------------------------------------------------------


def test_syntax_errors_in_a_long_file_are_each_found_once() -> None:
    lines = ["input 3x8x8"] + ["ReLU"] * 95_000
    for line in (10, 50_000, 95_000):
        lines[line - 1] = "ReLU ReLU"
    errors = errors_of("\n".join(lines) + "\n")
    assert [(e.position.line, e.position.column) for e in errors if e.position] == [(10, 6), (50_000, 6), (95_000, 6)]
    lines = ["input 3x8x8"] + ["ReLU"] * 95_000
    for line in range(1000, 26_000, 1000):
        lines[line] = "Conv(1,,2)"
    errors = errors_of("\n".join(lines))
    assert len(errors) == 20 and errors[0].position == (1001, 8) and errors[-1].position == (20_001, 8)


def test_syntax_errors_after_a_number_error_are_still_reported() -> None:
    errors = errors_of("input 3x8x8\nConv(" + "9" * 100 + ", 1)\nReLU ReLU\n[Conv(4, 3)\n")
    assert len(errors) == 1  # unbalanced brackets stop the parse before it starts
    errors = errors_of("input 3x8x8\nConv(" + "9" * 100 + ", 1)\nReLU ReLU\nReLU |\n")
    assert [e.position for e in errors] == [(2, 6), (3, 6), (4, 6)]


def test_thousands_of_unknown_names_or_keywords_stop_after_the_error_limit() -> None:
    errors = errors_of("input 3x8x8\n" + "\n".join(f"Foo{i}" for i in range(50_000)))
    assert len(errors) == MAX_ERRORS + 1 and "too many errors" in errors[-1].message
    assert "did you mean" in (errors[0].hint or "") or "cnndsl layers" in (errors[0].hint or "")
    errors = errors_of("input 3x8x8\nblock B(a=1) = [ReLU]\nB(" + ", ".join(f"k{i}=1" for i in range(30_000)) + ")")
    assert len(errors) == MAX_ERRORS + 1 and "no argument `k0`" in errors[0].message
    # A block with thousands of parameters: hints stay short.
    many = ",".join(f"p{i}=1" for i in range(5000))
    error = errors_of(f"input 3x8x8\nblock B({many}) = [Conv(zz, 1)]\nB")[0]
    assert len(error.format()) < 1000, error.format()


# -- D10: the size limit is checked while reading ---------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_files_are_refused_after_the_limit(device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    done = cli("check", device)
    assert done.returncode == 1 and f"larger than the limit of {MAX_FILE_BYTES:,} bytes" in done.stderr
    with open(device, "rb") as stdin:
        done = cli("check", "-", stdin=stdin)
    assert done.returncode == 1 and "<stdin>" in done.stderr and "larger than the limit" in done.stderr


def test_a_huge_sparse_file_is_not_read_whole(tmp_path: Path) -> None:
    huge = tmp_path / "huge.cnn"
    with open(huge, "wb") as handle:
        handle.truncate(2 * 2**30)
    done = cli("check", str(huge))
    assert done.returncode == 1 and "larger than the limit" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(CnnDslError, match="larger than the limit"):
        cnndsl.load(huge)


# -- D11, D12: compile and render stay bounded --------------------------------------------------


def test_compile_with_many_parameters_on_a_large_network(tmp_path: Path) -> None:
    out = tmp_path / "c50.py"
    done = cli("compile", str(DEFECTS / "compile_params50.cnn"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    source = out.read_text(encoding="utf-8")
    compile(source, str(out), "exec")
    # Generating reads how each parameter reaches the layers from the IR (nothing is checked again):
    # none of the 50 reaches one, so the constructor takes them all and refuses no value.
    assert "p0: int = 1," in source and "p49: int = 50," in source and "raise ValueError(" not in source


def test_render_refuses_layouts_that_would_explode(tmp_path: Path) -> None:
    done = cli("render", str(DEFECTS / "render_deep_70.cnn"), "-o", str(tmp_path / "deep.svg"))
    assert done.returncode == 1 and "nest merges 70 deep" in done.stderr and "Traceback" not in done.stderr
    wide = tmp_path / "wide.cnn"
    wide.write_text("input 3x8x8\nConcat[" + " | ".join(["ReLU"] * 2400) + "]\n", encoding="utf-8")
    done = cli("render", str(wide), "-o", str(tmp_path / "wide.dot"))
    assert done.returncode == 1 and "2,400 boxes and edges wide" in done.stderr
    assert not (tmp_path / "deep.svg").exists() and not (tmp_path / "wide.dot").exists()
    # Nesting inside collapsed blocks costs nothing until the blocks are opened.
    nested = tmp_path / "nested.cnn"
    nested.write_text("input 3x8x8\nblock B = " + "Add[" * 30 + "ReLU" + " | ReLU]" * 30 + "\nB\n", encoding="utf-8")
    assert cli("render", str(nested), "-o", str(tmp_path / "n.dot")).returncode == 0
    done = cli("render", str(nested), "--expand", "-o", str(tmp_path / "n.dot"))
    assert done.returncode == 1 and "without --expand" in done.stderr


def test_a_dot_that_never_finishes_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnndsl.graph import RenderError, build_graph, graph_bytes

    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "dot").write_text("#!/bin/sh\nexec sleep 60\n", encoding="utf-8")
    (slow / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow}{os.pathsep}{os.environ.get('PATH', '')}")
    graph = build_graph(cnndsl.parse("input 3x8x8\nReLU"))
    with pytest.raises(RenderError, match="did not finish drawing SVG in 0.5 s"):
        graph_bytes(graph, "svg", timeout=0.5)


# -- D24, D25: generated source ----------------------------------------------------------------


def test_nan_and_infinite_parameters_are_refused(tmp_path: Path) -> None:
    sample = DEFECTS / "nanparams.cnn"
    for setting in ("e=nan", "s=nan", "m=inf", "s=-inf", "e=NaN"):
        done = cli("compile", str(sample), "--set", setting, "-o", str(tmp_path / "g.py"))
        assert done.returncode == 1 and "must be a finite number" in done.stderr, done.stderr
        assert "nanparams.cnn:1:" in done.stderr and "^" in done.stderr
    assert not (tmp_path / "g.py").exists()
    text = sample.read_text(encoding="utf-8")
    for value in (float("nan"), float("inf"), -float("inf")):
        assert "finite" in errors_of(text, s=value)[0].message
    assert "finite" in errors_of("input 3x8x8\nLeakyReLU(1e999)")[0].message


def test_non_finite_values_are_never_bare_names_in_generated_source() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        text = literal(value)
        assert text.startswith("float(") and eval(text, {"__builtins__": {"float": float}}) == value or value != value
    assert literal(0.5) == "0.5" and literal(3) == "3" and literal(True) == "True"


HOSTILE_NAMES = [
    "__debug__",
    "__class__",
    "__x",
    "__init__",
    "__dict__",
    "__name__",
    "__builtins__",
    "_",
    "__",
    "_1",
    "_x",
    "forward",
    "training",
    "self",
    "x",
    "nn",
    "torch",
    "super",
    "sequential",
    "OrderedDict",
    "ValueError",
    "getattr",
    "float",
    "None",
    "True",
    "class",
    "match",
    "Net",
    "n" * 300,
]


def test_hostile_names_in_every_role_compile_to_working_modules() -> None:
    torch = pytest.importorskip("torch")
    from cnndsl.layers import lookup

    for name in HOSTILE_NAMES:
        # The name as the network, a parameter (that drives two layers), a label, a block, a label inside
        # it, and a reference (`@name`: a tensor that the generated forward names).
        block = name if lookup(name) is None else f"B{name}"
        source = (
            f"network {name}({name}=4)\ninput 3x8x8\n"
            f"block {block}(c) = [{name}: Conv(c, 3, pad=1), ReLU]\n"
            f"{name}: Conv({name}, 3), {block}({name} * 2), t: [Concat[@{name}, ReLU | Identity]]\n"
        )
        network = cnndsl.parse(source)
        code = network.torch_source()
        namespace: dict[str, object] = {"__name__": "generated"}
        exec(compile(code, f"<{name[:20]}>", "exec"), namespace)
        classes = [
            v
            for v in namespace.values()
            if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == "generated"
        ]
        module = classes[-1]()
        assert set(module.state_dict()) == set(network.to_torch().state_dict()), name
        assert module(torch.zeros(1, 3, 8, 8)).shape == (1, *network.output_shape)
        # The parameter keeps working under its generated name (not mangled, not a dunder).
        keyword = identifier(name, "param")
        assert not keyword.startswith("__")
        wider = classes[-1](**{keyword: 6})
        assert wider(torch.zeros(1, 3, 8, 8)).shape[1] == 6 + 12  # @name (6 channels) joined to the block's 2 * 6


def test_param_debug_sample_imports(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "pd.py"
    assert cli("compile", str(DEFECTS / "param_debug.cnn"), "-o", str(out)).returncode == 0
    done = subprocess.run(
        [sys.executable, "-c", "import pd, torch; m = pd.N(_debug__=5); print(m(torch.zeros(1, 3, 8, 8)).shape[1])"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=HANG_GUARD,
    )
    assert done.returncode == 0 and done.stdout.strip() == "5", done.stderr


# -- D33: the Python API ------------------------------------------------------------------------

SMALL = "network N(c=4)\ninput 3x8x8\nConv(c, 3)"


@pytest.mark.parametrize("source", [None, 123, 4.5, ["input 3x8x8"], object()])
def test_parse_refuses_what_is_not_text(source: object) -> None:
    with pytest.raises(TypeError, match="the source must be str or bytes"):
        cnndsl.parse(source)  # type: ignore[arg-type]


def test_parse_accepts_bytes_likes_and_paths_as_filename() -> None:
    for data in (SMALL.encode(), bytearray(SMALL.encode()), memoryview(SMALL.encode())):
        assert cnndsl.parse(data).output_shape == (4, 6, 6)
    assert cnndsl.parse(SMALL, filename=Path("x/y.cnn")).filename == os.path.join("x", "y.cnn")
    with pytest.raises(TypeError, match="filename must be a str"):
        cnndsl.parse(SMALL, filename=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [3.5, "3xx", [3, 8, "x"], (3, 8), object(), (10**5000,), True], ids=range(7))
def test_bad_input_shapes_are_diagnostics(shape: object) -> None:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(SMALL, input=shape)
    assert "input" in str(info.value)


@pytest.mark.parametrize("value", [10**5000, float("nan"), float("inf"), "9" * 5000, object(), [1, 2], b"4"], ids=range(7))
def test_bad_parameter_values_are_diagnostics(value: object) -> None:
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(SMALL, c=value)
    assert "network parameter `c`" in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize("seed", [2**70, 2**64, -(2**63) - 1, True, 1.5, "0"])
def test_bad_seeds_are_diagnostics(seed: object) -> None:
    network = cnndsl.parse(SMALL)
    with pytest.raises(CnnDslError, match="the seed must be an integer from -2"):
        network.to_numpy(seed=seed)  # type: ignore[arg-type]
    with pytest.raises(CnnDslError, match="the seed must be an integer from -2"):
        network.to_torch(seed=seed)  # type: ignore[arg-type]


def test_seed_bounds_and_dtypes() -> None:
    network = cnndsl.parse(SMALL)
    network.to_numpy(seed=2**64 - 1)
    network.to_numpy(seed=-(2**63))
    # a NumPy integer is a seed, and means what the same int means, in both backends
    assert np.array_equal(
        network.to_numpy(seed=np.int64(3)).state_dict()["conv.weight"], network.to_numpy(seed=3).state_dict()["conv.weight"]
    )
    assert np.array_equal(
        network.to_torch(seed=np.uint64(3)).state_dict()["conv.weight"].numpy(),
        network.to_torch(seed=3).state_dict()["conv.weight"].numpy(),
    )
    for dtype in ("bogus", object(), "int32"):
        with pytest.raises(CnnDslError, match="dtype"):
            network.to_numpy(dtype=dtype)
    done = cli("compile", str(DEFECTS / "nanparams.cnn"), "--seed", str(2**64))
    assert done.returncode == 2 and "--seed" in done.stderr and "Traceback" not in done.stderr
