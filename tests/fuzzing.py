"""A grammar-aware fuzzer for the checker, shared by tests/test_fuzzing.py and bench/fuzz.py.

Inputs come from five sources: programs generated from the language's grammar (mostly
plausible, sometimes not, with hostile literals and names mixed in), those programs mutated
token by token, the zoo files mutated byte by byte, random token soup, and hostile
structures (deep nesting, exponential blocks, many parameters, many errors). Every input
must either check or be refused with a CnnDslError-style diagnostic that has a position
inside the file, within a time limit.
"""

from __future__ import annotations

import random
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cnndsl

ZOO = sorted((Path(__file__).resolve().parent.parent / "architectures").glob("*.cnn"))
LAYERS = [
    "Conv",
    "conv2d",
    "DWConv",
    "Pool",
    "MaxPool",
    "AvgPool",
    "GlobalAvgPool",
    "AdaptiveAvgPool",
    "FC",
    "Linear",
    "flatten",
    "BN",
    "Dropout",
    "ReLU",
    "ReLU6",
    "Sigmoid",
    "Tanh",
    "GELU",
    "SiLU",
    "Hardswish",
    "Hardsigmoid",
    "Softmax",
    "LeakyReLU",
    "ChannelShuffle",
    "Chunk",
    "Identity",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm2d",
    "LRN",
    "Scale",
    "PointwiseFC",
    "StochasticDepth",
    "Dropout2d",
    "Cnov",
    "B1",
    "B2",
]
WORDS = ["stride", "pad", "groups", "bias", "dilation", "ceil", "kernel", "out", "p", "eps", "size", "multiplier", "nope"]
WORDS += ["mode", "affine"]  # the norms' arguments

# Literals a security review used to crash or hang the checker (issue 11: D1-D3, D24).
HOSTILE_LITERALS = [
    "9" * 20,
    "9" * 400,
    "9" * 5000,
    "0" * 30 + "7",
    "4611686018427387905",
    "1e999",
    "1e-999",
    "0." + "9" * 400,
    "nan",
    "inf",
    "-" * 3000 + "1",
    "+".join(["1"] * 2000),
    "(" * 150 + "1" + ")" * 150,
]
# Names that Python, PyTorch or the generated code reserve, and very long ones (D4, D25).
HOSTILE_NAMES = [
    "__debug__",
    "__class__",
    "__x",
    "_1",
    "_",
    "__",
    "forward",
    "forward_",
    "training",
    "class",
    "self",
    "x",
    "super",
    "in_channels",
    "n" * 3000,
]


class Generator:
    """Random programs following the grammar, with a sprinkling of mistakes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def number(self) -> str:
        r = self.rng
        if r.random() < 0.03:
            return r.choice(HOSTILE_LITERALS)
        return r.choice(
            [
                "0",
                "1",
                "2",
                "3",
                "4",
                "5",
                "7",
                "8",
                "16",
                "32",
                "64",
                "0.5",
                "1e-5",
                "-1",
                "1000000",
                "99999999999999999999",
                "c",
                "n",
                "in_channels",
                "true",
                "same",
            ]
        )

    def expr(self, depth: int = 0) -> str:
        r = self.rng
        if depth > 2 or r.random() < 0.6:
            return self.number()
        return r.choice(
            [
                f"{self.expr(depth + 1)} {r.choice(['+', '-', '*', '/', '//', '%'])} {self.expr(depth + 1)}",
                f"({self.expr(depth + 1)})",
                f"({self.expr(depth + 1)}, {self.expr(depth + 1)})",
                f"-{self.expr(depth + 1)}",
            ]
        )

    def call(self) -> str:
        r = self.rng
        if r.random() < 0.6:  # well-formed calls keep many programs valid, so the fuzzer goes deep
            return r.choice(
                [
                    "Conv(8, 3, pad=1)",
                    "ReLU",
                    "BN",
                    "Conv(in_channels, 1)",
                    "DWConv(3, pad=1)",
                    "Identity",
                    "Dropout(0.1)",
                    "SiLU",
                    "Conv(c, 1)",
                    "AvgPool(3, stride=1, pad=1)",
                    "Conv(n * 4, (1, 3), pad=(0, 1))",
                ]
            )
        name = r.choice(LAYERS)
        if r.random() < 0.3:
            return name
        args = [self.expr() for _ in range(r.randint(0, 3))]
        args += [f"{r.choice(WORDS)}={self.expr()}" for _ in range(r.randint(0, 2))]
        return f"{name}({', '.join(args)})"

    def element(self, depth: int = 0) -> str:
        r = self.rng
        roll = r.random()
        if depth > 3 or roll < 0.5:
            text = self.call()
        elif roll < 0.65:
            text = f"[{self.sequence(depth + 1)}]"
        elif roll < 0.85:
            merge = r.choice(["Add", "Concat", "Mul", "add", "Sum"])
            text = (
                f"{merge}[ "
                + " | ".join(self.sequence(depth + 1) if r.random() < 0.8 else "" for _ in range(r.randint(1, 3)))
                + " ]"
            )
        else:
            text = f"{self.element(depth + 1)} {r.choice(['x', '*'])} {r.choice(['1', '2', '3', 'n', '(n + 1)', '0', '2.5'])}"
        if r.random() < 0.1:
            text = f"{r.choice(['stem', 'a', 'b', 'layer1', *HOSTILE_NAMES])}: {text}"
        return text

    def sequence(self, depth: int = 0) -> str:
        return self.rng.choice([", ", "\n", ",\n"]).join(self.element(depth) for _ in range(self.rng.randint(1, 4)))

    def program(self) -> str:
        r = self.rng
        lines = []
        if r.random() < 0.85:
            name = r.choice(HOSTILE_NAMES) if r.random() < 0.05 else "Net"
            hostile = r.choice(HOSTILE_NAMES)
            lines.append(f"network {name}{r.choice(['', '(n=2, c=8)', '(n=2, c=8)', '(c)', f'(n=2, c=8, {hostile}=3)'])}")
        if r.random() < 0.95:
            lines.append(f"input {r.choice(['3x32x32', '3x32x32', '1x8x8', '16x7x7', '64', '3x64x64', '8x8', '0x4x4'])}")
        if r.random() < 0.3:
            lines.append(f"defaults {self.call()}, {self.call()}")
        for name in ("B1", "B2"):
            if r.random() < 0.3:
                lines.append(f"block {name}(c, s=1) = [{self.sequence(2)}]")
        lines.append(self.sequence())
        return "\n".join(lines) + "\n"


def mutate_tokens(text: str, rng: random.Random) -> str:
    tokens = text.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split(" ")
    for _ in range(rng.randint(1, 4)):
        if not tokens:
            break
        i = rng.randrange(len(tokens))
        action = rng.random()
        if action < 0.3:
            del tokens[i]
        elif action < 0.6:
            tokens.insert(i, rng.choice(tokens))
        elif action < 0.8:
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens[i] = rng.choice(["[", "]", "(", ")", "|", "x", "*", ":", "=", "\n", ",", "#", "\x00", "é", "9" * 30])
    return " ".join(tokens)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not buffer:
            break
        i = rng.randrange(len(buffer))
        action = rng.random()
        if action < 0.4:
            buffer[i] = rng.randrange(256)
        elif action < 0.7:
            del buffer[i : i + rng.randint(1, 30)]
        else:
            j = min(len(buffer), i + rng.randint(1, 60))
            buffer[i:i] = buffer[i:j] * rng.randint(1, 3)
    return bytes(buffer)


def hostile_structure(rng: random.Random) -> str:
    """A program whose shape once made checking hang, blow up or crash (issue 11: D3-D9), at a random size."""
    head = "input 3x8x8\n"
    kind = rng.randrange(8)
    if kind == 0:  # exponential blocks: each calls the previous twice (or merges two of them)
        levels = rng.randint(20, 64)
        body = rng.choice(["[B{0}, B{0}]", "Add[B{0} | B{0}]", "[B{0} x 2]"])
        return (
            head
            + "block B0 = [ReLU]\n"
            + "".join(f"block B{i} = " + body.format(i - 1) + "\n" for i in range(1, levels))
            + f"B{levels - 1}\n"
        )
    if kind == 1:  # many defaulted block parameters, many calls
        params = rng.randint(100, 3000)
        calls = rng.randint(100, 3000)
        return head + "block B(" + ",".join(f"p{i}=1" for i in range(params)) + f") = [ReLU]\nB x {calls}\n"
    if kind == 2:  # deeply nested merges and brackets
        depth = rng.randint(50, 250)
        opener = rng.choice(["Add[", "[", "Concat["])
        closer = " | ReLU]" if opener != "[" else "]"
        return head + opener * depth + "ReLU" + closer * depth + "\n"
    if kind == 3:  # labels Python or PyTorch reserve, repeated
        name = rng.choice(HOSTILE_NAMES[:-1])
        return head + f"{name}: ReLU\n" * rng.randint(100, 5000)
    if kind == 4:  # many unknown names or keyword arguments
        if rng.random() < 0.5:
            return head + "\n".join(f"Foo{i}" for i in range(rng.randint(100, 20000))) + "\n"
        return head + "block B(a=1) = [ReLU]\nB(" + ", ".join(f"k{i}=1" for i in range(rng.randint(100, 20000))) + ")\n"
    if kind == 5:  # syntax errors spread over a long file
        lines = ["ReLU"] * rng.randint(1000, 30000)
        for _ in range(rng.randint(1, 40)):
            lines[rng.randrange(len(lines))] = rng.choice(["ReLU ReLU", "Conv(", "]", "|", "x", "Conv(1,,2)"])
        return head + "\n".join(lines) + "\n"
    if kind == 6:  # deep unary minus or long sums in a block argument
        operand = "-" * rng.randint(600, 20000) + "1" if rng.random() < 0.5 else "+".join(["1"] * rng.randint(600, 20000))
        return head + f"block B(c) = [Conv(4, 1)]\nB({operand})\n"
    return head + "Concat[" + " | ".join(["ReLU"] * rng.randint(100, 5000)) + "]\n"  # wide merges


def inputs(rng: random.Random) -> Iterator[str | bytes]:
    """An endless mix of the five input sources."""
    generator = Generator(rng)
    zoo = [path.read_bytes() for path in ZOO]
    while True:
        roll = rng.random()
        if roll < 0.02:
            yield hostile_structure(rng)
        elif roll < 0.35:
            yield generator.program()
        elif roll < 0.6:
            yield mutate_tokens(generator.program(), rng)
        elif roll < 0.9 and zoo:
            yield mutate_bytes(rng.choice(zoo), rng)
        else:
            soup = [
                rng.choice(LAYERS + WORDS + ["[", "]", "(", ")", "|", "x", ",", "\n", "3", "input 3x8x8\n"]) for _ in range(30)
            ]
            yield " ".join(soup)


class InputTimeout(Exception):
    pass


@dataclass
class Report:
    tried: int = 0
    accepted: int = 0
    defects: list[tuple[str, str | bytes]] = field(default_factory=list)
    slowest: float = 0.0


def check_one(source: str | bytes, time_limit: float) -> tuple[bool, str | None, float]:
    """(accepted, defect description or None, seconds) for one input, under a time limit."""

    def expire(signum: int, frame: object) -> None:
        raise InputTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    start = time.perf_counter()
    try:
        net, diagnostics = cnndsl.check_source(source, "fuzz.cnn")
        if net is None:
            errors = [d for d in diagnostics if d.severity == "error"]
            if not errors:
                return False, "refused without an error diagnostic", time.perf_counter() - start
            lines = (source if isinstance(source, str) else source.decode("utf-8", "replace")).count("\n") + 1
            for diagnostic in errors:
                diagnostic.format()
                position = diagnostic.position
                if position is None or not 1 <= position.line <= lines + 1 or position.column < 1:
                    return False, f"error without a position inside the file: {diagnostic.message}", time.perf_counter() - start
        else:
            net.summary()
        return net is not None, None, time.perf_counter() - start
    except InputTimeout:
        return False, f"took longer than {time_limit} s", time.perf_counter() - start
    except Exception:  # the point of fuzzing: anything else escaping is a defect
        return False, traceback.format_exc(limit=4), time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(
    seconds: float, seed: int = 0, time_limit: float = 2.0, on_defect: Callable[[str, str | bytes], None] | None = None
) -> Report:
    rng = random.Random(seed)
    report = Report()
    deadline = time.perf_counter() + seconds
    for source in inputs(rng):
        if time.perf_counter() > deadline:
            break
        accepted, defect, elapsed = check_one(source, time_limit)
        report.tried += 1
        report.accepted += accepted
        report.slowest = max(report.slowest, elapsed)
        if defect is not None:
            report.defects.append((defect, source))
            if on_defect:
                on_defect(defect, source)
    return report
