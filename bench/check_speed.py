"""How fast `cnndsl check` answers, against baselines measured in the same run.

Prints:
- whole-process time of `cnndsl check architectures/resnet50.cnn` as a ratio to
  `python -c "import torch"` (goal <= 0.1), medians of several runs each;
- in-process check time of ResNet-50 in milliseconds;
- check time of generated networks of 1,000 / 10,000 / 100,000 layers, written with
  repetition and written out line by line, with the time per layer (cost must grow
  linearly; 10,000 layers in under a second).

With `--against DIR` (a checkout of an earlier version, e.g. `git worktree add /tmp/before REV`),
it first times `cnndsl check` of ResNet-50 in both trees, runs alternating, and prints
after/before: the "checking time does not grow" comparison, in one run.

Processes run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed) after one untimed
warm-up, as an installed package runs: pip compiles the modules when it installs them.

Run: .venv/bin/python bench/check_speed.py [--runs N] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cnndsl
from cnndsl.limits import MAX_TOKENS

ROOT = Path(__file__).resolve().parent.parent
RESNET50 = ROOT / "architectures" / "resnet50.cnn"


ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def process_seconds(args: list[str], runs: int, tree: Path = ROOT) -> float:
    env = {**ENV, "PYTHONPATH": str(tree)}  # the tree's own cnndsl, whatever is installed
    subprocess.run(args, check=True, capture_output=True, cwd=tree, env=env)  # warm-up: writes the bytecode caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, cwd=tree, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def before_and_after(before: Path, runs: int) -> None:
    """Whole-process check of ResNet-50 in an earlier checkout and in this one, alternating."""
    args = [sys.executable, "-m", "cnndsl", "check", "-q", "architectures/resnet50.cnn"]
    pairs = [(process_seconds(args, 1, before), process_seconds(args, 1, ROOT)) for _ in range(runs)]
    old = statistics.median(p[0] for p in pairs)
    new = statistics.median(p[1] for p in pairs)
    print(f"cnndsl check resnet50.cnn, {before}: {old * 1000:.0f} ms; this tree: {new * 1000:.0f} ms")
    print(f"after/before: {new / old:.2f}  (goal <= 1.0: checking does not grow)")


def in_process_seconds(source: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        net, diagnostics = cnndsl.check_source(source)
        times.append(time.perf_counter() - start)
        assert net is not None, diagnostics
    return statistics.median(times)


def generated(layers: int, written_out: bool) -> str:
    # Two layers per unit: a conv and its activation, on a small map so shapes stay fixed.
    units = layers // 2
    if written_out:
        return "input 8x16x16\n" + "Conv(8, 3, pad=1), ReLU\n" * units
    return f"input 8x16x16\n[Conv(8, 3, pad=1), ReLU] x {units}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", type=Path, help="a checkout of an earlier version to compare with")
    options = parser.parse_args()
    runs = options.runs
    if options.against is not None:
        before_and_after(options.against.resolve(), max(runs, 9))

    check = process_seconds([sys.executable, "-m", "cnndsl", "check", "-q", str(RESNET50)], runs)
    torch_import = process_seconds([sys.executable, "-c", "import torch"], runs)
    print(f"cnndsl check resnet50.cnn (whole process): {check * 1000:.0f} ms")
    print(f"python -c 'import torch':                 {torch_import * 1000:.0f} ms")
    print(f"ratio: {check / torch_import:.3f}  (goal <= 0.1)")

    source = RESNET50.read_text()
    print(f"in-process check of ResNet-50: {in_process_seconds(source, runs) * 1000:.1f} ms")

    for written_out in (False, True):
        label = "written out" if written_out else "with repetition"
        for layers in (1_000, 10_000, 100_000):
            if written_out and layers > 40_000:
                print(f"{layers:>7,} layers, {label}: beyond the {MAX_TOKENS:,}-token limit for a file")
                continue
            seconds = in_process_seconds(generated(layers, written_out), 1 if layers >= 100_000 else 3)
            print(f"{layers:>7,} layers, {label}: {seconds:.3f} s ({seconds / layers * 1e6:.1f} us/layer)")


if __name__ == "__main__":
    main()
