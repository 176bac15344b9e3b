"""Long differential runs: random valid networks checked three ways (static inference,
the PyTorch module, the NumPy interpreter). `bench/differential.py --examples N`.

Prints how many networks were tried and every disagreement (with the network's text).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402
from differential import disagreements  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from strategies import networks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tried = 0
    distinct: set[str] = set()
    failures: list[tuple[str, list[str]]] = []

    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(source=networks())
    def run(source: str) -> None:
        nonlocal tried
        tried += 1
        distinct.add(source)
        problems = disagreements(source)
        if problems:
            failures.append((source, problems))

    start = time.perf_counter()
    run()
    print(f"networks tried: {tried:,} ({len(distinct):,} distinct) in {time.perf_counter() - start:.0f} s")
    print(f"disagreements: {len(failures)}")
    for source, problems in failures[:5]:
        print("---\n" + source + "\n" + "\n".join(problems))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
