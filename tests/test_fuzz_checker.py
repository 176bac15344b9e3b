"""Property tests: the checker never raises anything but CnnDslError, whatever the input."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import CnnDslError

ZOO = sorted((Path(__file__).resolve().parent.parent / "architectures").glob("*.cnn"))

TOKENS = [
    "input",
    "network",
    "defaults",
    "block",
    "3x32x32",
    "1x8x8",
    "784",
    "Conv",
    "conv",
    "DWConv",
    "Pool",
    "MaxPool",
    "AvgPool",
    "FC",
    "flatten",
    "BN",
    "ReLU",
    "Identity",
    "Add",
    "Concat",
    "Mul",
    "Chunk",
    "GlobalAvgPool",
    "AdaptiveAvgPool",
    "Dropout",
    "Softmax",
    "ChannelShuffle",
    "Basic",
    "c",
    "x",
    "x2",
    "*",
    "(",
    ")",
    "[",
    "]",
    "|",
    ",",
    "\n",
    ":",
    "=",
    "+",
    "-",
    "/",
    "//",
    "%",
    "0",
    "1",
    "2",
    "3",
    "7",
    "64",
    "0.5",
    "1e-5",
    "true",
    "false",
    "same",
    "stride",
    "pad",
    "groups",
    "bias",
    "in_channels",
    "stem",
    "# c\n",
    "(3, 3)",
    "kernel",
    "out",
]


def check_never_crashes(source: str | bytes) -> None:
    try:
        net, diagnostics = cnndsl.check_source(source, "fuzz.cnn")
    except CnnDslError:  # check_source reports rather than raises; parse() raises
        raise AssertionError("check_source must not raise") from None
    if net is None:
        assert any(d.severity == "error" for d in diagnostics)
        for diagnostic in diagnostics:
            diagnostic.format()
            if diagnostic.position is not None:
                assert diagnostic.position.line >= 1 and diagnostic.position.column >= 1
    else:
        net.summary()
        net.to_json()


FUZZ = settings(
    max_examples=int(os.environ.get("CNNDSL_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_random_text(text: str) -> None:
    check_never_crashes(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_random_token_sequences(text: str) -> None:
    check_never_crashes("input 3x16x16\n" + text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_random_token_sequences_without_spaces(text: str) -> None:
    check_never_crashes(text)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check_never_crashes(data)


@FUZZ
@given(st.sampled_from(ZOO), st.data())
def test_mutated_zoo_files(path: Path, data: st.DataObject) -> None:
    source = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 5))):
        position = data.draw(st.integers(0, len(source) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        if action == "flip":
            source[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del source[position : position + data.draw(st.integers(1, 20))]
        elif action == "insert":
            source[position:position] = data.draw(st.sampled_from([t.encode() for t in TOKENS]))
        else:
            end = position + data.draw(st.integers(1, 40))
            source[position:position] = source[position:end]
        if not source:
            break
    check_never_crashes(bytes(source))
