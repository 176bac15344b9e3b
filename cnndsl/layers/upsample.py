"""Layers that grow the map: the transposed convolution ConvTranspose, Upsample, and Reshape.

Their NumPy kernels live here (not in numpy_ops) and are vectorised: a transposed
convolution is one product per group plus a scatter-add per kernel offset (its forward is a
convolution's input gradient, its backward a convolution's forward); Upsample, nearest or
bilinear, is separable, so it is two small interpolation matrices applied to the rows and
the columns, and its backward is the same two matrices transposed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..receptive import MAX_PERIOD, Field
from ..shapes import SPATIAL_AXES, Shape, Sizes
from .base import (
    INFERRED,
    Args,
    ArgSpec,
    LayerError,
    LayerKind,
    TensorRef,
    TorchCall,
    as_pair,
    pair_text,
    register,
    spatial_tuple,
)
from .conv import differs, torch_module, torch_pair

if TYPE_CHECKING:  # the real modules for mypy; at run time the lazy proxies, so `check` never loads numpy
    import numpy as np

    from .. import numpy_ops as ops
    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom
else:
    from ..lazy import numpy as np
    from ..lazy import numpy_ops as ops


# ---------------------------------------------------------------- ConvTranspose


def transposed_size(size: int, kernel: int, stride: int, pad: int, dilation: int, output_pad: int) -> int:
    """nn.ConvTransposeNd's output size along one axis: (N - 1)·S - 2P + D·(K - 1) + output_pad + 1."""
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_pad + 1


def transposed_arithmetic(size: int, kernel: int, stride: int, pad: int, dilation: int, output_pad: int) -> str:
    """The inverse formula with numbers, as diagnostics show it: `(15 - 1)·2 - 2·0 + 1·(2 - 1) + 0 + 1 = 30`."""
    out = transposed_size(size, kernel, stride, pad, dilation, output_pad)
    return f"({size} - 1)·{stride} - 2·{pad} + {dilation}·({kernel} - 1) + {output_pad} + 1 = {out}"


_GEOMETRY = ("kernel", "stride", "pad", "dilation", "output_pad")
_ALL = slice(None)


@dataclass(frozen=True)
class _Phase:
    """One output phase of a transposed convolution along one axis: the output positions o with
    o + P ≡ r (mod S), each an ordinary stride-1 correlation of the input with the taps that reach it.

    Output o = m·S + r - P (full position m·S + r) gathers x[i]·W[k] over i·S + k·D = m·S + r:
    the taps k with k·D ≡ r (mod S), each reading input i = m - (k·D - r)/S.
    """

    out_start: int
    """The first output position of the phase (its positions are out_start, out_start + S, ...)."""
    count: int
    """How many output positions it has."""
    taps: tuple[int, ...]
    """The kernel indices that reach it."""
    reads: tuple[int, ...]
    """Per tap, the input position the first output reads (then one more per output); may be
    outside the input (zero padding)."""


def _phases(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int) -> list[_Phase]:
    """The phases of one axis that have output positions and taps (a phase without taps gets only the bias)."""
    phases = []
    for residue in range(stride):
        taps = tuple(k for k in range(kernel) if (k * dilation - residue) % stride == 0)
        first = -((residue - pad) // stride)  # ceil((P - r) / S): the first m with an output position >= 0
        last = (out - 1 + pad - residue) // stride
        if taps and last >= first:
            reads = tuple(first - (k * dilation - residue) // stride for k in taps)
            phases.append(_Phase(first * stride + residue - pad, last - first + 1, taps, reads))
    return phases


def _channel_major_padded(x: np.ndarray, low: Sizes, extent: Sizes) -> np.ndarray:
    """x (N, C, *spatial) as (C, N, *extent), zeros around it, x starting at `low` on each axis."""
    out = np.zeros((x.shape[1], x.shape[0], *extent), x.dtype)
    out[(_ALL, _ALL) + tuple(slice(lo, lo + size) for lo, size in zip(low, x.shape[2:], strict=True))] = x.swapaxes(0, 1)
    return out


def _pitches(extent: Sizes) -> tuple[int, ...]:
    """The flat distance of one step along the sample axis and each spatial axis of a (C, N, *extent) array."""
    return tuple(math.prod(extent[a:]) for a in range(len(extent) + 1))


def _run(counts: Sizes, pitch: Sizes) -> int:
    """The flat length from the first to the last of the positions (n, *i), i < counts, n < counts[0]."""
    return 1 + sum((count - 1) * p for count, p in zip(counts, pitch, strict=True))


def _grid_view(flat: np.ndarray, counts: Sizes, pitch: Sizes) -> np.ndarray:
    """The positions (n, *i) of a flat run (..., run) as a strided (..., N, *counts) view."""
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(
        flat, (*flat.shape[:-1], *counts), (*flat.strides[:-1], *(p * item for p in pitch)), writeable=False
    )


MANY_TAPS = 9
"""A phase with this many taps or more (a 3x3 kernel at stride 1) is computed by column blocks
(`_phase_by_columns`), one product with every tap in its reduction; fewer, by one product per
tap. Measured (CPU time, batch 16, 16 channels): 3x3 at stride 1 0.9x, 3x3x3 0.7x the time
per tap; one tap (2x2 at stride 2) 1.5x, four (4x4 at stride 2) 1.1-1.5x."""

COLUMN_BLOCK_BYTES = 1 << 20
"""A column block of `_phase_by_columns`: small enough to stay in cache from its copy to its product."""

CORRELATION_CHUNK = 2048
"""Flat positions per block of `_correlate`'s reduction."""


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b^T per group, a (groups, m, L) and b (groups, k, L) strided views with a unit last stride.

    The reduction runs over the long flat axis L in blocks, one batched product over the blocks
    then their sum: OpenBLAS is about three times slower on one product that reduces over
    17,000 positions with such thin operands (16 rows) than on blocks of 2,048 (measured).
    """
    length = a.shape[-1]
    whole = length // CORRELATION_CHUNK * CORRELATION_CHUNK
    out = np.matmul(a[..., whole:], b[..., whole:].swapaxes(-1, -2))
    if whole:

        def blocks(m: np.ndarray) -> np.ndarray:
            shape = (*m.shape[:-2], length // CORRELATION_CHUNK, m.shape[-2], CORRELATION_CHUNK)
            strides = (*m.strides[:-2], CORRELATION_CHUNK * m.strides[-1], *m.strides[-2:])
            return np.lib.stride_tricks.as_strided(m, shape, strides, writeable=False)

        out += np.matmul(blocks(a), blocks(b).swapaxes(-1, -2)).sum(axis=-3)
    return out


def _phase_by_columns(
    flat: np.ndarray, weight: np.ndarray, combo: tuple[_Phase, ...], low: Sizes, pitch: Sizes, run: int
) -> np.ndarray:
    """One phase of the forward as im2col on the flat run, block by block: (groups, out/groups, run).

    A phase's taps read the input at offsets that step evenly along each axis (the reads fall by
    D/gcd(S, D) per tap), so with the taps reversed one strided view holds every tap's run; a block
    of it, copied, is the block's columns, and one product with the flipped sub-kernel (every tap
    in its reduction) gives the block's output.
    """
    groups, in_g = flat.shape[:2]
    out_g = weight.shape[1]
    rank = len(combo)
    taps = [phase.taps[::-1] for phase in combo]
    reads = [phase.reads[::-1] for phase in combo]
    steps = [r[1] - r[0] if len(r) > 1 else 0 for r in reads]
    source = flat[..., sum((r[0] + lo) * p for r, lo, p in zip(reads, low, pitch[1:], strict=True)) :]
    sizes = tuple(len(t) for t in taps)
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        source,
        (groups, in_g, *sizes, run),
        (*source.strides[:2], *(st * p * item for st, p in zip(steps, pitch[1:], strict=True)), item),
        writeable=False,
    )
    sub = weight.reshape(groups, in_g, out_g, *weight.shape[2:])[(_ALL, _ALL, _ALL) + np.ix_(*taps)]
    w3 = np.ascontiguousarray(sub.transpose(0, 2, 1, *range(3, 3 + rank))).reshape(groups, out_g, -1)
    width = max(1, min(run, COLUMN_BLOCK_BYTES // (w3.shape[2] * item)))
    cols = np.empty((groups, in_g, *sizes, width), flat.dtype)
    result = np.empty((groups, out_g, width), flat.dtype)
    acc = np.empty((groups, out_g, run), flat.dtype)
    for begin in range(0, run, width):
        end = min(run, begin + width)
        block = cols[..., : end - begin]
        np.copyto(block, view[..., begin:end])
        if end - begin == width:  # a full block: the product into its reused buffer
            np.matmul(w3, cols.reshape(groups, -1, width), out=result)
            acc[..., begin:end] = result
        else:
            acc[..., begin:end] = np.matmul(w3, block.reshape(groups, -1, end - begin))
    return acc


def conv_transpose_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, args: Args, ctx: NpContext) -> np.ndarray:
    """nn.ConvTranspose1d/2d/3d's forward by phases (sub-pixel decomposition): the output positions of
    one phase per axis (o + P ≡ r mod S) are an ordinary stride-1 correlation of the input with the
    taps that reach them, written into a strided view of the output; no position is written twice
    (no overlapping scatter-add). At stride 1 there is one phase, the convolution of the input
    padded by D·(K - 1) - P with the flipped kernel.

    No im2col either: the input is padded once, channel-major (C, N, *padded), and flattened per
    channel, the samples one after another. A tap shifts every output's read by one flat offset, so
    its contribution to a phase is one product W_k (out, in) @ x[:, offset : offset + run] per
    group, the operand a plain strided view that BLAS reads in place. The run also covers the
    padding between rows and samples; those results are computed and dropped, the valid ones read
    back through a strided view.
    """
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    rank = len(spatial)
    groups = args["groups"]
    geometry = [tuple(args[name][a] for name in _GEOMETRY) for a in range(rank)]
    out_size = tuple(transposed_size(size, *geo) for size, geo in zip(spatial, geometry, strict=True))
    out_g = weight.shape[1]
    axis_phases = [_phases(size, out, k, s, p, d) for size, out, (k, s, p, d, _) in zip(spatial, out_size, geometry, strict=True)]
    # A phase without taps (a kernel smaller than the stride) has only the bias: start from zeros then.
    covered = all(sum(phase.count for phase in phases) == out for phases, out in zip(axis_phases, out_size, strict=True))
    y = (np.empty if covered else np.zeros)((n, groups, out_g, *out_size), x.dtype)
    low = tuple(max([0, *(-read for phase in phases for read in phase.reads)]) for phases in axis_phases)
    high = tuple(
        max([0, *(read + phase.count - size for phase in phases for read in phase.reads)])
        for phases, size in zip(axis_phases, spatial, strict=True)
    )
    extent = tuple(lo + size + hi for lo, size, hi in zip(low, spatial, high, strict=True))
    flat = _channel_major_padded(x, low, extent).reshape(groups, c // groups, -1)
    pitch = _pitches(extent)
    # The weight per tap as (groups, out/groups, in/groups): nn.ConvTranspose's is (in, out/groups, *kernel).
    w_taps = np.ascontiguousarray(weight.reshape(groups, c // groups, out_g, -1).transpose(3, 0, 2, 1))
    kernel_pitch = _pitches(weight.shape[2:])[1:]
    for combo in itertools.product(*axis_phases):
        counts = (n, *(phase.count for phase in combo))
        run = _run(counts, pitch)
        if math.prod(len(phase.taps) for phase in combo) >= MANY_TAPS:
            acc = _phase_by_columns(flat, weight, combo, low, pitch, run)
        else:
            acc = np.empty((groups, out_g, run), x.dtype)
            part = np.empty_like(acc)
            for index, tap in enumerate(itertools.product(*(zip(phase.taps, phase.reads, strict=True) for phase in combo))):
                k = sum(t * p for (t, _), p in zip(tap, kernel_pitch, strict=True))
                start = sum((read + lo) * p for (_, read), lo, p in zip(tap, low, pitch[1:], strict=True))
                np.matmul(w_taps[k], flat[..., start : start + run], out=part if index else acc)
                if index:
                    acc += part
        outputs = tuple(
            slice(phase.out_start, phase.out_start + (phase.count - 1) * s + 1, s)
            for phase, (_, s, *_) in zip(combo, geometry, strict=True)
        )
        y[(_ALL, _ALL, _ALL) + outputs] = np.moveaxis(_grid_view(acc, counts, pitch), 2, 0)
    y = y.reshape(n, groups * out_g, *out_size)
    if bias is not None:
        y += bias.reshape(1, -1, *(1,) * rank)
    ctx.save(x=x)
    return y


def _components(dy: np.ndarray, pad: Sizes, stride: Sizes, grid: Sizes) -> np.ndarray:
    """dy (N, C, *out) padded by `pad` and split into its polyphase components, in one copy: component
    ρ holds every S-th position of the padded dy from ρ, as (*stride, C, N, *grid) with zeros around."""
    n, c = dy.shape[:2]
    out = np.zeros((*stride, c, n, *grid), dy.dtype)
    for phase in np.ndindex(*stride):
        # Padded position u·S + ρ is output o = u·S + ρ - P: the outputs o ≡ ρ - P (mod S), from the first u with o >= 0.
        firsts = [(r - p) % s for r, p, s in zip(phase, pad, stride, strict=True)]
        reads = tuple(slice(f, None, s) for f, s in zip(firsts, stride, strict=True))
        part = dy[(_ALL, _ALL) + reads]
        writes = tuple(
            slice((f + p - r) // s, (f + p - r) // s + size)
            for f, p, r, s, size in zip(firsts, pad, phase, stride, part.shape[2:], strict=True)
        )
        out[phase + (_ALL, _ALL) + writes] = part.swapaxes(0, 1)
    return out


def _backward_by_columns(
    padded: np.ndarray, x_grid: np.ndarray, weight: np.ndarray, dilation: Sizes, pitch: Sizes, need_dx: bool
) -> tuple[np.ndarray | None, np.ndarray]:
    """The stride-1 backward with many taps by cache-sized column blocks, as `_phase_by_columns`:
    tap k reads the padded dy (groups, out/groups, flat) at a flat offset that steps by D along
    each axis, so one strided view holds every tap's run; per block, its copy gives dx's block
    (one product, every tap in the reduction) and adds into dW (one product). Returns dx on the
    grid (groups, in/groups, run), None unless `need_dx`, and dW in nn.ConvTranspose's layout."""
    groups, out_g = padded.shape[:2]
    in_g, run = x_grid.shape[1:]
    kernel = weight.shape[2:]
    item = padded.itemsize
    view = np.lib.stride_tricks.as_strided(
        padded,
        (groups, out_g, *kernel, run),
        (*padded.strides[:2], *(d * p * item for d, p in zip(dilation, pitch[1:], strict=True)), item),
        writeable=False,
    )
    taps = out_g * math.prod(kernel)
    w3 = weight.reshape(groups, in_g, taps)
    width = max(1, min(run, COLUMN_BLOCK_BYTES // (taps * item)))
    cols = np.empty((groups, out_g, *kernel, width), padded.dtype)
    dw = np.zeros((groups, taps, in_g), weight.dtype)
    dx = np.empty((groups, in_g, run), padded.dtype) if need_dx else None
    for begin in range(0, run, width):
        end = min(run, begin + width)
        block = cols[..., : end - begin]
        np.copyto(block, view[..., begin:end])
        flat_block = block.reshape(groups, taps, end - begin)
        dw += np.matmul(flat_block, x_grid[..., begin:end].swapaxes(-1, -2))
        if dx is not None:
            dx[..., begin:end] = np.matmul(w3, flat_block)
    return dx, dw.swapaxes(1, 2).reshape(weight.shape)


def conv_transpose_backward(weight: np.ndarray, has_bias: bool, args: Args, ctx: NpContext, dy: np.ndarray) -> Backward:
    """Both gradients read dy at the positions each input position scattered into: input i and tap k
    reach dy padded by P at i·S + k·D. With k·D = q·S + ρ that is position i + q of dy's
    polyphase component ρ (every S-th position from ρ), so after one copy of dy into its S^d
    components (channel-major, flattened as in the forward), each tap is a shifted read again:
    dx += W_k @ component[offset : offset + run] and dW_k = component[offset : offset + run] @ x^T,
    the input laid on the components' grid with zeros between its rows (no im2col, no scatter).
    """
    x: np.ndarray = ctx.saved["x"]
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    rank = len(spatial)
    groups = args["groups"]
    out_g = weight.shape[1]
    kernel, stride, dilation, pad = args["kernel"], args["stride"], args["dilation"], args["pad"]
    # dy padded by P, each axis rounded up to a whole number of strides, split into its components.
    grid = tuple(-(-(size + 2 * p) // s) for size, p, s in zip(dy.shape[2:], pad, stride, strict=True))
    components = _components(dy, pad, stride, grid).reshape(*stride, groups, out_g, -1)
    pitch = _pitches(grid)
    counts = (n, *spatial)
    run = _run(counts, pitch)
    x_grid = _channel_major_padded(x, (0,) * rank, grid).reshape(groups, c // groups, -1)[..., :run]
    if kernel == stride and all(d == 1 for d in dilation) and groups == 1:
        # Each tap reads its own component unshifted (U-Net's kernel 2, stride 2): the components,
        # stacked, are already the columns (taps, out, run), a view: one product for dx, one for dW.
        taps = math.prod(kernel)
        cols = components.reshape(taps * out_g, -1)[:, :run]
        w2 = np.moveaxis(weight.reshape(c, out_g, taps), 1, 2).reshape(c, taps * out_g)
        dw2 = _correlate(cols[None], x_grid)[0]  # (taps * out, in)
        grads = {"weight": np.moveaxis(dw2.reshape(taps, out_g, c), 2, 0).swapaxes(1, 2).reshape(weight.shape)}
        if has_bias:
            grads["bias"] = dy.sum(axis=(0, *range(2, dy.ndim)))
        if not ctx.need_dx:
            return None, grads
        flat_dx = np.matmul(w2, cols)[None]
        return np.ascontiguousarray(np.moveaxis(_grid_view(flat_dx, counts, pitch), 2, 0)).reshape(x.shape), grads
    if all(s == 1 for s in stride) and math.prod(kernel) >= MANY_TAPS:
        dx_acc, dw_cols = _backward_by_columns(
            components.reshape(groups, out_g, -1), x_grid, weight, dilation, pitch, ctx.need_dx
        )
        grads = {"weight": dw_cols}
        if has_bias:
            grads["bias"] = dy.sum(axis=(0, *range(2, dy.ndim)))
        if dx_acc is None:
            return None, grads
        return np.ascontiguousarray(np.moveaxis(_grid_view(dx_acc, counts, pitch), 2, 0)).reshape(x.shape), grads
    dw = np.empty((groups, c // groups, out_g, *kernel), weight.dtype)
    w_taps = np.ascontiguousarray(weight.reshape(groups, c // groups, out_g, -1).transpose(3, 0, 1, 2)) if ctx.need_dx else None
    acc = np.empty((groups, c // groups, run), dy.dtype) if ctx.need_dx else None
    part = np.empty_like(acc) if acc is not None else None
    for index, tap in enumerate(np.ndindex(*kernel)):
        phase, shift = zip(*(divmod(t * d, s)[::-1] for t, d, s in zip(tap, dilation, stride, strict=True)), strict=True)
        start = sum(q * p for q, p in zip(shift, pitch[1:], strict=True))
        reads = components[phase][..., start : start + run]
        dw[(_ALL, _ALL, _ALL) + tap] = _correlate(x_grid, reads)
        if acc is not None and w_taps is not None and part is not None:
            np.matmul(w_taps[index], reads, out=part if index else acc)
            if index:
                acc += part
    grads = {"weight": dw.reshape(weight.shape)}
    if has_bias:
        grads["bias"] = dy.sum(axis=(0, *range(2, dy.ndim)))
    dx = None
    if acc is not None:
        dx = np.ascontiguousarray(np.moveaxis(_grid_view(acc, counts, pitch), 2, 0)).reshape(x.shape)
    return dx, grads


@register
class ConvTranspose(LayerKind):
    """Transposed convolution over 1, 2 or 3 spatial axes (nn.ConvTranspose1d/2d/3d, by the input).

    The learned upsampling of generators and decoders.

    Args: out channels, kernel, stride=1, pad=0, output_pad=0 (added to the far end of each axis;
    less than the stride or the dilation), groups=1, dilation=1, bias=true; each of kernel,
    stride, pad, output_pad and dilation an int or a tuple with one entry per axis.
    Shape: C x H x W -> out x H' x W', H' = (H - 1)·S - 2P + D·(K - 1) + output_pad + 1 per axis
    (a convolution's formula solved for its input: stride 2, kernel 4, pad 1 doubles H);
    C x L and C x D x H x W alike.
    Example: `ConvTranspose(128, 4, stride=2, pad=1, bias=false)`.
    """

    name = "ConvTranspose"
    np_supported = True
    aliases = ("ConvTranspose2d", "ConvTranspose1d", "ConvTranspose3d")
    spelling_ranks = {"ConvTranspose1d": (1,), "ConvTranspose2d": (2,), "ConvTranspose3d": (3,)}
    family = "conv"
    fresh_output = True
    input_rank = "spatial"
    signature = (
        ArgSpec("out", "int", minimum=1, keywords=("out_channels",)),
        ArgSpec("kernel", "pair", minimum=1, keywords=("kernel_size",)),
        ArgSpec("stride", "pair", 1, minimum=1),
        ArgSpec("pad", "pair", 0, minimum=0, keywords=("padding",)),
        ArgSpec("output_pad", "pair", 0, minimum=0, keywords=("output_padding",)),
        ArgSpec("groups", "int", 1, minimum=1),
        ArgSpec("dilation", "pair", 1, minimum=1),
        ArgSpec("bias", "bool", True),
    )
    spelling_signatures = {
        spelling: (
            ArgSpec("in_channels", "int", INFERRED, minimum=1, role="input"),
            ArgSpec("out_channels", "int", minimum=1, target="out"),
            ArgSpec("kernel_size", "pair", minimum=1, target="kernel"),
            ArgSpec("stride", "pair", 1, minimum=1),
            ArgSpec("padding", "pair", 0, minimum=0, target="pad"),
            ArgSpec("output_padding", "pair", 0, minimum=0, target="output_pad"),
            ArgSpec("groups", "int", 1, minimum=1),
            ArgSpec("bias", "bool", True),
            ArgSpec("dilation", "pair", 1, minimum=1),
            # nn.ConvTransposeNd takes padding_mode but accepts only zeros.
            ArgSpec("padding_mode", "choice", "zeros", role="fixed", choices=("zeros", "reflect", "replicate", "circular")),
        )
        for spelling in ("ConvTranspose2d", "ConvTranspose1d", "ConvTranspose3d")
    }

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        # One entry per spatial axis (an int: the same on every axis). On a flat input, which the
        # input-rank check reports next, any consistent reading will do.
        out = dict(args)
        rank = shape.spatial_rank if shape is not None and shape.has_space else None
        for name in _GEOMETRY:
            if rank is None:
                out[name] = as_pair(out[name][0] if isinstance(out[name], tuple) else out[name])
            else:
                out[name] = spatial_tuple(self.name, name, out[name], rank)
        return out

    def infer(self, args: Args, shape: Shape) -> Shape:
        for axis in range(len(args["kernel"])):
            limit = max(args["stride"][axis], args["dilation"][axis])
            if args["output_pad"][axis] >= limit:
                raise LayerError(
                    f"ConvTranspose: output_pad must be smaller than the stride or the dilation; got output_pad "
                    f"{pair_text(args['output_pad'])} with stride {pair_text(args['stride'])} and dilation "
                    f"{pair_text(args['dilation'])}",
                    "output_pad only picks among the sizes a strided convolution maps onto the same size; PyTorch refuses it too",
                    arg="output_pad",
                )
        dims = []
        for axis, size in enumerate(shape.spatial):
            k, s, p, d, op = (args[name][axis] for name in ("kernel", "stride", "pad", "dilation", "output_pad"))
            out = transposed_size(size, k, s, p, d, op)
            if out < 1:
                raise LayerError(
                    f"ConvTranspose: the output would be {out} wide: (N - 1)·S - 2P + D·(K - 1) + output_pad + 1 = "
                    + transposed_arithmetic(size, k, s, p, d, op),
                    "use less padding, a larger kernel or stride, or apply it where the map is larger",
                    arg="pad",
                )
            dims.append(out)
        result = Shape((args["out"], *dims))
        groups = args["groups"]
        for what, count, hint in (
            ("input channels", shape.channels, f"choose groups among the divisors of {shape.channels}"),
            ("output channels", args["out"], "make out a multiple of groups"),
        ):
            if count % groups:
                raise LayerError(
                    f"ConvTranspose: groups={groups} must divide the {what}; got {count}", hint, arg="groups", recovered=result
                )
        return result

    def param_count(self, args: Args, shape: Shape) -> int:
        taps = math.prod(args["kernel"])
        return shape.channels * (args["out"] // args["groups"]) * taps + (args["out"] if args["bias"] else 0)

    def size_arithmetic(self, args: Args, shape: Shape) -> str:
        """How it gets its output size, per axis with numbers (an axis said once when both agree)."""
        names = ("kernel", "stride", "pad", "dilation", "output_pad")
        texts = [transposed_arithmetic(size, *(args[n][a] for n in names)) for a, size in enumerate(shape.spatial)]
        return texts[0] if len(set(texts)) == 1 else " and ".join(texts)

    def size_fix(self, args: Args, shape: Shape, wanted: Sizes) -> str | None:
        """The output_pad that gives the `wanted` spatial size (a U-Net's skip of odd size), with its arithmetic."""
        names = ("kernel", "stride", "pad", "dilation")
        pads = []
        for axis, size in enumerate(shape.spatial):
            k, s, p, d = (args[n][axis] for n in names)
            output_pad = wanted[axis] - transposed_size(size, k, s, p, d, 0)
            if not 0 <= output_pad < max(s, d):
                return None
            pads.append(output_pad)
        if tuple(pads) == args["output_pad"]:
            return None
        fixed = {**args, "output_pad": tuple(pads)}
        setting = f"output_pad={pads[0]}" if len(set(pads)) == 1 else f"output_pad=({', '.join(map(str, pads))})"
        return f"{setting} gives {self.size_arithmetic(fixed, shape)}"

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        # Every input position scatters one kernel of out/groups channels (fvcore's and ptflops' count).
        return shape.numel * (args["out"] // args["groups"]) * math.prod(args["kernel"])

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        names = ("kernel", "stride", "pad", "dilation")
        return tuple(axis.transposed(*(args[name][a] for name in names)) for a, axis in enumerate(field))

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        # The larger of the two passes' temporaries (see conv_transpose_forward and _backward).
        # Forward: the padded channel-major input and, per phase, the product and its accumulator
        # (at most the output). Backward: dy padded and rounded up to whole strides, in its
        # components; the input on the components' grid; the input gradient's product and
        # accumulator on that grid.
        # A phase's taps reach at most D·(K - 1)/S input positions beyond either end.
        padded_input = math.prod(
            size + 2 * (-(-args["dilation"][a] * (args["kernel"][a] - 1) // args["stride"][a]) + 1)
            for a, size in enumerate(shape.spatial)
        )
        forward = shape.channels * padded_input + 2 * out.numel
        grid = [-(-(size + 2 * p) // s) for size, p, s in zip(out.spatial, args["pad"], args["stride"], strict=True)]
        backward = out.channels * math.prod(args["stride"]) * math.prod(grid) + 3 * shape.channels * math.prod(grid)
        return batch * itemsize * max(forward, backward)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: list[tuple[str, Any]] = [("kernel_size", torch_pair(args["kernel"]))]
        for name, torch_name, default in (("stride", "stride", 1), ("pad", "padding", 0), ("output_pad", "output_padding", 0)):
            if any(differs(v, default) for v in args[name]):
                kwargs.append((torch_name, torch_pair(args[name])))
        if differs(args["groups"], 1):
            kwargs.append(("groups", args["groups"]))
        if not args["bias"]:
            kwargs.append(("bias", False))
        if any(differs(v, 1) for v in args["dilation"]):
            kwargs.append(("dilation", torch_pair(args["dilation"])))
        return TorchCall(torch_module("ConvTranspose", in_shape.spatial_rank), (in_shape.channels, args["out"]), tuple(kwargs))

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        # nn.ConvTransposeNd's weight is (in, out/groups, *kernel); its fan_in (for both bounds) is out/groups*prod(kernel).
        weight_shape = (shape.channels, args["out"] // args["groups"], *args["kernel"])
        fan_in = math.prod(weight_shape[1:])
        bound = ops.default_weight_bound(fan_in)
        tensors = {"weight": rng.uniform(-bound, bound, weight_shape, dtype)}
        if args["bias"]:
            bias_bound = ops.default_bias_bound(fan_in)
            tensors["bias"] = rng.uniform(-bias_bound, bias_bound, args["out"], dtype)
        return tensors

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        return conv_transpose_forward(x, params["weight"], params.get("bias"), args, ctx)

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return conv_transpose_backward(params["weight"], args["bias"], args, ctx, dy)

    def describe(self, args: Args) -> str:
        parts = ["ConvTranspose", str(args["out"]), "x".join(str(k) for k in args["kernel"])]
        if any(s != 1 for s in args["stride"]):
            parts.append("x" + pair_text(args["stride"]))
        if any(args["pad"]):
            parts.append("pad " + pair_text(args["pad"]))
        if any(args["output_pad"]):
            parts.append("outpad " + pair_text(args["output_pad"]))
        if any(d != 1 for d in args["dilation"]):
            parts.append("dil " + pair_text(args["dilation"]))
        text = " ".join(parts)
        return text + (f" g{args['groups']}" if args["groups"] != 1 else "")


# ---------------------------------------------------------------- Upsample

UPSAMPLE_MODES = ("nearest", "linear", "bilinear", "bicubic", "trilinear")
NUMPY_UPSAMPLE_MODES = ("nearest", "linear", "bilinear", "trilinear")
_RANK_MODES = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
"""The interpolating modes and the one number of spatial axes each is for (nn.Upsample refuses another)."""
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
_RANK_NAMES = {1: "a signal (CxL)", 2: "an image (CxHxW)", 3: "a volume (CxDxHxW)"}


def axis_taps(
    size: int, out: int, scale: float | None, mode: str, align_corners: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """How nn.Upsample maps one axis: output o reads input low[o] with weight 1 - weight[o] and
    high[o] with weight[o] (linear: each axis of linear, bilinear and trilinear), or only low[o]
    (nearest: weight None). Both index arrays are non-decreasing.

    `scale` is the user's scale factor, or None when a size was given: PyTorch then uses
    size/out, else 1/scale, for the source positions.
    """
    rows = np.arange(out)
    if mode == "nearest":
        # PyTorch computes the source index in float32: floor(dst * scale), clamped.
        ratio = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
        source = np.minimum(np.floor(rows.astype(np.float32) * ratio).astype(np.int64), size - 1)
        return source, source, None
    if align_corners:
        ratio = (size - 1) / (out - 1) if out > 1 else 0.0
        position = rows * ratio
    else:
        ratio = 1.0 / scale if scale is not None else size / out
        position = np.maximum(ratio * (rows + 0.5) - 0.5, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), size - 1)
    return low, np.minimum(low + 1, size - 1), position - low


_MATRIX_LIMIT = 1 << 16
"""Axes whose (out, in) interpolation matrix has at most this many entries (up to 256 pixels
each way) resize by matrix products; longer ones (a long signal) by gathers, which cost a few
operations per output instead of `in` multiply-adds."""


def _taps_matrix(taps: tuple[np.ndarray, np.ndarray, np.ndarray | None], size: int, dtype: Any) -> np.ndarray:
    """The (out, size) matrix of one axis's `axis_taps`."""
    low, high, weight = taps
    matrix = np.zeros((len(low), size), dtype)
    rows = np.arange(len(low))
    if weight is None:
        matrix[rows, low] = 1
        return matrix
    np.add.at(matrix, (rows, low), 1 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix


def _apply_matrices(x: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """One (out, in) matrix per spatial axis of (N, C, *spatial): an image's two as batched
    products over the maps (rows @ x @ columns.T), other ranks by ops.separable_apply."""
    if len(matrices) == 2:
        rows, columns = matrices
        return np.ascontiguousarray(np.matmul(np.matmul(rows, x), columns.T))
    return ops.separable_apply(x, matrices)


def _along(axis: int, ndim: int, values: np.ndarray) -> np.ndarray:
    """A per-position vector of one axis, shaped to broadcast along `axis` of an ndim array."""
    return values.reshape(-1, *(1,) * (ndim - 1 - axis))


def _take_taps(x: np.ndarray, axis: int, taps: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> np.ndarray:
    """One axis of Upsample by gathers: x[low] (nearest), or x[low]·(1 - weight) + x[high]·weight."""
    low, high, weight = taps
    y = np.take(x, low, axis=axis)
    if weight is None:
        return y
    w = _along(axis, x.ndim, weight.astype(x.dtype))
    y *= 1 - w
    y += np.take(x, high, axis=axis) * w
    return y


def _scatter_taps(g: np.ndarray, axis: int, size: int, taps: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> np.ndarray:
    """The gradient of `_take_taps` along `axis`: each output's gradient summed into the inputs it read.
    The indices are non-decreasing, so input i's share is a run of counts[i] outputs from starts[i]:
    the r-th output of every run is one gather of `size`, for r below the longest run (about the
    scale; no scatter of single elements, no loop over positions)."""
    low, high, weight = taps
    out = g.shape[axis]
    dx = np.zeros((*g.shape[:axis], size, *g.shape[axis + 1 :]), g.dtype)
    if weight is None:
        parts = [(low, g)]
    else:
        w = _along(axis, g.ndim, weight.astype(g.dtype))
        parts = [(low, g * (1 - w)), (high, g * w)]
    for index, contribution in parts:
        counts = np.bincount(index, minlength=size)
        starts = np.cumsum(counts) - counts
        for r in range(int(counts.max())):
            term = np.take(contribution, np.minimum(starts + r, out - 1), axis=axis)
            reads = counts > r  # a shorter run (or an input no output reads) adds nothing more
            if not reads.all():
                term *= _along(axis, g.ndim, reads.astype(g.dtype))
            dx += term
    return dx


_PHASE_RANKS = (1,)
"""Ranks whose integer-factor linear upsampling takes the phase blends even when the axes are small."""


def integer_factor(args: Args, axis: int, size: int, out: int) -> int | None:
    """The integer scale s of spatial axis `axis` when linear interpolation along it is periodic (align_corners
    false, out = s * size, PyTorch's ratio exactly 1 / s), else None."""
    if args["mode"] == "nearest" or args["align_corners"] or out % size:
        return None
    factor = out // size
    if args["scale"] is not None and args["scale"][axis] != factor:  # floor(size * 2.5) can be a multiple of size
        return None
    return factor


def _linear_phases(factor: int) -> tuple[list[tuple[slice, int, float, float]], list[float]]:
    """Output s*i + r of an integer-factor linear axis of `size` inputs, per phase r: (inner, edge,
    a, b). For i in `inner` it is a * x[j] + b * x[j + 1] with j = i (or i - 1 for phases left of
    the input's centre), so that over `inner` the pairs are x[:-1] and x[1:]; output `edge`'s pair
    falls off the border, where PyTorch clamps and reads x[edge] alone. Weights as PyTorch's:
    source position i + (r + 0.5) / s - 0.5, the fraction past j on x[j + 1]. Also the distinct
    weights of the phases that blend two inputs, which the forward multiplies by and the backward
    gathers under."""
    phases = []
    for r in range(factor):
        offset = (r + 0.5) / factor - 0.5
        if offset >= 0:
            phases.append((slice(0, -1), -1, 1.0 - offset, offset))
        else:
            phases.append((slice(1, None), 0, -offset, 1.0 + offset))
    return phases, sorted({w for _, _, a, b in phases for w in (a, b) if b != 0.0})


_PHASE_BLOCK = 1 << 15
"""Input elements per block of `_phase_upsample`: each block's products stay in the L2 cache, so the
output is written to memory once (whole-array passes made it memory-bound: several times the traffic)."""


def _phase_upsample(x: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Linear upsampling by an integer factor along `axis`, as PyTorch computes it: x times each
    distinct tap weight, then one add per phase straight into its (strided) outputs, block by
    block of the axes before `axis` (a few operations per output instead of gathers or an (out,
    in) matrix product)."""
    size = x.shape[axis]
    lead, trail = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
    source = x.reshape(lead, size, trail)
    y = np.empty((lead, size, factor, trail), x.dtype)
    phases, weights = _linear_phases(factor)
    step = max(1, _PHASE_BLOCK // (size * trail))
    products = np.empty((len(weights), min(step, lead), size, trail), x.dtype)
    for begin in range(0, lead, step):
        block = source[begin : begin + step]
        rows = len(block)
        times = {}
        for product, w in zip(products, weights, strict=True):
            times[w] = np.multiply(block, x.dtype.type(w), out=product[:rows])
        for r, (inner, edge, a, b) in enumerate(phases):
            phase = y[begin : begin + rows, :, r]
            if size == 1 or b == 0.0:
                phase[...] = block
                continue
            np.add(times[a][:, :-1], times[b][:, 1:], out=phase[:, inner])
            phase[:, edge] = block[:, edge]
    return y.reshape(*x.shape[:axis], size * factor, *x.shape[axis + 1 :])


def _phase_upsample_backward(g: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """The gradient of `_phase_upsample`: per distinct weight, the sum of the output gradients that
    read an input with it (shifted onto that input), times the weight; edges whole onto x[edge]."""
    size = g.shape[axis] // factor
    lead, trail = math.prod(g.shape[:axis]), math.prod(g.shape[axis + 1 :])
    phased = g.reshape(lead, size, factor, trail)
    dx = np.empty((lead, size, trail), g.dtype)
    phases, weights = _linear_phases(factor)
    step = max(1, _PHASE_BLOCK // (size * trail))
    sums = np.empty((len(weights), min(step, lead), size, trail), g.dtype)
    for begin in range(0, lead, step):
        out = dx[begin : begin + step]
        rows = len(out)
        gathered = {w: total[:rows] for total, w in zip(sums, weights, strict=True)}
        for total in gathered.values():
            total.fill(0)
        out.fill(0)
        for r, (inner, edge, a, b) in enumerate(phases):
            part = phased[begin : begin + rows, :, r]
            if size == 1 or b == 0.0:
                out += part
                continue
            gathered[a][:, :-1] += part[:, inner]
            gathered[b][:, 1:] += part[:, inner]
            out[:, edge] += part[:, edge]
        for w, total in gathered.items():
            total *= g.dtype.type(w)
            out += total
    return dx.reshape(*g.shape[:axis], size, *g.shape[axis + 1 :])


def _scale_text(scale: tuple[float, ...]) -> str:
    """`2`, or `(2, 1)` for factors that differ between axes."""
    texts = [f"{s:g}" for s in scale]
    return texts[0] if len(set(texts)) == 1 else f"({', '.join(texts)})"


def upsample_taps(args: Args, in_sizes: Sizes, out_sizes: Sizes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """`axis_taps` for every spatial axis (Upsample is separable)."""
    scales = args["scale"] if args["scale"] is not None else (None,) * len(in_sizes)
    return [
        axis_taps(size, out, scale, args["mode"], args["align_corners"])
        for size, out, scale in zip(in_sizes, out_sizes, scales, strict=True)
    ]


@register
class Upsample(LayerKind):
    """Resizes the map by interpolation (nn.Upsample) over 1, 2 or 3 spatial axes: nearest; linear (1-D), bilinear or bicubic (2-D), trilinear (3-D).

    Args: scale (a number, or one per spatial axis; PyTorch's scale_factor), size (an int or one entry per spatial
    axis) instead of scale, or like=@name instead of either: the spatial size of that
    earlier tensor (`@input`: the body's input), as FCN and DeepLab return to the input's
    size; mode=nearest (linear on a signal, bilinear or bicubic on an image, trilinear on a
    volume; the NumPy backend runs all but bicubic), align_corners=false (only for the
    interpolating modes).
    Shape: C x H x W -> C x floor(H·scale) x floor(W·scale), or C x h x w with size (or like);
    C x L and C x D x H x W alike.
    `like` reads only the referenced tensor's shape, known when checking: it lowers as
    size=(h, w) does, and the summary and drawing show it as a data edge.
    Example: `Upsample(2, mode=bilinear)`, `Upsample(like=@input, mode=bilinear)`.
    """

    name = "Upsample"
    np_supported = True
    family = "reshape"
    input_rank = "spatial"
    signature = (
        ArgSpec("scale", "floats", None, keywords=("scale_factor",)),
        ArgSpec("mode", "choice", "nearest", choices=UPSAMPLE_MODES),
        ArgSpec("align_corners", "bool", False),
        ArgSpec("size", "pair", None, minimum=1),
        ArgSpec("like", "reference", None),
    )

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        out = dict(args)
        # One entry per spatial axis; before the input is known (or on a flat one, which the
        # input-rank check reports) two, as for an image.
        rank = shape.spatial_rank if shape is not None and shape.has_space else 2
        if out["scale"] is not None:
            out["scale"] = spatial_tuple(self.name, "scale", out["scale"], rank, "number")
        if out["size"] is not None:
            out["size"] = spatial_tuple(self.name, "size", out["size"], rank)
        like: TensorRef | None = out["like"]
        if like is not None:
            # The referenced tensor's spatial size becomes `size`; `like` keeps what was written.
            given = [name for name in ("scale", "size") if out[name] is not None]
            if given:
                raise LayerError(
                    f"Upsample: like={like.text} sets the size; got {' and '.join(given)} as well",
                    f"keep one of them: `Upsample(like={like.text})` or `Upsample(size=(h, w))`",
                    arg="like",
                )
            if not like.shape.has_space:
                raise LayerError(
                    f"Upsample: like={like.text} is {like.shape.describe()}; it takes the spatial size of a map "
                    "(CxL, CxHxW or CxDxHxW)",
                    "refer to a tensor before `flatten` (or GlobalAvgPool), or give size=(h, w)",
                    arg="like",
                )
            if shape is not None and shape.has_space and like.shape.spatial_rank != rank:
                raise LayerError(
                    f"Upsample: like={like.text} is {like.shape.describe()}, but the input here is {shape.describe()}; "
                    "it takes the size of a map with as many spatial axes",
                    f"refer to a tensor with {rank} spatial ax{'is' if rank == 1 else 'es'}, or give size=",
                    arg="like",
                )
            out["size"], out["like"] = like.shape.spatial, like.text
        return out

    def infer(self, args: Args, shape: Shape) -> Shape:
        scale, size, mode = args["scale"], args["size"], args["mode"]
        if (scale is None) == (size is None):
            raise LayerError(
                "Upsample: give exactly one of scale and size; got " + ("both" if scale is not None else "neither"),
                "write `Upsample(2)` for a factor, `Upsample(size=(h, w))` for a size, or `Upsample(like=@name)` for an earlier tensor's size",
                arg="size" if scale is not None else None,
            )
        rank = shape.spatial_rank
        if mode in _RANK_MODES and _RANK_MODES[mode] != rank:
            # nn.Upsample refuses it too ("Got 3D input, but bilinear mode needs 4D input").
            raise LayerError(
                f"Upsample: mode={mode} is for {_RANK_NAMES[_RANK_MODES[mode]]}; got {shape.describe()}",
                f"on {_RANK_NAMES[rank]} write mode={_LINEAR_MODE[rank]} (or nearest)",
                arg="mode",
            )
        if args["align_corners"] and mode == "nearest":
            raise LayerError(
                "Upsample: align_corners applies only to the interpolating modes (linear, bilinear, bicubic, trilinear)",
                f"drop align_corners, or choose mode={_LINEAR_MODE[rank]} (PyTorch refuses it too)",
                arg="align_corners",
            )
        if size is not None:
            return Shape((shape.channels, *size))
        if min(scale) <= 0:
            raise LayerError(f"Upsample: scale must be positive; got {_scale_text(scale)}", "use a factor such as 2", arg="scale")
        dims = [math.floor(n * s) for n, s in zip(shape.spatial, scale, strict=True)]
        if min(dims) < 1:
            raise LayerError(
                f"Upsample: scale {_scale_text(scale)} leaves no pixels: "
                + " x ".join(f"floor({n}·{s:g})" for n, s in zip(shape.spatial, scale, strict=True))
                + f" = {'x'.join(map(str, dims))}",
                "use a larger scale, or give size="
                + ("n" if rank == 1 else f"({SPATIAL_AXES[rank].lower().replace('x', ', ')})"),
                arg="scale",
            )
        return Shape((shape.channels, *dims))

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        # The source position of output pixel o is (o + 1/2)·ratio - 1/2, ratio = input pixels per
        # output pixel: 1/scale (what nn.Upsample uses when given a scale), or in/out for a size;
        # (in - 1)/(out - 1) with align_corners.
        out = self.infer(args, shape).spatial
        ratios = []
        for axis, (size, new) in enumerate(zip(shape.spatial, out, strict=True)):
            if args["align_corners"] and new > 1:
                ratios.append(Fraction(size - 1, new - 1))
            elif args["scale"] is not None:
                ratios.append(1 / Fraction(args["scale"][axis]).limit_denominator(MAX_PERIOD))
            else:
                ratios.append(Fraction(size, new))
        return tuple(axis.resample(ratio, args["mode"], args["align_corners"]) for axis, ratio in zip(field, ratios, strict=True))

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        kwargs: list[tuple[str, Any]] = []
        if args["size"] is not None:
            kwargs.append(("size", torch_pair(args["size"])))
        else:
            scales = tuple(int(s) if float(s).is_integer() else s for s in args["scale"])
            kwargs.append(("scale_factor", scales[0] if len(set(scales)) == 1 else scales))
        if args["mode"] != "nearest":
            kwargs.append(("mode", args["mode"]))
            kwargs.append(("align_corners", args["align_corners"]))
        return TorchCall("nn.Upsample", (), tuple(kwargs))

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        # The intermediates, resized along the first axes (the largest of them), and the matrices.
        sizes, news = shape.spatial, out.spatial
        largest = max(math.prod(news[: a + 1]) * math.prod(sizes[a + 1 :]) for a in range(len(sizes)))
        matrices = sum(new * size for new, size in zip(news, sizes, strict=True))
        return (batch * shape.channels * largest + matrices) * itemsize

    def np_refusal(self, args: Args) -> str | None:
        if args["mode"] not in NUMPY_UPSAMPLE_MODES:
            return f"Upsample(mode={args['mode']}) is not supported by the numpy backend ({', '.join(NUMPY_UPSAMPLE_MODES)} are)"
        return None

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        in_sizes = x.shape[2:]
        out_sizes = (
            tuple(args["size"])
            if args["size"] is not None
            else tuple(math.floor(n * s) for n, s in zip(in_sizes, args["scale"], strict=True))
        )
        small = all(size * out <= _MATRIX_LIMIT for size, out in zip(in_sizes, out_sizes, strict=True))
        factors = [
            factor
            for axis, (size, out) in enumerate(zip(in_sizes, out_sizes, strict=True))
            if (factor := integer_factor(args, axis, size, out))
        ]
        if (len(in_sizes) in _PHASE_RANKS or not small) and len(factors) == len(in_sizes):
            # An integer factor (linear modes, align_corners false): per-axis phase blends. Faster
            # than gathers, and than the matrix product on a signal; an image's or a volume's small
            # axes keep the matrix products (measured 1.5-2.5x faster there: bench/RESULTS.md).
            ctx.save(factors=factors)
            y = x
            for a, factor in enumerate(factors):
                y = _phase_upsample(y, 2 + a, factor)
            return y
        taps = upsample_taps(args, in_sizes, out_sizes)
        if small and (args["mode"] != "nearest" or len(in_sizes) == 2):
            # Small axes: one (out, in) matrix per axis, one BLAS product each (an image's two as
            # rows @ x @ columns.T per map), faster than gathers but for nearest on a signal or a
            # volume, which is a plain copy by gathers.
            matrices = [_taps_matrix(one_axis, size, x.dtype) for one_axis, size in zip(taps, in_sizes, strict=True)]
            ctx.save(matrices=matrices)
            return _apply_matrices(x, matrices)
        ctx.save(taps=taps, in_sizes=in_sizes)
        y = x
        for a, one_axis in enumerate(taps):
            y = _take_taps(y, 2 + a, one_axis)
        return y

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        if "factors" in ctx.saved:
            g = dy
            for a in reversed(range(len(ctx.saved["factors"]))):
                g = _phase_upsample_backward(g, 2 + a, ctx.saved["factors"][a])
            return g, {}
        if "matrices" in ctx.saved:
            return _apply_matrices(dy, [matrix.T for matrix in ctx.saved["matrices"]]), {}
        g = dy
        for a in reversed(range(len(ctx.saved["taps"]))):
            g = _scatter_taps(g, 2 + a, ctx.saved["in_sizes"][a], ctx.saved["taps"][a])
        return g, {}

    def describe(self, args: Args) -> str:
        what = f"to {pair_text(args['size'])}" if args["size"] is not None else f"x{_scale_text(args['scale'])}"
        if args["like"] is not None:
            what += f" (like {args['like']})"
        corners = " corners" if args["align_corners"] else ""
        return f"Upsample {what} {args['mode']}{corners}"


# ---------------------------------------------------------------- Reshape


@register
class Reshape(LayerKind):
    """Reshapes the features into an image (nn.Unflatten(1, (c, h, w))): a generator's start from a flat vector.

    Args: c, h, w; or PyTorch's spelling `Unflatten(1, (c, h, w))` (dim 1, the features; a
    2-entry size (c, l) gives a signal, a 4-entry one (c, d, h, w) a volume).
    Shape: N -> c x h x w; c·h·w must equal N (an image is flattened first).
    Example: `FC(4096), Reshape(256, 4, 4)`, `Unflatten(1, (256, 4, 4))`.
    """

    name = "Reshape"
    np_supported = True
    is_view = True
    aliases = ("Unflatten",)
    family = "reshape"
    input_rank = "flat"
    signature = (
        # `h` also takes PyTorch's size tuple, `c` being then its dim: nn.Unflatten(dim, unflattened_size).
        ArgSpec("c", "int", minimum=0, keywords=("dim",)),
        ArgSpec("h", "pair", minimum=1, keywords=("height", "unflattened_size")),
        ArgSpec("w", "int", None, minimum=1, keywords=("width",)),
    )

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        c, h, w = args["c"], args["h"], args["w"]
        if isinstance(h, tuple):  # Unflatten(1, (c, h, w))
            if w is not None:
                raise LayerError(
                    f"Reshape: with a size tuple ({', '.join(map(str, h))}) there is no `w`",
                    "write `Unflatten(1, (c, h, w))` or `Unflatten(c, h, w)`",
                    arg="w",
                )
            if c != 1:
                raise LayerError(
                    f"Reshape: Unflatten's dim must be 1 (the features of a flat input); got {c}",
                    "write `Unflatten(1, (c, h, w))`: dim 0 is the batch",
                    arg="c",
                )
            if not 2 <= len(h) <= 4:
                raise LayerError(
                    f"Reshape: the size ({', '.join(map(str, h))}) has {len(h)} entries; it takes 2 to 4: (c, l), (c, h, w), (c, d, h, w)",
                    "give the channels and one entry per spatial axis",
                    arg="h",
                )
            return {"dims": h}
        if w is None:
            raise LayerError(
                "Reshape: give c, h and w, or PyTorch's `Unflatten(1, (c, h, w))`",
                f"signature: {self.signature_text()}",
            )
        if c < 1:
            raise LayerError(f"Reshape: `c` must be a positive integer; got {c}", "give the channels of the image", arg="c")
        return {"dims": (c, h, w)}

    def infer(self, args: Args, shape: Shape) -> Shape:
        dims = args["dims"]
        count = math.prod(dims)
        if count != shape.numel:
            letters = "c·h·w" if len(dims) == 3 else "the product of the size"
            raise LayerError(
                f"Reshape: {letters} = {'·'.join(map(str, dims))} = {count}, but its input has {shape.numel} features",
                f"choose c, h, w whose product is {shape.numel}, or change the layer before it to give {count} features "
                f"(PyTorch's nn.Unflatten(1, (c, h, w)) is written Unflatten(1, (c, h, w)) or Unflatten(c, h, w))",
            )
        return Shape(dims)

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        return TorchCall("nn.Unflatten", (1, tuple(args["dims"])))

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        ctx.save(in_shape=x.shape)
        return x.reshape(x.shape[0], *args["dims"])

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        return dy.reshape(ctx.saved["in_shape"]), {}

    def describe(self, args: Args) -> str:
        return f"Reshape {'x'.join(map(str, args['dims']))}"
