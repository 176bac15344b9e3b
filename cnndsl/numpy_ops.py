"""Vectorised NumPy kernels shared by the layer kinds' NumPy forward and backward methods.

Layouts are NC followed by the spatial axes (NCL, NCHW, NCDHW). Convolutions are im2col (a strided view copied once into a
contiguous column matrix) plus one batched BLAS matmul; the backward scatters the column
gradient back with col2im, one strided add per kernel offset (never a loop over pixels
or channels). Pools use the same window views. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .limits import COLUMN_BYTES  # one constant: the memory estimate counts the columns this slices by

Sizes = tuple[int, ...]
"""One value per spatial axis."""
DIRECT_PRODUCT_PIXELS = 1024
"""Output maps at least this large (OH*OW) get one product per sample, written in place (measured 5% faster on ResNet-18)."""
Tensors = dict[str, np.ndarray]
"""A layer's tensors (or their gradients) by PyTorch's names: weight, bias, running_mean, ..."""
Backward = tuple["np.ndarray | None", Tensors]
"""What a layer's NumPy backward returns: the input gradient (None if not needed) and the parameter gradients."""


class Scratch:
    """Reusable work buffers (im2col columns), kept by a model across layers and calls.

    Arrays above glibc's mmap threshold (32 MiB) are fresh pages on every allocation, and
    faulting them in costs about as much as filling them; one grown-on-demand buffer per
    slot avoids that. A buffer is valid only until the next `get` of the same slot, so only
    temporaries that no one keeps may live here. Not thread-safe (neither is a model).
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, slot: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        size = int(np.prod(shape))
        dtype = np.dtype(dtype)
        buffer = self.buffers.get(slot)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = self.buffers[slot] = np.empty(size, dtype)
        return buffer[:size].reshape(shape)


@dataclass
class NpContext:
    """What one layer call gets besides its input: flags and a place for backward's state.

    `record`: a backward pass will follow, so `save` what it needs (otherwise `save` is a
    no-op and the call keeps nothing alive). `inplace`: the layer owns its input (no one
    else reads it and nothing saved it), so it may overwrite it. `need_dx`: backward must
    compute the input gradient (false for a layer that reads the network input when its
    gradient was not asked for). `rng`: the generator for stochastic layers (Dropout).
    """

    rng: np.random.Generator
    record: bool = False
    inplace: bool = False
    need_dx: bool = True
    saved: dict[str, Any] = field(default_factory=dict)
    scratch: Scratch | None = None
    """Work buffers for temporaries that die within the call (None: allocate)."""

    def save(self, **tensors: Any) -> None:
        if self.record:
            self.saved.update(tensors)


class TorchRandom:
    """PyTorch's CPU generator and its `uniform_`, in NumPy: one seed gives every backend the same initial weights.

    `torch.manual_seed(seed)` seeds a Mersenne Twister (MT19937) with the seed's low 32 bits,
    and `tensor.uniform_(a, b)` on the CPU turns each 32-bit draw `r` into
    `(r & 0xFFFFFF) * 2**-24 * (b - a) + a` in float32, one element after another. The NumPy
    initialisers draw their tensors in the order PyTorch creates the modules (execution
    order), so `to_numpy(seed=s)`, `to_torch(seed=s)` and the generated class built after
    `torch.manual_seed(s)` start from the same state_dict. PyTorch's AVX2/AVX-512 kernels
    fuse the last multiply-add (one rounding); this does too (in float64, then one rounding
    to float32), so results are bit-identical there and within one float32 ulp elsewhere.
    """

    CHUNK = 1 << 20
    """Draws converted per step: bounded temporaries, and fast for 100M-weight classifiers."""

    def __init__(self, seed: int) -> None:
        self.bit_generator = np.random.MT19937()
        self.bit_generator.state = {"bit_generator": "MT19937", "state": {"key": mt19937_key(seed), "pos": 624}}

    def uniform(self, low: float, high: float, shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
        """U(low, high) as `torch.empty(shape).uniform_(low, high)` draws it in float32, cast to `dtype`."""
        out = np.empty(shape, dtype=np.float32)
        flat = out.reshape(-1)
        a, b = np.float32(low), np.float32(high)
        span, offset = float(b - a), float(a)
        for begin in range(0, flat.size, self.CHUNK):
            raw = self.bit_generator.random_raw(min(self.CHUNK, flat.size - begin))
            raw &= 0xFFFFFF
            values = raw.astype(np.float64)
            values *= span * 2.0**-24  # exact: a power of two times a float32 difference
            values += offset
            flat[begin : begin + len(values)] = values
        return out.astype(dtype, copy=False)


def mt19937_key(seed: int) -> np.ndarray:
    """The Mersenne Twister state that `torch.manual_seed(seed)` sets (init_genrand of the low 32 bits)."""
    key = np.empty(624, dtype=np.uint32)
    value = seed % 2**32  # torch keeps the low 32 bits (negative seeds as their 64-bit two's complement)
    for index in range(624):
        key[index] = value
        value = (1812433253 * (value ^ (value >> 30)) + index + 1) & 0xFFFFFFFF
    return key


KAIMING_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
"""`nn.init.calculate_gain("leaky_relu", math.sqrt(5))`, as nn.Conv2d and nn.Linear initialise their weights."""


def default_weight_bound(fan_in: int) -> float:
    """The bound of nn.Conv2d's and nn.Linear's `kaiming_uniform_(weight, a=math.sqrt(5))`, computed as PyTorch computes it."""
    return math.sqrt(3.0) * (KAIMING_GAIN / math.sqrt(fan_in)) if fan_in else 0.0


def default_bias_bound(fan_in: int) -> float:
    """The bound of nn.Conv2d's and nn.Linear's default bias initialisation."""
    return 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0


# ---------------------------------------------------------------- windows and im2col
#
# Every kernel below works over any number of spatial axes, (N, C, L), (N, C, H, W) or
# (N, C, D, H, W): sizes, kernels, strides and paddings are tuples with one entry per axis.
# Python loops run over kernel offsets only (each step covers every position and channel).

_ALL = slice(None)


def _index(*parts: Any) -> tuple[Any, ...]:
    """An index tuple built from pieces (`_index(_ALL, _ALL, *offset)`), for any number of axes."""
    return parts


def pad_spatial(x: np.ndarray, pad: Sizes, extra: Sizes | None = None, value: float = 0.0) -> np.ndarray:
    """Pad every spatial axis by `pad` on both sides plus `extra` more at its end (ceil-mode pools)."""
    extra = extra or (0,) * len(pad)
    if not any(pad) and not any(extra):
        return x
    sizes = x.shape[2:]
    out = np.empty((*x.shape[:2], *(s + 2 * p + e for s, p, e in zip(sizes, pad, extra, strict=True))), dtype=x.dtype)
    interior = tuple(slice(p, p + s) for p, s in zip(pad, sizes, strict=True))
    # Fill only the borders: the interior is overwritten by the copy anyway. A cell outside the
    # interior is so first on some axis `a`, inside on the axes before it: one slab per side of `a`.
    for a, (p, s) in enumerate(zip(pad, sizes, strict=True)):
        out[_index(_ALL, _ALL, *interior[:a], slice(0, p))] = value
        out[_index(_ALL, _ALL, *interior[:a], slice(p + s, None))] = value
    out[_index(_ALL, _ALL, *interior)] = x
    return out


def window_view(xp: np.ndarray, kernel: Sizes, stride: Sizes, dilation: Sizes, out_hw: Sizes) -> np.ndarray:
    """Read-only strided view (N, C, *kernel, *out) of a padded input:
    view[..., i, j, oh, ow] = xp[..., oh*s + i*d, ow*s + j*d] (every spatial axis alike)."""
    spatial_strides = xp.strides[2:]
    return as_strided(
        xp,
        shape=(*xp.shape[:2], *kernel, *out_hw),
        strides=(
            *xp.strides[:2],
            *(st * d for st, d in zip(spatial_strides, dilation, strict=True)),
            *(st * s for st, s in zip(spatial_strides, stride, strict=True)),
        ),
        writeable=False,
    )


def offset_slices(offset: Sizes, stride: Sizes, dilation: Sizes, out_hw: Sizes) -> tuple[slice, ...]:
    """The padded-input positions that kernel offset `offset` (one index per axis) reads, as slices (for col2im adds)."""
    return tuple(slice(i * d, i * d + s * (o - 1) + 1, s) for i, s, d, o in zip(offset, stride, dilation, out_hw, strict=True))


def _spatial_axes(rank: int, first: int) -> tuple[int, ...]:
    return tuple(range(first, first + rank))


def im2col(
    xp: np.ndarray, kernel: Sizes, stride: Sizes, dilation: Sizes, out_hw: Sizes, scratch: Scratch | None = None
) -> np.ndarray:
    """Columns (C*prod(kernel), N*prod(out)) of a padded input: one copy of the window view, channel-major.

    Channel-major columns make a convolution a single 2-D product W (O, C*kh*kw) @ cols over
    the whole batch. NumPy's stacked matmul (one product per sample) measured three times
    slower on ResNet-18, batch 8, than this one large product plus the transpose of its output.
    """
    n, c = xp.shape[:2]
    rank = len(kernel)
    shape = (c, *kernel, n, *out_hw)
    cols = scratch.get("cols", shape, xp.dtype) if scratch is not None else np.empty(shape, dtype=xp.dtype)
    view = window_view(xp, kernel, stride, dilation, out_hw)
    np.copyto(cols, view.transpose(1, *_spatial_axes(rank, 2), 0, *_spatial_axes(rank, 2 + rank)))
    return cols.reshape(c * math.prod(kernel), n * math.prod(out_hw))


def col2im(dcols: np.ndarray, dxp: np.ndarray, kernel: Sizes, stride: Sizes, dilation: Sizes, out_hw: Sizes) -> None:
    """Scatter channel-major column gradients (C*prod(kernel), N*prod(out)) into `dxp` (N, C, *padded), overwriting it."""
    n, c = dxp.shape[:2]
    rank = len(kernel)
    blocks = dcols.reshape(c, *kernel, n, *out_hw)
    if all(k == 1 for k in kernel) and all(s == 1 for s in stride):
        np.copyto(dxp.swapaxes(0, 1), blocks[_index(_ALL, *(0,) * rank)])
        return
    # Several samples: accumulate channel-major (contiguous, as the columns are read), transpose once
    # at the end (adding into the transposed view of dxp measured 10% slower). One sample: in place.
    if n == 1:
        target = dxp.swapaxes(0, 1)
        target[...] = 0
    else:
        target = np.zeros((c, n, *dxp.shape[2:]), dxp.dtype)
    for offset in np.ndindex(*kernel):  # kernel offsets only: each add covers every position and channel
        target[_index(_ALL, _ALL, *offset_slices(offset, stride, dilation, out_hw))] += blocks[_index(_ALL, *offset)]
    if n > 1:
        np.copyto(dxp, target.swapaxes(0, 1))


def to_channel_major(a: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) -> (C, N*prod(spatial)), a copy."""
    return np.ascontiguousarray(a.swapaxes(0, 1)).reshape(a.shape[1], -1)


def unpad_spatial(xp: np.ndarray, pad: Sizes, size: Sizes) -> np.ndarray:
    """The interior of a padded array (a view)."""
    if xp.shape[2:] == tuple(size):
        return xp
    return xp[_index(_ALL, _ALL, *(slice(p, p + s) for p, s in zip(pad, size, strict=True)))]


def border_copies(size: int, low: int, high: int, mode: str) -> list[tuple[slice, slice]]:
    """Along one padded axis, (border, source) slice pairs in padded coordinates: the border cells
    copy the source cells (a source of one cell is broadcast), as nn.ConvNd's padding modes do
    (reflect mirrors without repeating the edge: -1 -> 1, size -> size - 2). Zeros: none."""
    end = low + size  # the first cell after the interior
    if mode == "reflect":
        pairs = [(slice(0, low), slice(2 * low, low, -1)), (slice(end, end + high), reversed_slice(end - 2, high))]
    elif mode == "replicate":
        pairs = [(slice(0, low), slice(low, low + 1)), (slice(end, end + high), slice(end - 1, end))]
    elif mode == "circular":
        pairs = [(slice(0, low), slice(size, size + low)), (slice(end, end + high), slice(low, low + high))]
    else:
        pairs = []
    return [(border, source) for border, source in pairs if border.stop > border.start]


def reversed_slice(first: int, count: int) -> slice:
    """Cells first, first - 1, ..., first - count + 1 (a stop of -1 would wrap around: None)."""
    stop = first - count
    return slice(first, stop if stop >= 0 else None, -1)


def pad_borders(x: np.ndarray, pads: tuple[tuple[int, int], ...], mode: str) -> np.ndarray:
    """x (N, C, *spatial) padded by (before, after) on each spatial axis in `mode` (zeros, reflect,
    replicate, circular), as nn.ConvNd's padding modes do.

    The interior is one copy; the borders are filled from it by slice assignments, one axis at a
    time (they are at most a kernel wide), so the cost is that of the copy. Axis `a`'s borders
    are filled over the already padded extent of the axes before it (the corners) and the
    interior of those after: every border cell once.
    """
    sizes = x.shape[2:]
    out = np.empty((*x.shape[:2], *(s + lo + hi for s, (lo, hi) in zip(sizes, pads, strict=True))), dtype=x.dtype)
    interior = tuple(slice(lo, lo + s) for s, (lo, _) in zip(sizes, pads, strict=True))
    out[_index(_ALL, _ALL, *interior)] = x
    for a, (size, (lo, hi)) in enumerate(zip(sizes, pads, strict=True)):
        before, after = (_ALL,) * a, interior[a + 1 :]
        if mode == "zeros":
            for border in (slice(0, lo), slice(lo + size, lo + size + hi)):
                out[_index(_ALL, _ALL, *before, border, *after)] = 0
        for border, source in border_copies(size, lo, hi, mode):
            out[_index(_ALL, _ALL, *before, border, *after)] = out[_index(_ALL, _ALL, *before, source, *after)]
    return out


def fold_borders(dxp: np.ndarray, pads: tuple[tuple[int, int], ...], mode: str, size: Sizes) -> np.ndarray:
    """pad_borders' backward: the padded gradient summed onto the input positions each border copied
    (the last axis first, the reverse of pad_borders' order); one slice add per border."""
    grad = dxp
    for a in reversed(range(len(pads))):
        (lo, hi), length = pads[a], size[a]
        before = (_ALL,) * a
        folded = grad[_index(_ALL, _ALL, *before, slice(lo, lo + length))].copy()
        for border, source in border_copies(length, lo, hi, mode):
            part = grad[_index(_ALL, _ALL, *before, border)]
            if mode == "replicate":  # a whole border onto its one edge cell
                part = part.sum(axis=2 + a, keepdims=True)
            shifted = slice(source.start - lo, None if source.stop is None else source.stop - lo, source.step)
            if shifted.stop is not None and shifted.stop < 0:  # a reversed slice reaching the interior's first cell
                shifted = slice(shifted.start, None, shifted.step)
            folded[_index(_ALL, _ALL, *before, shifted)] += part
        grad = folded
    return grad


# ---------------------------------------------------------------- convolution


@dataclass(frozen=True)
class ConvGeometry:
    """Everything a convolution's kernels need, resolved once from the layer's arguments.

    Every field but `groups` has one entry per spatial axis (`in_hw`, `out_hw`: the input's
    and output's spatial sizes, (L,), (H, W) or (D, H, W)).
    """

    in_hw: Sizes
    out_hw: Sizes
    kernel: Sizes
    stride: Sizes
    pad: Sizes
    dilation: Sizes
    groups: int


def conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geo: ConvGeometry, ctx: NpContext) -> np.ndarray:
    """nn.Conv1d/2d/3d's forward: depthwise as a multiply-add per kernel offset, otherwise im2col + one matmul per group."""
    n, c = x.shape[:2]
    rank = len(geo.kernel)
    out_channels = weight.shape[0]
    xp = pad_spatial(x, geo.pad)
    if geo.groups == c and weight.shape[1] == 1:
        y = _depthwise_forward(xp, weight, geo)
    else:
        g = geo.groups
        k, og = weight[0].size, out_channels // g
        w2 = weight.reshape(out_channels, k)
        y = np.empty((n, out_channels, *geo.out_hw), x.dtype)
        size = math.prod(geo.out_hw)
        y3 = y.reshape(n, out_channels, size)
        for start, stop in column_slices(n, c * k // g * size * x.itemsize, size):
            cols = im2col(xp[start:stop], geo.kernel, geo.stride, geo.dilation, geo.out_hw, ctx.scratch)
            if stop - start == 1:
                # One sample: its products go straight into the NC... output (no transpose).
                for group in range(g):
                    rows = slice(group * og, (group + 1) * og)
                    np.matmul(w2[rows], cols[group * k : (group + 1) * k], out=y3[start, rows])
                continue
            # Small maps: one product over the slice (per-sample products would be thin), then transpose.
            y2 = np.empty((out_channels, cols.shape[1]), x.dtype)
            for group in range(g):
                rows = slice(group * og, (group + 1) * og)
                np.matmul(w2[rows], cols[group * k : (group + 1) * k], out=y2[rows])
            np.copyto(y[start:stop], y2.reshape(out_channels, stop - start, *geo.out_hw).swapaxes(0, 1))
    if bias is not None:
        y += bias.reshape(1, -1, *(1,) * rank)
    # The padded input is what backward needs; re-deriving the columns there is one copy,
    # far cheaper in memory than keeping prod(kernel) times the input alive until backward.
    ctx.save(xp=xp, geo=geo)
    return y


def column_slices(n: int, per_sample: int, size: int) -> list[tuple[int, int]]:
    """The batch slices (start, stop) a convolution builds its im2col columns for, one at a time.

    Large output maps (DIRECT_PRODUCT_PIXELS or more): one sample per slice, its columns
    consumed by the product while they are still in cache (building the whole batch's
    columns first, then multiplying, made a 16-channel 64x64 convolution twice as slow: the
    product then streams them back from memory). Small maps: as many samples as COLUMN_BYTES
    allows (at least one), for one product wide enough to be efficient.
    """
    step = 1 if size >= DIRECT_PRODUCT_PIXELS else max(1, min(n, COLUMN_BYTES // max(1, per_sample)))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def conv_backward(weight: np.ndarray, has_bias: bool, ctx: NpContext, dy: np.ndarray) -> Backward:
    """Gradients of nn.Conv1d/2d/3d: dW and the column gradient as one matmul per group each, dx by col2im.

    The columns are rebuilt slice by slice (see `column_slices`), each slice's products and
    scatter done before the next is built."""
    xp: np.ndarray = ctx.saved["xp"]
    geo: ConvGeometry = ctx.saved["geo"]
    n, c = xp.shape[:2]
    out_channels = weight.shape[0]
    grads: dict[str, np.ndarray] = {}
    dxp = None
    if geo.groups == c and weight.shape[1] == 1:
        dw, dxp = _depthwise_backward(xp, weight, geo, dy, ctx.need_dx)
        grads["weight"] = dw
    else:
        g = geo.groups
        k, og = weight[0].size, out_channels // g
        w2 = weight.reshape(out_channels, k)
        size = math.prod(geo.out_hw)
        # dW transposed, (k, O): accumulated over the slices as cols @ dy^T (OpenBLAS takes 20 times
        # longer for dy @ cols^T, whose reduction runs over the long axis with a transposed right operand).
        dw_t = np.zeros((k, out_channels), weight.dtype)
        dxp = np.empty(xp.shape, dy.dtype) if ctx.need_dx else None
        for start, stop in column_slices(n, c * k // g * size * xp.itemsize, size):
            cols = im2col(xp[start:stop], geo.kernel, geo.stride, geo.dilation, geo.out_hw, ctx.scratch)
            # (O, count*size): one sample's gradient is already channel-major.
            dy2 = dy[start].reshape(out_channels, size) if stop - start == 1 else to_channel_major(dy[start:stop])
            dcols = None
            if dxp is not None:
                shape = (g * k, cols.shape[1])
                dcols = ctx.scratch.get("dcols", shape, dy.dtype) if ctx.scratch is not None else np.empty(shape, dy.dtype)
            for group in range(g):
                rows, columns = slice(group * og, (group + 1) * og), slice(group * k, (group + 1) * k)
                dw_t[:, rows] += np.matmul(cols[columns], dy2[rows].T)
                if dcols is not None:
                    np.matmul(w2[rows].T, dy2[rows], out=dcols[columns])
            if dxp is not None and dcols is not None:
                col2im(dcols, dxp[start:stop], geo.kernel, geo.stride, geo.dilation, geo.out_hw)
        grads["weight"] = np.ascontiguousarray(dw_t.T).reshape(weight.shape)
    if has_bias:
        grads["bias"] = dy.sum(axis=(0, *range(2, dy.ndim)))
    dx = None if dxp is None else unpad_spatial(dxp, geo.pad, geo.in_hw)
    return dx, grads


DEPTHWISE_CHUNK_BYTES = 256 * 2**10
"""Output rows (one map of one sample) per step of the stride-1 depthwise kernels: about this many bytes,
so that the accumulator and its temporary stay in the core's cache across the kernel offsets."""


@dataclass(frozen=True)
class FlatShift:
    """A stride-1 window over a padded map read as one flat run per map: kernel offset `offset`
    reads the run at `starts[k]`, and output position p (on the grid out_hw[0] x padded[1:], whose
    extra columns are cropped) is the sum over offsets of weight * run[starts[k] + p]. Every
    multiply-add is then over long contiguous runs, with no copy of windows.
    """

    padded: Sizes
    out_hw: Sizes
    starts: tuple[int, ...]
    length: int
    """Flat positions computed: the last one needed (the last output) plus one; within the map for every offset."""

    @staticmethod
    def of(padded: Sizes, geo: ConvGeometry) -> FlatShift:
        pitches = [math.prod(padded[a + 1 :]) for a in range(len(padded))]  # flat step of each axis
        starts = tuple(
            sum(i * d * pitch for i, d, pitch in zip(offset, geo.dilation, pitches, strict=True))
            for offset in np.ndindex(*geo.kernel)
        )
        last = sum((o - 1) * pitch for o, pitch in zip(geo.out_hw, pitches, strict=True))
        return FlatShift(padded, geo.out_hw, starts, last + 1)

    @property
    def grid(self) -> int:
        """Flat size of the output grid out_hw[0] x padded[1:]."""
        return self.out_hw[0] * math.prod(self.padded[1:])

    def crop(self, grid: np.ndarray) -> np.ndarray:
        """(rows, grid) -> (rows, *out_hw): the valid outputs, a view."""
        full = grid.reshape(len(grid), self.out_hw[0], *self.padded[1:])
        return full[_index(_ALL, *(slice(0, o) for o in self.out_hw))]


def _row_steps(rows: int, row_bytes: int) -> range:
    return range(0, rows, max(1, DEPTHWISE_CHUNK_BYTES // max(1, row_bytes)))


def _depthwise_forward(xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """groups == in_channels: accumulate weight[c, k, *offset] * window(offset) over the kernel offsets.

    At stride 1 (the usual case) on flat runs (see FlatShift), in blocks of maps that stay in cache
    (the whole batch's accumulator streamed from memory once per offset was 19x torch for a 7x7
    kernel); otherwise on the strided window view."""
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    w = weight.reshape(c, mult, -1)
    if any(s != 1 for s in geo.stride):
        return _depthwise_forward_strided(xp, weight, geo)
    shift = FlatShift.of(xp.shape[2:], geo)
    maps = np.ascontiguousarray(xp).reshape(n * c, 1, -1)
    w_rows = np.broadcast_to(w, (n, c, mult, w.shape[2])).reshape(n * c, mult, -1)  # a copy: one weight row per map
    y = np.empty((n * c, mult, shift.grid), xp.dtype)
    step = _row_steps(n * c, mult * shift.length * xp.itemsize).step
    tmp = np.empty((min(step, n * c), mult, shift.length), xp.dtype)
    for first in range(0, n * c, step):
        rows = slice(first, first + step)
        acc = y[rows, :, : shift.length]
        part = tmp[: len(acc)]
        for k, start in enumerate(shift.starts):
            run = maps[rows, :, start : start + shift.length]
            if k == 0:
                np.multiply(run, w_rows[rows, :, k, None], out=acc)
            else:
                np.multiply(run, w_rows[rows, :, k, None], out=part)
                acc += part
    out = np.empty((n, c * mult, *geo.out_hw), xp.dtype)
    np.copyto(out.reshape(n * c * mult, *geo.out_hw), shift.crop(y.reshape(n * c * mult, -1)))
    return out


def _depthwise_backward(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, dy: np.ndarray, need_dx: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The depthwise kernel's gradients; at stride 1 on flat runs (as the forward), in blocks of maps:
    per kernel offset, dW is one dot product per map and output channel, dx one multiply-add."""
    if any(s != 1 for s in geo.stride):
        return _depthwise_backward_strided(xp, weight, geo, dy, need_dx)
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    taps = math.prod(geo.kernel)
    w = weight.reshape(c, mult, taps)
    shift = FlatShift.of(xp.shape[2:], geo)
    maps = np.ascontiguousarray(xp).reshape(n * c, 1, -1)
    # dy on the forward's output grid, zero in the cropped columns (they then add nothing).
    dy_grid = np.zeros((n * c * mult, shift.grid), dy.dtype)
    np.copyto(shift.crop(dy_grid), dy.reshape(n * c * mult, *geo.out_hw))
    dy_runs = dy_grid.reshape(n * c, mult, -1)[:, :, : shift.length]
    dw_rows = np.empty((n * c, mult, taps), weight.dtype)
    dxp = np.zeros((n * c, 1, maps.shape[2]), xp.dtype) if need_dx else None
    w_rows = np.broadcast_to(w, (n, c, mult, taps)).reshape(n * c, mult, taps)
    step = _row_steps(n * c, mult * shift.length * xp.itemsize).step
    tmp = np.empty((min(step, n * c), 1, shift.length), xp.dtype)
    for first in range(0, n * c, step):
        rows = slice(first, first + step)
        grads = dy_runs[rows]
        part = tmp[: len(grads)]
        for k, start in enumerate(shift.starts):
            window = slice(start, start + shift.length)
            dw_rows[rows, :, k] = np.vecdot(grads, maps[rows, :, window])
            if dxp is not None:
                if mult == 1:
                    np.multiply(grads, w_rows[rows, :, k, None], out=part)
                else:
                    np.matmul(w_rows[rows, None, :, k], grads, out=part)  # the sum over the multiplier's maps
                dxp[rows, :, window] += part
    dw = dw_rows.reshape(n, c * mult, taps).sum(axis=0)
    return dw.reshape(weight.shape), None if dxp is None else dxp.reshape(xp.shape)


def _depthwise_forward_strided(xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """The depthwise forward on the strided window view, one multiply-add per kernel offset over the whole batch."""
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    spread = (None,) * len(geo.kernel)  # a weight broadcast over the output positions
    w = weight.reshape(c, mult, *geo.kernel)
    view = window_view(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    y = np.zeros((n, c, mult, *geo.out_hw), dtype=xp.dtype)
    tmp = np.empty_like(y)
    for offset in np.ndindex(*geo.kernel):
        np.multiply(view[_index(_ALL, _ALL, None, *offset)], w[_index(None, _ALL, _ALL, *offset, *spread)], out=tmp)
        y += tmp
    return y.reshape(n, c * mult, *geo.out_hw)


def _depthwise_backward_strided(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, dy: np.ndarray, need_dx: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    spread = (None,) * len(geo.kernel)
    w = weight.reshape(c, mult, *geo.kernel)
    view = window_view(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    dy5 = dy.reshape(n, c, mult, *geo.out_hw)
    dw = np.empty_like(w)
    dxp = np.zeros(xp.shape, dtype=xp.dtype) if need_dx else None
    dy_sum = dy5.sum(axis=2) if mult > 1 else dy5[:, :, 0]
    positions = "xyz"[: len(geo.kernel)]  # einsum letters for the output's spatial axes
    for offset in np.ndindex(*geo.kernel):
        dw[_index(_ALL, _ALL, *offset)] = np.einsum(f"nck{positions},nc{positions}->ck", dy5, view[_index(_ALL, _ALL, *offset)])
        if dxp is not None:
            reads = (_ALL, _ALL, *offset_slices(offset, geo.stride, geo.dilation, geo.out_hw))
            if mult == 1:
                dxp[reads] += dy_sum * w[_index(None, _ALL, 0, *offset, *spread)]
            else:
                dxp[reads] += np.einsum(f"nck{positions},ck->nc{positions}", dy5, w[_index(_ALL, _ALL, *offset)])
    return dw.reshape(weight.shape), dxp


# ---------------------------------------------------------------- pooling


def pool_extra(size: Sizes, out_hw: Sizes, kernel: Sizes, stride: Sizes, pad: Sizes) -> Sizes:
    """Cells at the end of each axis beyond the symmetric padding that ceil-mode windows reach."""
    return tuple(max(0, (o - 1) * s + k - (n + 2 * p)) for n, o, k, s, p in zip(size, out_hw, kernel, stride, pad, strict=True))


def maxpool_forward(x: np.ndarray, kernel: Sizes, stride: Sizes, pad: Sizes, out_hw: Sizes, ctx: NpContext) -> np.ndarray:
    """nn.MaxPool1d/2d/3d: -inf padding; backward routes to the first maximum in scan order, as PyTorch does."""
    size = x.shape[2:]
    extra = pool_extra(size, out_hw, kernel, stride, pad)
    xp = pad_spatial(x, pad, extra, -np.inf)
    view = window_view(xp, kernel, stride, (1,) * len(kernel), out_hw)
    # Separable: the maximum along the last axis's window, then the one before, ...; fewer
    # passes than one per kernel offset (ResNet's 3x3/2 stem pool: 4 instead of 8).
    y = xp
    for axis in reversed(range(len(kernel))):
        ahead = (_ALL,) * (2 + axis)
        steps = [
            y[_index(*ahead, slice(j, j + stride[axis] * (out_hw[axis] - 1) + 1, stride[axis]))] for j in range(kernel[axis])
        ]
        reduced = steps[0].copy()
        for step in steps[1:]:
            np.maximum(reduced, step, out=reduced)
        y = reduced
    arg = None
    if ctx.record:
        # Offsets in reverse scan order, each overwriting where it attains the maximum: what
        # remains is the first maximum, the one PyTorch routes the gradient to.
        offsets = list(np.ndindex(*kernel))
        arg = np.zeros(y.shape, dtype=np.uint8 if len(offsets) < 256 else np.int32)
        hit = np.empty(y.shape, dtype=bool)
        for index in reversed(range(len(offsets))):
            np.equal(view[_index(_ALL, _ALL, *offsets[index])], y, out=hit)
            np.copyto(arg, index, where=hit)
    ctx.save(arg=arg, padded_shape=xp.shape)
    return y


def maxpool_backward(ctx: NpContext, kernel: Sizes, stride: Sizes, pad: Sizes, in_hw: Sizes, dy: np.ndarray) -> np.ndarray:
    arg: np.ndarray = ctx.saved["arg"]
    dxp = np.zeros(ctx.saved["padded_shape"], dtype=dy.dtype)
    out_hw = dy.shape[2:]
    ones = (1,) * len(kernel)
    for index, offset in enumerate(np.ndindex(*kernel)):
        dxp[_index(_ALL, _ALL, *offset_slices(offset, stride, ones, out_hw))] += np.where(arg == index, dy, 0)
    return unpad_spatial(dxp, pad, in_hw)


def avgpool_divisor(size: Sizes, out_hw: Sizes, kernel: Sizes, stride: Sizes, pad: Sizes, dtype: Any) -> np.ndarray:
    """PyTorch's count_include_pad divisor per output cell: windows clipped to the padded input (ceil mode)."""
    divisor = np.ones((), dtype=np.int64)
    for a in range(len(kernel)):
        start = np.arange(out_hw[a]) * stride[a] - pad[a]
        end = np.minimum(start + kernel[a], size[a] + pad[a])
        divisor = np.multiply.outer(divisor, end - start)
    return divisor.astype(dtype)


def avgpool_forward(x: np.ndarray, kernel: Sizes, stride: Sizes, pad: Sizes, out_hw: Sizes, ctx: NpContext) -> np.ndarray:
    size = x.shape[2:]
    extra = pool_extra(size, out_hw, kernel, stride, pad)
    xp = pad_spatial(x, pad, extra, 0.0)
    view = window_view(xp, kernel, stride, (1,) * len(kernel), out_hw)
    offsets = np.ndindex(*kernel)
    y = view[_index(_ALL, _ALL, *next(offsets))].copy()
    for offset in offsets:
        y += view[_index(_ALL, _ALL, *offset)]
    divisor = avgpool_divisor(size, out_hw, kernel, stride, pad, x.dtype)
    y /= divisor
    ctx.save(divisor=divisor, padded_shape=xp.shape)
    return y


def avgpool_backward(ctx: NpContext, kernel: Sizes, stride: Sizes, pad: Sizes, in_hw: Sizes, dy: np.ndarray) -> np.ndarray:
    share = dy / ctx.saved["divisor"]
    dxp = np.zeros(ctx.saved["padded_shape"], dtype=dy.dtype)
    out_hw = dy.shape[2:]
    ones = (1,) * len(kernel)
    for offset in np.ndindex(*kernel):
        dxp[_index(_ALL, _ALL, *offset_slices(offset, stride, ones, out_hw))] += share
    return unpad_spatial(dxp, pad, in_hw)


def adaptive_matrix(size: int, out: int, dtype: Any) -> np.ndarray:
    """(out, size) averaging matrix of nn.AdaptiveAvgPool: bin i spans [floor(i*size/out), ceil((i+1)*size/out))."""
    i = np.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    pos = np.arange(size)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_bins(size: int, out: int) -> np.ndarray:
    """(out, longest bin) input indices of nn.AdaptiveMaxPool's bins (as adaptive_matrix's); a shorter
    bin repeats its last index, which leaves its maximum (and the first position of it) unchanged."""
    i = np.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    longest = int((end - start).max())
    return np.minimum(start[:, None] + np.arange(longest)[None, :], end[:, None] - 1)


def separable_apply(x: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """Apply one (out, in) matrix per spatial axis of (N, C, *spatial): one BLAS product per axis.

    Each product contracts axis 2 and appends the result axis last, so after every spatial
    axis the axes are back in order.
    """
    y = x
    for matrix in matrices:
        y = np.tensordot(y, matrix, axes=([2], [1]))
    return np.ascontiguousarray(y)


# ---------------------------------------------------------------- element-wise helpers


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (NumPy has none): Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(x.dtype, copy=False)


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow warnings for very negative x (exp overflows to inf, giving 0)."""
    with np.errstate(over="ignore"):
        e = np.exp(np.negative(x, out=out), out=out)
        e += 1.0
        return np.reciprocal(e, out=e)


def reduce_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back down to an operand's shape (batch axis included)."""
    if grad.shape == shape:
        return grad
    axes = tuple(a for a, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 and g != 1)
    return grad.sum(axis=axes, keepdims=True)
