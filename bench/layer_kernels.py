"""The NumPy kernels of issues 14 and 15's layer kinds against PyTorch CPU eager, one line per kernel.

    python bench/layer_kernels.py [--rounds 9] [--batch 16] [--threads 1]

Each case is a small network (the kind alone, or after the convolution it pads), given the
same weights in both backends. Forward (eval, no gradients) and forward + backward (input and
parameter gradients) are timed alternately, NumPy then torch, round after round, so that
drifts in machine load hit both; a ratio is the median of the per-round ratios (NumPy time /
torch time; the goal is at most 1.5). Both run on `--threads` threads (OpenBLAS's and torch's),
set before either library loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = [
    ("PixelShuffle(3) (ESPCN's tail)", "9x64x64", "PixelShuffle(3)"),
    ("PixelUnshuffle(2)", "16x64x64", "PixelUnshuffle(2)"),
    ("Conv 3x3 pad_mode=reflect", "16x64x64", "Conv(16, 3, pad=1, pad_mode=reflect)"),
    ("Conv 3x3 pad_mode=replicate", "16x64x64", "Conv(16, 3, pad=1, pad_mode=replicate)"),
    ("Conv 3x3 pad_mode=circular", "16x64x64", "Conv(16, 3, pad=1, pad_mode=circular)"),
    ("Conv 3x3 pad=1 (zeros, for scale)", "16x64x64", "Conv(16, 3, pad=1)"),
    ("Conv 4x4 pad=same (one-sided)", "16x64x64", "Conv(16, 4, pad=same)"),
    ("DWConv 7x7 pad_mode=reflect", "32x64x64", "DWConv(7, pad=3, pad_mode=reflect)"),
    ("ELU", "32x64x64", "ELU"),
    ("Mish", "32x64x64", "Mish"),
    ("Softplus", "32x64x64", "Softplus"),
    ("GELU(approximate=tanh)", "32x64x64", "GELU(approximate=tanh)"),
    ("PReLU(32)", "32x64x64", "PReLU(32)"),
    ("LogSoftmax (channels)", "32x64x64", "LogSoftmax"),
    ("GlobalMaxPool", "32x64x64", "GlobalMaxPool"),
    ("AdaptiveMaxPool(7)", "32x64x64", "AdaptiveMaxPool(7)"),
    ("AdaptiveMaxPool(8) (divides)", "32x64x64", "AdaptiveMaxPool(8)"),
    ("AdaptiveMaxPool(100) 1-D", "32x4000", "AdaptiveMaxPool(100)"),
    ("AdaptiveMaxPool(2) 1-D (long bins)", "32x4000", "AdaptiveMaxPool(2)"),
    ("AdaptiveMaxPool((2, 7, 7)) 3-D", "16x8x32x32", "AdaptiveMaxPool((2, 7, 7))"),
    ("GlobalMaxPool 1-D", "32x4000", "GlobalMaxPool"),
    ("GlobalMaxPool 3-D", "16x8x32x32", "GlobalMaxPool"),
    ("ConvTranspose 2x2 stride 2 (U-Net)", "32x32x32", "ConvTranspose(16, 2, stride=2)"),
    ("ConvTranspose 4x4 stride 2 pad 1 (DCGAN)", "32x16x16", "ConvTranspose(16, 4, stride=2, pad=1)"),
    ("ConvTranspose 3x3 stride 1 pad 1", "16x32x32", "ConvTranspose(16, 3, pad=1)"),
    ("ConvTranspose 1-D 4 stride 2 pad 1", "32x1024", "ConvTranspose(16, 4, stride=2, pad=1)"),
    ("ConvTranspose 3-D 2x2x2 stride 2", "32x8x16x16", "ConvTranspose(16, 2, stride=2)"),
    ("ConvTranspose 3-D 3x3x3 stride 1 pad 1", "16x8x16x16", "ConvTranspose(16, 3, pad=1)"),
    ("Upsample(2) nearest", "32x32x32", "Upsample(2)"),
    ("Upsample(2, mode=bilinear)", "32x32x32", "Upsample(2, mode=bilinear)"),
    ("Upsample(size=(45, 45), mode=bilinear)", "32x32x32", "Upsample(size=(45, 45), mode=bilinear)"),
    ("Upsample(2) nearest 1-D", "32x2000", "Upsample(2)"),
    ("Upsample(2, mode=linear) 1-D", "32x2000", "Upsample(2, mode=linear)"),
    ("Upsample(2) nearest 3-D", "16x8x16x16", "Upsample(2)"),
    ("Upsample(2, mode=trilinear) 3-D", "16x8x16x16", "Upsample(2, mode=trilinear)"),
    ("GroupNorm(8) 1-D", "32x2000", "GroupNorm(8)"),
    ("GroupNorm(8) 2-D", "32x64x64", "GroupNorm(8)"),
    ("GroupNorm(8) 3-D", "32x8x16x16", "GroupNorm(8)"),
    ("InstanceNorm(affine=true) 1-D", "32x2000", "InstanceNorm(affine=true)"),
    ("InstanceNorm(affine=true) 3-D", "32x8x16x16", "InstanceNorm(affine=true)"),
    ("LRN(5) 1-D", "32x2000", "LRN(5)"),
    ("LRN(5) 3-D", "32x8x16x16", "LRN(5)"),
    ("Scale 1-D", "32x2000", "Scale(0.5)"),
    ("Scale 2-D", "32x64x64", "Scale(0.5)"),
    ("Scale 3-D", "32x8x16x16", "Scale(0.5)"),
    ("Dropout1d(0.1)", "32x2000", "Dropout1d(0.1)"),
    ("Dropout3d(0.1)", "32x8x16x16", "Dropout3d(0.1)"),
    ("ESPCN (architectures/espcn.cnn)", "1x64x64", None),
]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""`--clock cpu` counts this process's CPU time only: on a shared machine other jobs then slow
both sides alike (cache and memory contention) but not by the time they hold the cores."""
clock = time.perf_counter


def timed(action: Callable[[], object]) -> float:
    start = clock()
    action()
    return clock() - start


def measure(network: Any, options: argparse.Namespace, np: Any, torch: Any) -> tuple[float, float, list[float]]:
    """Median NumPy/torch ratios of the forward and of forward + backward, and torch's median times (ms)."""
    module = network.to_torch(seed=0)
    model = network.to_numpy({key: value.detach().numpy() for key, value in module.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((options.batch, *network.input_shape)).astype(np.float32)
    dy = rng.standard_normal((options.batch, *network.output_shape)).astype(np.float32)
    x_t, dy_t = torch.from_numpy(x), torch.from_numpy(dy)

    def numpy_forward() -> None:
        model.forward(x)

    def torch_forward() -> None:
        with torch.no_grad():
            module(x_t)

    def numpy_both() -> None:
        model.forward(x, grad=True)
        model.backward(dy)

    def torch_both() -> None:
        leaf = x_t.detach().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        module(leaf).backward(dy_t)

    for action in (numpy_forward, torch_forward, numpy_both, torch_both):  # warm-up: buffers, oneDNN primitives
        action()
    forward, both, torch_times = [], [], ([], [])
    for _ in range(options.rounds):
        n, t = timed(numpy_forward), timed(torch_forward)
        forward.append(n / t)
        torch_times[0].append(t)
        n, t = timed(numpy_both), timed(torch_both)
        both.append(n / t)
        torch_times[1].append(t)
    return statistics.median(forward), statistics.median(both), [statistics.median(times) * 1000 for times in torch_times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the cases whose label contains this text")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time, or this process's CPU time")
    options = parser.parse_args()
    global clock
    clock = CLOCKS[options.clock]
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(options.threads)

    import numpy as np
    import torch

    import cnndsl

    torch.set_num_threads(options.threads)
    print(
        f"batch {options.batch}, {options.threads} thread(s), {options.clock} clock, median of {options.rounds} rounds; "
        "ratio = NumPy / torch"
    )
    print(f"{'kernel':40} {'input':>10} {'forward':>9} {'fwd+bwd':>9}   torch fwd, fwd+bwd (ms)")
    for label, shape, body in CASES:
        if options.only not in label:
            continue
        if body is None:
            network = cnndsl.load(ROOT / "architectures" / "espcn.cnn")
        else:
            network = cnndsl.parse(f"input {shape}\n{body}\n", "<bench>")
        forward, both, ms = measure(network, options, np, torch)
        print(f"{label:40} {shape:>10} {forward:8.2f}x {both:8.2f}x   {ms[0]:.2f}, {ms[1]:.2f}")
    if options.only in "padding alone":
        padding_alone(options, np, torch)


def padding_alone(options: argparse.Namespace, np: Any, torch: Any) -> None:
    """The padding itself (cnndsl.numpy_ops.pad_borders and fold_borders) against F.pad and its backward."""
    from cnndsl import numpy_ops

    x = np.random.default_rng(1).standard_normal((options.batch, 16, 64, 64)).astype(np.float32)
    x_t = torch.from_numpy(x)
    pads, torch_pads = ((2, 2), (2, 2)), (2, 2, 2, 2)
    for mode, torch_mode in (("reflect", "reflect"), ("replicate", "replicate"), ("circular", "circular")):
        padded = numpy_ops.pad_borders(x, pads, mode)
        dy = np.ones_like(padded)
        dy_t = torch.from_numpy(dy)

        def numpy_both(mode: str = mode, dy: Any = dy) -> None:
            numpy_ops.pad_borders(x, pads, mode)
            numpy_ops.fold_borders(dy, pads, mode, (64, 64))

        def torch_both(torch_mode: str = torch_mode, dy_t: Any = dy_t) -> None:
            leaf = x_t.detach().requires_grad_(True)
            torch.nn.functional.pad(leaf, torch_pads, mode=torch_mode).backward(dy_t)

        def numpy_forward(mode: str = mode) -> None:
            numpy_ops.pad_borders(x, pads, mode)

        def torch_forward(torch_mode: str = torch_mode) -> None:
            with torch.no_grad():
                torch.nn.functional.pad(x_t, torch_pads, mode=torch_mode)

        for action in (numpy_forward, torch_forward, numpy_both, torch_both):
            action()
        forward = [timed(numpy_forward) / timed(torch_forward) for _ in range(options.rounds)]
        both = [timed(numpy_both) / timed(torch_both) for _ in range(options.rounds)]
        label = f"padding alone, {mode} 2"
        print(f"{label:40} {'16x64x64':>10} {statistics.median(forward):8.2f}x {statistics.median(both):8.2f}x")


if __name__ == "__main__":
    main()
