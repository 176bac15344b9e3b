"""Random valid networks checked three ways (checker, PyTorch, NumPy); see tests/differential.py.

Counterexamples that a run ever finds are added below with @example, as regression tests.
"""

from __future__ import annotations

import os

from differential import disagreements
from hypothesis import HealthCheck, example, given, settings
from strategies import networks

REGRESSIONS = [
    # Shapes that stress the arithmetic: ceil mode dropping a window, dilation with pad=same, a
    # strided 1x1 shortcut on an odd map, and a Chunk split inside Concat.
    "input 3x7x9\nMaxPool(2, stride=2, pad=1, ceil=true), Conv(4, 3, pad=same, dilation=2), "
    "Add[ Conv(4, 1, stride=2) | AvgPool(3, stride=2, pad=1) , Conv(4, 1) ]",
    "input 8x5x5\nConcat[ Chunk(2, 0) | Chunk(2, 1), DWConv(3, pad=1), BN, ReLU ], ChannelShuffle(2), GlobalAvgPool, flatten, FC(3)",
    # Found by bench/differential.py at a 1e-6 tolerance: float64 rounding amplified to ~1.7e-6 by
    # train-mode BatchNorm over two nearly equal values, and by an input gradient through a
    # saturated Softmax. Not bugs; they pin the tolerance (1e-5) from below.
    "network Flat(classes=4)\ninput 2\nFC(1, bias=true), GELU, FC(3, bias=true), BN, FC(classes)",
    "network Flat(classes=6)\ninput 6\nFC(16, bias=false), GELU, FC(4, bias=false), Softmax, FC(2, bias=true), GELU, FC(classes)",
    # References: a skip tensor concatenated after pooling, an @input restart, two outputs, and
    # a tensor that the chain, a merge and an output all read (its gradients are summed).
    "input 3x8x8\noutput head, s\ns: [Conv(4, 3, pad=1), BN, ReLU]\nMaxPool(2)\nConcat[@s, MaxPool(2) | Conv(2, 1)]\n"
    "Add[@input, Conv(6, 2, stride=2) | Identity]\nhead: Mul[@s, AvgPool(2), Conv(6, 1) | Sigmoid]",
]


@settings(
    max_examples=int(os.environ.get("CNNDSL_DIFFERENTIAL_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(source=networks())
@example(source=REGRESSIONS[0])
@example(source=REGRESSIONS[1])
@example(source=REGRESSIONS[2])
@example(source=REGRESSIONS[3])
@example(source=REGRESSIONS[4])
def test_checker_torch_and_numpy_agree(source: str) -> None:
    assert disagreements(source) == [], source
