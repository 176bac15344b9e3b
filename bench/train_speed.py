"""Training throughput of `cnndsl train` on the CPU, against a plain PyTorch loop measured in the same run.

For each case the baseline is a hand-written PyTorch loop (index batches, forward, loss,
backward, SGD step) over the very module `Network.to_torch()` builds, with the same batch
size and thread count; the trainer's torch backend is then timed through the library, and
the NumPy backend too. Ratios above 1 mean faster than the baseline. A round's figure is the
median of its per-epoch images/s after the first (warm-up) epoch; the rounds alternate
baseline and trainer, and the best round of each is reported, so that load from other
processes on a shared machine (which only ever slows a round down) disturbs the ratios least.

Run: .venv/bin/python bench/train_speed.py [--epochs N] [--rounds R] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import cnndsl
from cnndsl.train import TrainConfig, train
from cnndsl.train.data import load_source

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    # (label, .cnn file, --set values, data, batch size, threads, with numpy backend)
    ("DigitsCNN, digits 1x8x8", "digits_cnn.cnn", {}, "digits", 64, 1, True),
    ("classic, synthetic 3x32x32", "classic.cnn", {}, "synthetic:2048", 64, 1, True),
    ("classic, synthetic 3x32x32", "classic.cnn", {}, "synthetic:2048", 64, 2, False),
    ("ResNet-18 at 3x32x32, synthetic", "resnet18.cnn", {"num_classes": 10}, "synthetic:512", 64, 2, False),
]


def plain_loop(network: cnndsl.Network, data: str, batch: int, threads: int, epochs: int) -> float:
    """images/s of the hand-written loop (median over epochs after the first)."""
    torch.set_num_threads(threads)
    dataset = load_source(data, network.input_shape, network.output_shape[0], 0)
    model = network.to_torch(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x))
        for begin in range(0, len(x), batch):
            index = order[begin : begin + batch]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(x) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def trainer_rate(network: cnndsl.Network, data: str, batch: int, threads: int, epochs: int, backend: str) -> float:
    config = TrainConfig(data=data, backend=backend, epochs=epochs, batch_size=batch, lr=0.01, threads=threads, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own report is not the benchmark's output
        metrics = train(network, config)
    return statistics.median(r["images_per_second"] for r in metrics["history"][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="Also write the table here.")
    args = parser.parse_args()
    rows = []
    for label, file, sets, data, batch, threads, with_numpy in CASES:
        input_shape = (3, 32, 32) if file == "resnet18.cnn" else None
        network = cnndsl.load(ROOT / "architectures" / file, input=input_shape, **sets)
        base = ours = numpy_rate = 0.0
        for _ in range(args.rounds):
            base = max(base, plain_loop(network, data, batch, threads, args.epochs))
            ours = max(ours, trainer_rate(network, data, batch, threads, args.epochs, "torch"))
            if with_numpy:
                numpy_rate = max(numpy_rate, trainer_rate(network, data, batch, threads, args.epochs, "numpy"))
        row = f"| {label} | {batch} | {threads} | {base:,.0f} | {ours:,.0f} ({ours / base:.2f}x) |"
        if with_numpy:
            row += f" {numpy_rate:,.0f} ({numpy_rate / base:.2f}x) |"
        else:
            row += " - |"
        rows.append(row)
        print(row, flush=True)
    cpu = platform.processor() or platform.machine()
    table = "\n".join(
        [
            f"CPU: {cpu}, {os.cpu_count()} cores visible; torch {torch.__version__}, numpy {np.__version__};"
            f" best of {args.rounds} rounds of the median images/s of epochs 2..{args.epochs}.",
            "",
            "| network, data | batch | threads | plain PyTorch loop | cnndsl train (torch) | cnndsl train --backend numpy |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
