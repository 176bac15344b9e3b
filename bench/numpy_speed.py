"""NumPy backend against PyTorch CPU eager: ResNet-18, batch 8, 3x224x224, same weights, same process.

    python bench/numpy_speed.py [--rounds 7] [--batch 8] [--file architectures/resnet18.cnn]

Forward (eval) and backward (train mode, after a recording forward) are timed alternately,
NumPy then torch, round after round, so that drifts in machine load hit both; the reported
ratio is the median of the per-round ratios. Peak extra memory of one inference forward is
measured in a fresh subprocess per backend, with the model and the input already in memory:
the rise of the resident set size over its value just before the forward, sampled every
0.2 ms by a thread, for the first forward ("cold": one-time buffers of OpenBLAS, oneDNN and
malloc count) and for a second one ("warm"). (ru_maxrss would not do: a child inherits
the parent's high-water mark across fork and exec.) For NumPy, tracemalloc's peak (live arrays only) is printed too. Thread settings
are left as they are (OpenBLAS and torch each use their defaults).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cnndsl  # noqa: E402


def rss_bytes() -> int:
    """Current resident set size."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


class RssSampler:
    """Polls the resident set size in a thread (NumPy and BLAS release the GIL while they work)."""

    def __init__(self) -> None:
        import threading

        self.start = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.0002)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def memory_probe(file: str, batch: int, backend: str) -> dict[str, float]:
    """Run in a subprocess: peak extra memory of the first (cold) and of a second (warm) forward."""
    import tracemalloc

    net = cnndsl.load(file)
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    result: dict[str, float] = {}
    if backend == "numpy":
        model = net.to_numpy()
        with RssSampler() as sampler:
            model(x)
        result["rss_peak_extra"] = sampler.peak - sampler.start
        tracemalloc.start()
        model(x)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["tracemalloc_peak"] = peak
        start = rss_bytes()
        with RssSampler() as sampler:
            model(x)
        result["warm_extra"] = sampler.peak - start
    else:
        import torch

        module = net.to_torch(seed=0).eval()
        tensor = torch.from_numpy(x)
        with torch.no_grad():
            with RssSampler() as sampler:
                module(tensor)
            result["rss_peak_extra"] = sampler.peak - sampler.start
            start = rss_bytes()
            with RssSampler() as sampler:
                module(tensor)
        result["warm_extra"] = sampler.peak - start
    return result


def timings(file: str, batch: int, rounds: int) -> dict[str, list[float]]:
    import torch

    net = cnndsl.load(file)
    module = net.to_torch(seed=0)
    model = net.to_numpy({k: v.detach().numpy() for k, v in module.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    tensor = torch.from_numpy(x)
    dy = np.random.default_rng(1).standard_normal((batch, *net.output_shape)).astype(np.float32)
    dy_t = torch.from_numpy(dy)
    times: dict[str, list[float]] = {"numpy_forward": [], "torch_forward": [], "numpy_backward": [], "torch_backward": []}

    def forward_numpy() -> float:
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start

    def forward_torch() -> float:
        module.eval()
        with torch.no_grad():
            start = time.perf_counter()
            module(tensor)
            return time.perf_counter() - start

    def backward_numpy() -> float:
        y = model.forward(x, train=True, grad=True)
        del y
        start = time.perf_counter()
        model.backward(dy, input_grad=False)
        return time.perf_counter() - start

    def backward_torch() -> float:
        module.train()
        module.zero_grad(set_to_none=True)
        y = module(tensor)
        start = time.perf_counter()
        y.backward(dy_t)
        return time.perf_counter() - start

    # Warm up both (first calls allocate, pick kernels, fault in pages).
    forward_numpy(), forward_torch(), backward_numpy(), backward_torch()
    for _ in range(rounds):
        times["numpy_forward"].append(forward_numpy())
        times["torch_forward"].append(forward_torch())
    for _ in range(max(3, rounds // 2)):
        times["numpy_backward"].append(backward_numpy())
        times["torch_backward"].append(backward_torch())
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=str(ROOT / "architectures" / "resnet18.cnn"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--memory-probe", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.file, args.batch, args.memory_probe)))
        return

    import torch

    print(
        f"{Path(args.file).name}, batch {args.batch}; numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    times = timings(args.file, args.batch, args.rounds)
    for what in ("forward", "backward"):
        ours, theirs = times[f"numpy_{what}"], times[f"torch_{what}"]
        print(
            f"{what:8s}: numpy median {statistics.median(ours) * 1000:7.1f} ms, torch median {statistics.median(theirs) * 1000:7.1f} ms, "
            f"median ratio {median_ratio(ours, theirs):.2f}x  (rounds {len(ours)})"
        )
    memory = {}
    for backend in ("numpy", "torch"):
        done = subprocess.run(
            [sys.executable, __file__, "--file", args.file, "--batch", str(args.batch), "--memory-probe", backend],
            capture_output=True,
            text=True,
            check=True,
        )
        memory[backend] = json.loads(done.stdout)
    for what, key in (("cold", "rss_peak_extra"), ("warm", "warm_extra")):
        ours, theirs = memory["numpy"][key], memory["torch"][key]
        print(
            f"memory  : peak extra RSS of one forward, {what}: numpy {ours / 2**20:.0f} MiB, torch {theirs / 2**20:.0f} MiB, "
            f"ratio {ours / theirs:.2f}x"
        )
    print(f"memory  : numpy tracemalloc peak (live arrays) {memory['numpy']['tracemalloc_peak'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
