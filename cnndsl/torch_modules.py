"""The few PyTorch modules that torch.nn lacks: the merges of parallel branches, Chunk,
ChannelShuffle, LayerNorm2d, PointwiseLinear, Scale, StochasticDepth, and `sequential` (an
nn.Sequential with named submodules).

Every public class and function of this module is a helper (`HELPERS`): a TorchCall may
name it, and the source that `cnndsl compile --target torch` writes copies the ones its
plan uses verbatim (their source text), so the in-memory module and the generated file
run the same code. Keep them self-contained (they may use only `torch`, `nn` and
`OrderedDict`; see codegen_torch.HELPER_IMPORTS) and their lines within 88 columns,
black's default, since they land in users' projects. Anything else here must start
with `_`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn


class Add(nn.Sequential):
    """Runs every branch (submodules `0`, `1`, ...) on one input; sums the outputs.

    `inplace=True` accumulates into the first branch's output, as torchvision's
    `out += identity` does; only for a first branch that ends in a fresh tensor that
    autograd does not keep (a convolution, normalisation or linear layer).
    An nn.Sequential only to hold the branches: torch.jit.script iterates over it.
    """

    def __init__(self, *branches: nn.Module, inplace: bool = False) -> None:
        super().__init__(*branches)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self]
        out = outputs[0]
        for other in outputs[1:]:
            out = out.add_(other) if self.inplace else out + other
        return out


class Concat(nn.Sequential):
    """Runs every branch on one input; concatenates the outputs along channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self], dim=1)


class Mul(nn.Sequential):
    """Runs every branch on one input; multiplies the outputs (broadcasting: gates)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self]
        out = outputs[0]
        for other in outputs[1:]:
            out = out * other
        return out


class Chunk(nn.Module):
    """One of `chunks` equal slices of the channels: `x.chunk(chunks, dim=1)[index]`."""

    def __init__(self, chunks: int, index: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.chunk(self.chunks, dim=1)[self.index]

    def extra_repr(self) -> str:
        return f"chunks={self.chunks}, index={self.index}"


class ChannelShuffle(nn.Module):
    """Interleaves the channels of `groups` groups, as ShuffleNet does."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class LayerNorm2d(nn.LayerNorm):
    """nn.LayerNorm over the channels at every position of an (N, C, H, W) map (and of
    (N, C, L) signals and (N, C, D, H, W) volumes alike).

    As torchvision's ConvNeXt LayerNorm2d: the same parameters (`weight`, `bias` of C),
    computed channels-last.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One permute per rank, spelt out: TorchScript scripts it (no unpacking),
        # and the ONNX exporter keeps the shapes through it (movedim loses the
        # channel count a GroupNorm after it needs).
        if x.dim() == 3:
            to_last, back = [0, 2, 1], [0, 2, 1]
        elif x.dim() == 5:
            to_last, back = [0, 2, 3, 4, 1], [0, 4, 1, 2, 3]
        else:
            to_last, back = [0, 2, 3, 1], [0, 3, 1, 2]
        x = x.permute(to_last)
        # Short names: the generated source stays within 88 columns.
        weight, bias = self.weight, self.bias
        x = nn.functional.layer_norm(x, self.normalized_shape, weight, bias, self.eps)
        return x.permute(back)


class PointwiseLinear(nn.Linear):
    """nn.Linear over the channels at every position of an (N, C, H, W) map.

    As the Linear layers of torchvision's ConvNeXt block: the same parameters (`weight`
    of (out, C), `bias`), computed channels-last; a 1x1 convolution's function.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The functional form: TorchScript cannot call super().forward. Two lines: the
        # generated source copies this class and stays within 88 columns.
        x = nn.functional.linear(x.movedim(1, -1), self.weight, self.bias)
        return x.movedim(-1, 1)


class Scale(nn.Module):
    """A learnable scale per channel, ConvNeXt's layer scale: `x * layer_scale`.

    `layer_scale` has shape (C, 1, 1), as the parameter of torchvision's CNBlock, on an
    image; one 1 per spatial axis on a signal (`rank=1`) or a volume (`rank=3`).
    """

    def __init__(self, channels: int, init: float = 1e-6, rank: int = 2) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.full((channels, *(1,) * rank), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.layer_scale


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: in training, zeroes the input of each sample
    (mode `row`) or of the whole batch (`batch`) with probability p, and scales what
    is kept by 1 / (1 - p); the identity in eval.
    """

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [1] * x.dim()
        if self.mode == "row":
            size[0] = x.shape[0]
        noise = torch.empty(size, dtype=x.dtype, device=x.device)
        noise = noise.bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def sequential(**modules: nn.Module) -> nn.Sequential:
    """An nn.Sequential of named submodules in order (the names are state_dict keys)."""
    return nn.Sequential(OrderedDict(modules))


class _Graph(nn.Module):
    """The in-memory module of a network whose data flow leaves the tree (references, several outputs).

    It holds the network's top-level modules as its own children, so every state_dict key
    is the tree's, and runs the data flow (cnndsl.ir.program) step by step: `steps` are
    `(path, merge, inputs, output)` on numbered registers (0 is the input), `merge` the
    merge's name (Add, Concat, Mul) or "" for the module at `path`. Each register is
    dropped after its last reader. Several outputs come back as a tuple.
    """

    def __init__(self, steps: list[tuple[str, str, list[int], int]], outputs: list[int]) -> None:
        super().__init__()
        self.steps = steps
        self.outputs = outputs
        last_read = {register: index for index, (_, _, inputs, _) in enumerate(steps) for register in inputs}
        for register in outputs:
            last_read[register] = len(steps)
        self.free_after = [[r for r in inputs if last_read[r] == index] for index, (_, _, inputs, _) in enumerate(steps)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values: dict[int, torch.Tensor] = {0: x}
        for (path, merge, inputs, output), done in zip(self.steps, self.free_after, strict=True):
            xs = [values[r] for r in inputs]
            if merge == "Concat":
                y = torch.cat(xs, dim=1)
            elif merge:
                y = xs[0]
                for other in xs[1:]:
                    y = y + other if merge == "Add" else y * other
            else:
                y = self.get_submodule(path)(xs[0])
            for register in done:
                del values[register]
            values[output] = y
        outputs = tuple(values[r] for r in self.outputs)
        return outputs if len(outputs) > 1 else outputs[0]


def _helpers() -> dict[str, Callable[..., nn.Module]]:
    # Derived, not listed: a helper added above cannot be missing from generated files.
    return {
        name: value
        for name, value in globals().items()
        if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == __name__
    }


HELPERS = _helpers()
"""Every helper by name, as `TorchCall.name` refers to it (in definition order)."""
