"""Long fuzzing runs of the checker: `bench/fuzz.py --minutes N [--seed S] [--workers W]`.

Reports the inputs tried, how many checked, the slowest input and every defect (an
exception other than a diagnostic, an error without a position in the file, or an input
over the per-input time limit). Defective inputs are saved under bench/fuzz-defects/.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzzing import Report, run  # noqa: E402

DEFECTS = Path(__file__).resolve().parent / "fuzz-defects"


def save(defect: str, source: str | bytes) -> None:
    data = source.encode() if isinstance(source, str) else source
    DEFECTS.mkdir(exist_ok=True)
    name = hashlib.sha256(data).hexdigest()[:12]
    (DEFECTS / f"{name}.cnn").write_bytes(data)
    (DEFECTS / f"{name}.txt").write_text(defect)


def worker(seconds: float, seed: int, time_limit: float) -> Report:
    return run(seconds, seed=seed, time_limit=time_limit, on_defect=save)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=2.0, help="seconds allowed per input")
    args = parser.parse_args()
    start = time.perf_counter()
    seconds = args.minutes * 60
    with ProcessPoolExecutor(args.workers) as pool:
        reports = list(
            pool.map(
                worker, [seconds] * args.workers, range(args.seed, args.seed + args.workers), [args.time_limit] * args.workers
            )
        )
    tried = sum(r.tried for r in reports)
    accepted = sum(r.accepted for r in reports)
    defects = [d for r in reports for d in r.defects]
    elapsed = time.perf_counter() - start
    print(f"inputs tried: {tried:,} in {elapsed:.0f} s ({tried / elapsed:.0f}/s, {args.workers} worker(s), seed {args.seed})")
    print(f"checked without error: {accepted:,}; refused with a positioned diagnostic: {tried - accepted - len(defects):,}")
    print(f"slowest input: {max(r.slowest for r in reports):.3f} s (limit {args.time_limit} s)")
    print(f"defects: {len(defects)}" + (f" (saved under {DEFECTS})" if defects else ""))
    for defect, _ in defects[:10]:
        print("  " + defect.strip().splitlines()[-1])
    sys.exit(1 if defects else 0)


if __name__ == "__main__":
    main()
