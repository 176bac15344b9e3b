"""Hostile input is refused quickly, with a position, before anything large is built."""

from __future__ import annotations

import time
import tracemalloc

import pytest

import cnndsl

HOSTILE = {
    "nested_repetition": "input 3x32x32\n[[Conv(8,3)]x1000000]x1000000",
    "product_of_repetitions": "input 3x32x32\n[[Conv(8,1)]x1000]x1000",
    "many_blocks": "input 3x8x8\nblock A = [ReLU x 400]\nblock B = [A x 400]\nB",
    "deep_brackets": "input 3x8x8\n" + "[" * 5000 + "ReLU" + "]" * 5000,
    "deep_repeat_chain": "input 3x8x8\nReLU" + " x 1" * 5000,
    "long_expression": "input 3x8x8\nConv(" + "+".join(["1"] * 5000) + ", 1)",
    "unary_chain": "input 3x8x8\nConv(" + "-" * 5000 + "1, 1)",
    "huge_channels": "input 3x8x8\nConv(1000000000000, 1)",
    "huge_input": "input 3x100000x100000\nConv(1000, 1)",
    "huge_params": "input 100000x1x1\nConv(100000000, 1)",
    "huge_number": "input 3x8x8\nConv(99999999999999999999999999999999, 1)",
    "growing_channels": "input 3x8x8\n[Conv(in_channels * 1000, 1)] x 10",
    "block_chain": "input 3x8x8\n" + "\n".join(f"block B{i} = [B{i + 1}]" for i in range(400)) + "\nblock B400 = [ReLU]\nB0",
    "wide_concat": "input 3x8x8\nConcat[" + "|" * 300_000 + "]",
    "oversized_file": "input 3x8x8\n" + "ReLU\n" * 300_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_refused_fast_with_a_position(name: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    net, diagnostics = cnndsl.check_source(HOSTILE[name], f"{name}.cnn")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert net is None
    errors = [d for d in diagnostics if d.severity == "error"]
    assert errors and all(d.position is not None for d in errors), diagnostics
    # A hang guard with room for a loaded CI machine (each case takes under a second alone; bench/hostile.py has the ratios).
    assert elapsed < 15.0, f"{name} took {elapsed:.2f}s"
    assert peak < 300 * 2**20, f"{name} used {peak / 2**20:.0f} MiB"


def test_limit_messages() -> None:
    def message(name: str) -> str:
        return cnndsl.check_source(HOSTILE[name])[1][0].message

    assert message("nested_repetition") == "repeating 1,000,000 times exceeds the limit of 100,000 layers"
    assert "1,000 x 1,000 = 1,000,000 layers" in message("product_of_repetitions")
    assert message("deep_brackets") == "nesting deeper than 200 levels"
    assert "the limit is 2^40" in message("huge_channels")
    assert "limited to 2^62" in message("huge_number")


def test_just_under_the_layer_limit_is_accepted_in_linear_time() -> None:
    start = time.perf_counter()
    net = cnndsl.parse("input 4x8x8\n[ReLU] x 20000")
    assert len(net.layers) == 20_000
    assert time.perf_counter() - start < 5


def test_render_compile_and_run_refuse_oversized_networks_fast(tmp_path) -> None:
    from click.testing import CliRunner

    from cnndsl.cli import main

    many = tmp_path / "many.cnn"
    many.write_text("input 3x8x8\n[ReLU] x 20000\n")
    huge = tmp_path / "huge.cnn"
    huge.write_text("input 100000\nFC(100000), FC(100000)\n")
    wide = tmp_path / "wide.cnn"
    wide.write_text("input 3x512x512\n[Conv(64, 3, pad=1)] x 40\n")
    cases = [
        (["render", str(many), "--expand", "-o", str(tmp_path / "many.svg")], "the drawing would have 20,002 boxes"),
        (["run", str(huge)], "need 74.51 GiB (float32); the limit is 16.00 GiB"),
        (["compile", str(huge), "--weights-out", str(tmp_path / "w.pt"), "-o", str(tmp_path / "m.py")], "the limit is 16.00 GiB"),
        (["run", str(wide), "--batch", "64"], "GiB of activations on the numpy backend; the limit is 16.00 GiB"),
    ]
    for args, message in cases:
        start = time.perf_counter()
        result = CliRunner().invoke(main, args)
        assert time.perf_counter() - start < 5, args
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
