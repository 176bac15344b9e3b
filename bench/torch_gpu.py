"""GPU training throughput: the generated ResNet-50 next to a hand-written one, in one run.

ResNet-50, batch 256, channels_last, bf16 autocast, SGD with momentum, random data already
on the GPU (so the input pipeline is not measured). Both models are timed in alternating
chunks (A B B A ...) after a warm-up, and the script prints the card, both training
throughputs in images/s and their ratio; with $OUT set (the device runner's output
folder) or --json it also writes them as JSON, ready to paste into bench/RESULTS.md.

    python bench/torch_gpu.py                    # eager, about 2 minutes on an H100
    python bench/torch_gpu.py --torch-compile    # torch.compile both first (adds minutes)

For scale: torchvision's ResNet-50 trains at about 4,700 images/s in bf16 on an H200.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from torch_overhead import HAND_WRITTEN, generated  # noqa: E402  (bench/ is not a package)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=sorted(HAND_WRITTEN))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--chunks", type=int, default=8, help="timed chunks per model (alternating)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per chunk")
    parser.add_argument("--torch-compile", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU (see bench/torch_overhead.py for the CPU one)")
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    card = torch.cuda.get_device_name()
    print(
        f"card: {card}; torch {torch.__version__}; {args.model}, batch {args.batch}, channels_last, bf16 autocast"
        + (", torch.compile" if args.torch_compile else ", eager"),
        flush=True,
    )

    torch.manual_seed(0)
    models = {"hand": HAND_WRITTEN[args.model](), "generated": generated(args.model)}
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert counts["hand"] == counts["generated"], counts
    x = torch.randn(args.batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    runners = {}
    for name, model in models.items():
        model = model.to(device=device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step_model = torch.compile(model) if args.torch_compile else model
        runners[name] = (step_model, optimizer)

    for name, (model, optimizer) in runners.items():
        start = time.perf_counter()
        for _ in range(args.warmup):
            train_step(model, optimizer, x, y)
        torch.cuda.synchronize()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)

    rates: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for chunk in range(args.chunks):
        for name in names if chunk % 2 == 0 else names[::-1]:
            model, optimizer = runners[name]
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optimizer, x, y)
            torch.cuda.synchronize()
            rates[name].append(args.batch * args.steps / (time.perf_counter() - start))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    ratio = medians["generated"] / medians["hand"]
    for name in names:
        print(f"{name:9s} {medians[name]:8.0f} images/s (chunks: {', '.join(f'{r:.0f}' for r in rates[name])})")
    print(f"generated/hand throughput ratio: {ratio:.3f}")
    print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    result = {
        "card": card,
        "torch": torch.__version__,
        "model": args.model,
        "batch": args.batch,
        "torch_compile": args.torch_compile,
        "images_per_s": medians,
        "chunks": rates,
        "generated_over_hand": ratio,
    }
    target = args.json or (str(Path(os.environ["OUT"]) / "torch_gpu.json") if os.environ.get("OUT") else None)
    if target:
        Path(target).write_text(json.dumps(result, indent=2))
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
