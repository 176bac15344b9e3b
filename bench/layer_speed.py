"""One layer kind at a time: the NumPy backend's kernels against PyTorch CPU eager, in one run.

    python bench/layer_speed.py [--rounds 7] [--batch 8] [--only LayerNorm,GroupNorm]

Each case is a one-layer network on a typical feature map (ConvNeXt-T's first stage,
96x56x56; AlexNet's first LRN, 96x55x55). Forward (eval, no grad) and forward plus backward
(train mode, the backward after a recording forward) are timed alternately (the forward of
Dropout2d and StochasticDepth in train mode: in eval they are the identity), NumPy then
torch, round after round, so that drifts in machine load hit both; the reported ratio is the
median of the per-round ratios (NumPy time / torch time; below 1 means NumPy is faster).
The same weights in both; thread settings left as they are unless --torch-threads is given
(on a small shared machine torch's waiting OpenMP threads can dominate tiny layers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cnndsl  # noqa: E402

TRAIN_FORWARD = ("Dropout2d", "StochasticDepth")
"""Kinds whose eval forward is the identity: their forward is timed in train mode, where they work."""

CASES: list[tuple[str, str, str]] = [
    ("LayerNorm", "96x56x56", "LayerNorm(eps=1e-6)"),
    ("LayerNorm", "768", "LayerNorm(eps=1e-6)"),
    ("GroupNorm", "96x56x56", "GroupNorm(32)"),
    ("InstanceNorm", "64x56x56", "InstanceNorm(affine=true)"),
    ("InstanceNorm", "64x56x56", "InstanceNorm(affine=true, track_running_stats=true)"),
    ("LocalResponseNorm", "96x55x55", "LRN(5, alpha=5e-4, k=2)"),
    ("Scale", "96x56x56", "Scale"),
    ("PointwiseFC", "96x56x56", "PointwiseFC(384)"),
    ("Dropout2d", "96x56x56", "Dropout2d(0.1)"),
    ("StochasticDepth", "96x56x56", "StochasticDepth(0.1)"),
]
"""(kind, input shape, body)."""


def per_call(run: Callable[[], object], budget: float = 0.05) -> float:
    """Seconds per call: one untimed warm-up, then calls in a row until `budget` seconds have passed."""
    run()
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / calls


def measure(kind: str, shape: str, body: str, batch: int, rounds: int) -> tuple[float, float, float, float]:
    """(forward ratio, train step ratio, NumPy forward ms, torch forward ms), medians over rounds.

    The kernels alone on both sides: the kind's np_forward / np_backward, and the torch leaf
    module (no input validation or output copies of either backend's whole-network wrapper).
    """
    import torch

    from cnndsl.numpy_ops import NpContext

    net = cnndsl.parse(f"input {shape}\n{body}\n")
    [layer] = net.layers
    module = net.to_torch(seed=0).get_submodule(layer.path)
    model = net.to_numpy({f"{layer.path}.{key}": value.numpy() for key, value in module.state_dict().items()})
    params = model.tensors.get(layer.path, {})
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    x_t = torch.from_numpy(x)
    dy = np.random.default_rng(1).standard_normal((batch, *net.output_shape)).astype(np.float32)
    dy_t = torch.from_numpy(dy)
    train = kind in TRAIN_FORWARD
    rng = np.random.default_rng(0)

    def numpy_forward() -> object:
        return layer.kind.np_forward(layer.args, params, x, NpContext(rng), train)

    def torch_forward() -> object:
        with torch.no_grad():
            return module.train(train)(x_t)

    def numpy_step() -> object:
        ctx = NpContext(rng, record=True)
        layer.kind.np_forward(layer.args, params, x, ctx, True)
        return layer.kind.np_backward(layer.args, params, ctx, dy)

    def torch_step() -> object:
        leaf = x_t.clone().requires_grad_(True)
        module.train()(leaf).backward(dy_t)
        return leaf.grad

    forward, step, numpy_ms, torch_ms = [], [], [], []
    for _ in range(rounds):
        a, b = per_call(numpy_forward), per_call(torch_forward)
        forward.append(a / b)
        numpy_ms.append(a * 1e3)
        torch_ms.append(b * 1e3)
        step.append(per_call(numpy_step) / per_call(torch_step))
    return (
        statistics.median(forward),
        statistics.median(step),
        statistics.median(numpy_ms),
        statistics.median(torch_ms),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated kinds (default: every case)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (default: torch's own)")
    options = parser.parse_args()
    if options.torch_threads:
        import torch

        torch.set_num_threads(options.torch_threads)
    only = {name.strip() for name in options.only.split(",") if name.strip()}
    print(f"batch {options.batch}, {options.rounds} rounds; ratio = NumPy time / torch time (median of rounds)")
    print("| layer | input | forward ratio | NumPy / torch forward (ms) | forward + backward ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kind, shape, body in CASES:
        if only and kind not in only:
            continue
        forward, step, numpy_ms, torch_ms = measure(kind, shape, body, options.batch, options.rounds)
        print(f"| `{body}` | {shape} | {forward:.2f}x | {numpy_ms:.1f} / {torch_ms:.1f} | {step:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
