"""A CI-sized run of the grammar-aware fuzzer (bench/fuzz.py runs it for longer)."""

from __future__ import annotations

import os

from fuzzing import Generator, check_one, run


def test_fuzzer_finds_no_defects() -> None:
    seconds = float(os.environ.get("CNNDSL_FUZZ_SECONDS", "20"))
    report = run(seconds, seed=int(os.environ.get("CNNDSL_FUZZ_SEED", "0")))
    assert report.tried > 200
    assert report.defects == [], report.defects[:3]


def test_the_generator_makes_valid_programs_too() -> None:
    import random

    generator = Generator(random.Random(1))
    accepted = sum(check_one(generator.program(), 2.0)[0] for _ in range(300))
    assert accepted > 10  # the fuzzer reaches the checker's deeper stages, not only the parser


def test_harness_reports_defects() -> None:
    accepted, defect, _ = check_one("input 3x8x8\nReLU", 2.0)
    assert accepted and defect is None
    accepted, defect, _ = check_one("input 3x8x8\nCnov", 2.0)
    assert not accepted and defect is None
