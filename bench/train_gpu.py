"""GPU training throughput of `cnndsl train`: the zoo's ResNet-18 on synthetic ImageNet-sized data.

Three runs of `python -m cnndsl train architectures/resnet18.cnn --data synthetic:N` on one GPU,
each a separate process, all in this one invocation so that the ratios compare like with like:

1. the baseline: float32, NCHW (PyTorch's defaults), ~100 steps;
2. `--amp bf16 --channels-last`, a few hundred steps;
3. `--amp bf16 --channels-last --compile`, a few hundred steps.

Images/s is the median over the epochs after the first (the first holds cuDNN's autotuning
and torch.compile's compilation). Prints a Markdown section for bench/RESULTS.md (the card
included) and writes it, with each run's --metrics-json, under --out.

Run (on a machine with a CUDA GPU):  .venv/bin/python bench/train_gpu.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESNET18 = ROOT / "architectures" / "resnet18.cnn"
STEPS_PER_EPOCH = 20
"""Synthetic images per run = batch x this; each epoch ends with a 1,024-image test pass."""

RUNS = [
    # (label, extra options, steps)
    ("float32, NCHW (baseline)", [], 100),
    ("--amp bf16 --channels-last", ["--amp", "bf16", "--channels-last"], 300),
    ("--amp bf16 --channels-last --compile", ["--amp", "bf16", "--channels-last", "--compile"], 300),
]


def run(label: str, options: list[str], steps: int, args: argparse.Namespace, index: int) -> dict | None:
    batch, out, per_epoch = args.batch_size, args.out, args.steps_per_epoch
    epochs = max(2, math.ceil(steps * args.steps_scale / per_epoch))
    metrics_path = out / f"train_gpu_{index}.json"
    command = [
        sys.executable, "-m", "cnndsl", "train", str(RESNET18),
        "--data", f"synthetic:{batch * per_epoch}", "--device", args.device, "--epochs", str(epochs),
        "--batch-size", str(batch), "--lr", "0.1", "--no-progress", "--metrics-json", str(metrics_path),
        *(["--input", args.input] if args.input else []), *options,
    ]  # fmt: skip
    print(f"== {label}: {epochs} epochs x {per_epoch} steps of {batch}", flush=True)
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"   timed out after {args.timeout:.0f} s", flush=True)
        return None
    (out / f"train_gpu_{index}.log").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    if result.returncode != 0:
        print(f"   failed (exit {result.returncode}):\n{result.stderr[-2000:]}", flush=True)
        return None
    metrics = json.loads(metrics_path.read_text())
    rates = [r["images_per_second"] for r in metrics["history"][1:]]
    metrics["steady_images_per_second"] = statistics.median(rates)
    metrics["steps"] = epochs * per_epoch
    metrics["wall_seconds"] = time.perf_counter() - start
    print(
        f"   {metrics['steady_images_per_second']:,.0f} img/s on {metrics['device']};"
        f" first epoch {metrics['history'][0]['seconds']:.1f} s; {metrics['wall_seconds']:.0f} s in all",
        flush=True,
    )
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "gpu_out")))
    parser.add_argument("--timeout", type=float, default=240, help="Seconds allowed per run.")
    parser.add_argument("--steps-per-epoch", type=int, default=STEPS_PER_EPOCH)
    # A dry run of the script itself on a CPU: --device cpu --input 3x32x32 --batch-size 8 --steps-scale 0.05
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--input", help="Override the network's 3x224x224 (dry runs only).")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="Multiply every run's steps (dry runs only).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to PyTorch: this benchmark needs one")
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else f"none ({args.device}: a dry run)"
    results = [run(label, options, steps, args, i) for i, (label, options, steps) in enumerate(RUNS)]
    base = results[0]["steady_images_per_second"] if results[0] else None
    lines = [
        f"### GPU training: ResNet-18 (zoo), synthetic {args.input or '3x224x224'}, 1,000 classes, batch {args.batch_size}",
        "",
        f"Card: {card}; torch {torch.__version__}, CUDA {torch.version.cuda}. `bench/train_gpu.py`: median images/s"
        " of the epochs after the first (cuDNN autotuning and compilation happen in the first).",
        "",
        "| run | steps | images/s | vs float32 | first epoch (s) | final train loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (label, _, _), metrics in zip(RUNS, results, strict=True):
        if metrics is None:
            lines.append(f"| {label} | - | failed | - | - | - |")
            continue
        rate = metrics["steady_images_per_second"]
        ratio = f"{rate / base:.2f}x" if base else "-"
        lines.append(
            f"| {label} | {metrics['steps']} | {rate:,.0f} | {ratio} | {metrics['history'][0]['seconds']:.1f}"
            f" | {metrics['train_loss']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "train_gpu.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
