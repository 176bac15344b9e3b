"""Does cnndsl's PyTorch target cost anything over hand-written PyTorch?

ResNet-18 and ResNet-50 three ways, in one process: written by hand (torchvision's layout,
below), the source that `cnndsl compile --target torch` generates from architectures/, and
`Network.to_torch()`. Each repetition times an eval forward pass and one training step
(forward, backward, SGD step) of every variant, alternating the order (A B B A) so drift
in the machine's speed falls on both; it prints the median time of each, the median of
the per-repetition ratios generated/hand-written (goal: <= 1.02) and the ratio of the
fastest repetitions (the steadier figure when other jobs share the machine).

    python bench/torch_overhead.py                       # CPU, batch 8, 3x224x224
    python bench/torch_overhead.py --device cuda --batch 64 --channels-last --amp bf16
    python bench/torch_overhead.py --compile             # torch.compile every variant first
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cnndsl  # noqa: E402  (after the path tweak, so the bench runs from a checkout)

# ---- hand-written ResNets, as torchvision writes them ------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


HAND_WRITTEN: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
    "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3]),
}


def generated(stem: str) -> nn.Module:
    """The class that `cnndsl compile --target torch` writes, loaded from its source text."""
    network = cnndsl.load(ROOT / "architectures" / f"{stem}.cnn")
    module = types.ModuleType(f"generated_{stem}")
    exec(compile(network.torch_source(), f"<{stem}.py>", "exec"), module.__dict__)
    return getattr(module, network.name)()


def in_memory(stem: str) -> nn.Module:
    return cnndsl.load(ROOT / "architectures" / f"{stem}.cnn").to_torch()


# ---- timing ------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None) -> dict[str, Callable[[], None]]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    autocast = (lambda: torch.autocast(x.device.type, dtype=amp)) if amp else None

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            if autocast:
                with autocast():
                    model(x)
            else:
                model(x)

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        if autocast:
            with autocast():
                loss = loss_fn(model(x), y)
        else:
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return {"forward": forward, "train": train}


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench(stem: str, args: argparse.Namespace) -> dict[str, object]:
    device = torch.device(args.device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.amp]
    torch.manual_seed(0)
    variants = {"hand": HAND_WRITTEN[stem](), "generated": generated(stem)}
    if not args.skip_in_memory:
        variants["to_torch"] = in_memory(stem)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in variants.items()}
    assert len(set(counts.values())) == 1, f"the variants differ: {counts}"
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    steps = {}
    for name, model in variants.items():
        model = model.to(device=device, memory_format=memory_format)
        if args.compile:
            model = torch.compile(model)
        steps[name] = make_steps(model, x, y, amp)
    names = list(variants)
    results: dict[str, object] = {"model": stem, "params": counts["hand"]}
    for phase in ("forward", "train"):
        for name in names:  # warm-up (and compilation)
            for _ in range(args.warmup):
                steps[name][phase]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(args.reps):
            order = names if rep % 2 == 0 else names[::-1]  # A B, then B A
            for name in order:
                times[name].append(timed(steps[name][phase], device))
        medians = {name: statistics.median(t) for name, t in times.items()}
        ratios = {
            name: statistics.median(t / h for t, h in zip(times[name], times["hand"], strict=True))
            for name in names
            if name != "hand"
        }
        # On a shared machine other jobs only ever add time, so the fastest repetitions are
        # the cleanest signal; their ratio is printed beside the median one.
        best = {name: min(t) for name, t in times.items()}
        best_ratios = {name: best[name] / best["hand"] for name in names if name != "hand"}
        results[phase] = {
            "median_s": medians,
            "median_ratio_vs_hand": ratios,
            "min_s": best,
            "min_ratio_vs_hand": best_ratios,
            "images_per_s": {name: args.batch / m for name, m in medians.items()},
        }
        ratio_text = ", ".join(f"{name}/hand = {r:.3f}" for name, r in ratios.items())
        best_text = ", ".join(f"{r:.3f}" for r in best_ratios.values())
        time_text = ", ".join(f"{name} {m * 1e3:.1f} ms" for name, m in medians.items())
        print(f"{stem:9s} {phase:8s} median ratio {ratio_text}; min ratio {best_text}   ({time_text})", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], choices=sorted(HAND_WRITTEN))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--compile", action="store_true", help="torch.compile every variant (slow to start on a CPU)")
    parser.add_argument("--skip-in-memory", action="store_true", help="time only hand-written and generated")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (one is steadier on a shared machine)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = {
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "card": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    print(json.dumps(info), flush=True)
    results = [bench(stem, args) for stem in args.models]
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
