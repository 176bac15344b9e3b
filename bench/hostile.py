"""Hostile input, timed as whole processes: the cases of issue 11 (D1-D12) against `cnndsl check` of ResNet-50.

Each case runs `cnndsl check` (or `compile`, `render`) in a fresh process, under a small
wrapper process that reports the child's peak memory (getrusage RUSAGE_CHILDREN, so each
case's peak is its own). Prints wall time and peak memory, each as a ratio to the same
run's `cnndsl check architectures/resnet50.cnn`, with the bound each case must stay under,
and whether the input was accepted or refused (as it must be).

Run: .venv/bin/python bench/hostile.py [--runs N]   (the median of N runs per case; default 1)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFECTS = ROOT / "tests" / "data" / "defects"

# Runs one command and prints its exit status, wall seconds and the child's peak RSS (KiB).
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
stdin = open(sys.argv[1], "rb") if sys.argv[1] != "-" else subprocess.DEVNULL
done = subprocess.run(sys.argv[2:], stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": done.returncode, "seconds": seconds, "peak_kib": peak, "stderr": done.stderr.decode()[-300:]}))
"""


@dataclass
class Case:
    name: str
    args: Callable[[Path], list[str]]
    """The cnndsl arguments, given a scratch folder to write inputs into."""
    expect: str
    """"accepted" (exit 0) or "refused" (exit 1 with a message)."""
    time_bound: float
    """Most wall time allowed, as a multiple of `check resnet50.cnn`."""
    memory_bound: float = 4.0
    """Most peak memory allowed, as a multiple of `check resnet50.cnn`."""
    stdin: str = "-"


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def syntax_errors(folder: Path, count: int) -> list[str]:
    lines = ["input 3x8x8"] + ["ReLU"] * 95_000
    for index in range(count):
        lines[len(lines) - 1 - index * 3000] = "ReLU ReLU"
    return ["check", "-q", write(folder, f"errors{count}.cnn", "\n".join(lines) + "\n")]


def sparse(folder: Path) -> list[str]:
    path = folder / "sparse.cnn"
    with open(path, "wb") as handle:
        handle.truncate(2 * 2**30)
    return ["check", "-q", str(path)]


def exponential(folder: Path) -> list[str]:
    text = (
        "input 3x8x8\nblock B0 = [ReLU]\n" + "".join(f"block B{i} = Add[B{i - 1} | B{i - 1}]\n" for i in range(1, 60)) + "B59\n"
    )
    return ["check", "-q", write(folder, "exp_add.cnn", text)]


def nested_adds(folder: Path, depth: int) -> list[str]:
    text = "input 3x8x8\n" + "Add[" * depth + "ReLU | ReLU]" + " | ReLU]" * (depth - 1) + "\n"
    return ["render", write(folder, f"nested{depth}.cnn", text), "-o", str(folder / f"nested{depth}.svg")]


CASES = [
    Case("D1 5,000-digit literal", lambda f: ["check", "-q", str(DEFECTS / "hugeint.cnn")], "refused", 2),
    Case("D2 400-digit literal", lambda f: ["check", "-q", str(DEFECTS / "int400.cnn")], "refused", 2),
    Case("D3 60,000 unary minus", lambda f: ["check", "-q", str(DEFECTS / "deepneg_block.cnn")], "refused", 4),
    Case("D4 label _1", lambda f: ["check", "-q", str(DEFECTS / "hang_label_underscore_digit.cnn")], "accepted", 2),
    Case("D5 4,000 `forward:` labels", lambda f: ["check", "-q", str(DEFECTS / "labels_reserved_4000.cnn")], "refused", 2),
    Case(
        "D5 33,000 `forward:` labels",
        lambda f: ["check", "-q", write(f, "fwd33k.cnn", "input 3x8x8\n" + "forward: ReLU\n" * 33_000)],
        "refused",
        20,  # 99,000 tokens: parsing them is most of it
    ),
    Case("D6 2,000 params x 1,000 calls", lambda f: ["check", "-q", str(DEFECTS / "blockparams_2000_1000.cnn")], "accepted", 3),
    Case(
        "D6 10,000 params x 10,000 calls",
        lambda f: [
            "check",
            "-q",
            write(
                f, "bp10k.cnn", "input 3x8x8\nblock B(" + ",".join(f"p{i}=1" for i in range(10_000)) + ") = [ReLU]\nB x 10000\n"
            ),
        ],
        "refused",
        3,
    ),
    Case("D7 exponential blocks (60 levels)", lambda f: ["check", "-q", str(DEFECTS / "exp60.cnn")], "refused", 2),
    Case("D7 exponential Add blocks", exponential, "refused", 2),
    Case("D8 1 syntax error after 95k lines", lambda f: syntax_errors(f, 1), "refused", 20),
    Case("D8 25 syntax errors in 95k lines", lambda f: syntax_errors(f, 25), "refused", 20),
    Case(
        "D9 50,000 unknown names",
        lambda f: ["check", "-q", write(f, "unknown.cnn", "input 3x8x8\n" + "\n".join(f"Foo{i}" for i in range(50_000)) + "\n")],
        "refused",
        12,
    ),
    Case(
        "D9 30,000 unknown keywords",
        lambda f: [
            "check",
            "-q",
            write(
                f, "kwargs.cnn", "input 3x8x8\nblock B(a=1) = [ReLU]\nB(" + ", ".join(f"k{i}=1" for i in range(30_000)) + ")\n"
            ),
        ],
        "refused",
        12,
    ),
    Case(
        "valid: 99,000 tokens",
        lambda f: ["check", "-q", write(f, "tokens.cnn", "input 3x8x8\n" + "ReLU\n" * 98_990)],
        "accepted",
        20,
    ),
    Case(
        "valid: 990,000 newlines",
        lambda f: ["check", "-q", write(f, "newlines.cnn", "input 3x8x8\n" + "\n" * 990_000 + "ReLU\n")],
        "accepted",
        4,
    ),
    Case(
        "valid: 49,000 branches",
        lambda f: ["check", "-q", write(f, "branches.cnn", "input 3x8x8\nAdd[" + " | " * 49_000 + "]\n")],
        "accepted",
        10,
    ),
    Case("D10 /dev/zero", lambda f: ["check", "-q", "/dev/zero"], "refused", 2),
    Case("D10 stdin from /dev/zero", lambda f: ["check", "-q", "-"], "refused", 2, stdin="/dev/zero"),
    Case("D10 2 GB sparse file", sparse, "refused", 2),
    Case(
        "D11 compile, 50 parameters",
        lambda f: ["compile", str(DEFECTS / "compile_params50.cnn"), "-o", str(f / "c50.py")],
        "accepted",
        20,
        memory_bound=8,
    ),
    Case("D12 render 70 nested Add", lambda f: nested_adds(f, 70), "refused", 2),
    Case("D12 render 150 nested Add", lambda f: nested_adds(f, 150), "refused", 2),
    Case(
        "D12 render 2,400 branches",
        lambda f: [
            "render",
            write(f, "wide.cnn", "input 3x8x8\nConcat[" + " | ".join(["ReLU"] * 2400) + "]\n"),
            "-o",
            str(f / "wide.svg"),
        ],
        "refused",
        2,
    ),
]


def measure(args: list[str], stdin: str, runs: int) -> tuple[int, float, float, str]:
    results = []
    for _ in range(runs):
        command = [sys.executable, "-c", WRAPPER, stdin, sys.executable, "-m", "cnndsl", *args]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        results.append(json.loads(done.stdout))
    seconds = statistics.median(r["seconds"] for r in results)
    peak = statistics.median(r["peak_kib"] for r in results) / 1024
    return results[0]["rc"], seconds, peak, results[0]["stderr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    runs = parser.parse_args().runs
    _, base_seconds, base_mib, _ = measure(["check", "-q", str(ROOT / "architectures" / "resnet50.cnn")], "-", max(runs, 3))
    print(f"baseline `cnndsl check architectures/resnet50.cnn`: {base_seconds * 1000:.0f} ms, {base_mib:.0f} MiB peak")
    print(f"{'case':36} {'outcome':9} {'time':>8} {'ratio':>6} {'bound':>6} {'memory':>8} {'ratio':>6} {'bound':>6}")
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        for case in CASES:
            rc, seconds, mib, stderr = measure(case.args(Path(scratch)), case.stdin, runs)
            outcome = "accepted" if rc == 0 else "refused" if rc == 1 and "Traceback" not in stderr else f"rc {rc}!"
            time_ratio, memory_ratio = seconds / base_seconds, mib / base_mib
            ok = outcome == case.expect and time_ratio <= case.time_bound and memory_ratio <= case.memory_bound
            failures += not ok
            print(
                f"{case.name:36} {outcome:9} {seconds * 1000:6.0f}ms {time_ratio:6.2f} {case.time_bound:6.1f} "
                f"{mib:6.0f}MiB {memory_ratio:6.2f} {case.memory_bound:6.1f}" + ("" if ok else "  <-- OVER")
            )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
