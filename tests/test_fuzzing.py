"""A CI-sized run of the grammar-aware fuzzer (bench/fuzz.py runs it for longer)."""

from __future__ import annotations

import os

from fuzzing import HOSTILE_LITERALS, HOSTILE_NAMES, Generator, check_one, hostile_structure, run


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


def test_hostile_seeds_are_answered_with_a_position_in_time() -> None:
    # Every hostile structure kind, and every hostile literal and name in argument, label,
    # parameter and network-name roles: each checks or is refused with a positioned error.
    import random

    rng = random.Random(7)
    sources = [hostile_structure(rng) for _ in range(24)]
    for literal in HOSTILE_LITERALS:
        sources += [
            f"input 3x8x8\nConv({literal}, 1)",
            f"input 3x8x8\nblock B(p={literal}) = [Dropout(p)]\nB",
            f"network N(c={literal})\ninput 3x8x8\nReLU x c",
        ]
    for name in HOSTILE_NAMES:
        sources += [f"input 3x8x8\n{name}: ReLU", f"network {name}({name}=4)\ninput 3x8x8\nConv({name}, 3)"]
    for source in sources:
        _, defect, _ = check_one(source, 5.0)
        assert defect is None, (defect, source[:200])
