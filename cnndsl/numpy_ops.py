"""Vectorised NumPy kernels shared by the layer kinds' NumPy forward and backward methods.

Layouts are NCHW throughout. Convolutions are im2col (a strided view copied once into a
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

Pair = tuple[int, int]
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


def pad2d(x: np.ndarray, pad: Pair, extra: Pair = (0, 0), value: float = 0.0) -> np.ndarray:
    """Pad H and W by `pad` on both sides plus `extra` more on the bottom/right (ceil-mode pools)."""
    ph, pw = pad
    eh, ew = extra
    if ph == pw == eh == ew == 0:
        return x
    n, c, h, w = x.shape
    out = np.empty((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=x.dtype)
    # Fill only the borders: the interior is overwritten by the copy anyway.
    out[:, :, :ph] = value
    out[:, :, ph + h :] = value
    out[:, :, ph : ph + h, :pw] = value
    out[:, :, ph : ph + h, pw + w :] = value
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def window_view(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """Read-only strided view (N, C, kh, kw, OH, OW) of a padded input: view[..., i, j, oh, ow] = xp[..., oh*s + i*d, ow*s + j*d]."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    return as_strided(
        xp,
        shape=(n, c, kernel[0], kernel[1], out_hw[0], out_hw[1]),
        strides=(sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]),
        writeable=False,
    )


def offset_slices(i: int, j: int, stride: Pair, dilation: Pair, out_hw: Pair) -> tuple[slice, slice]:
    """The padded-input positions that kernel offset (i, j) reads, as slices (for col2im adds)."""
    top, left = i * dilation[0], j * dilation[1]
    return (
        slice(top, top + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(left, left + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


def im2col(
    xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair, scratch: Scratch | None = None
) -> np.ndarray:
    """Columns (C*kh*kw, N*OH*OW) of a padded input: one copy of the window view, channel-major.

    Channel-major columns make a convolution a single 2-D product W (O, C*kh*kw) @ cols over
    the whole batch. NumPy's stacked matmul (one product per sample) measured three times
    slower on ResNet-18, batch 8, than this one large product plus the transpose of its output.
    """
    n, c = xp.shape[:2]
    shape = (c, kernel[0], kernel[1], n, out_hw[0], out_hw[1])
    cols = scratch.get("cols", shape, xp.dtype) if scratch is not None else np.empty(shape, dtype=xp.dtype)
    np.copyto(cols, window_view(xp, kernel, stride, dilation, out_hw).transpose(1, 2, 3, 0, 4, 5))
    return cols.reshape(c * kernel[0] * kernel[1], n * out_hw[0] * out_hw[1])


def col2im(
    dcols: np.ndarray, padded_shape: tuple[int, ...], kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> np.ndarray:
    """Scatter-add channel-major column gradients (C*kh*kw, N*OH*OW) back onto the padded input's shape."""
    n, c = padded_shape[:2]
    d6 = dcols.reshape(c, kernel[0], kernel[1], n, out_hw[0], out_hw[1])
    if kernel == (1, 1) and stride == (1, 1):
        return np.ascontiguousarray(d6[:, 0, 0].transpose(1, 0, 2, 3))
    # Accumulate channel-major (contiguous reads of the columns), transpose once at the end.
    dxp = np.zeros((c, n, *padded_shape[2:]), dtype=dcols.dtype)
    for i in range(kernel[0]):  # kernel offsets only: each add covers every pixel and channel
        for j in range(kernel[1]):
            rows, columns = offset_slices(i, j, stride, dilation, out_hw)
            dxp[:, :, rows, columns] += d6[:, i, j]
    return np.ascontiguousarray(dxp.transpose(1, 0, 2, 3))


def to_channel_major(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C, N*H*W), a copy."""
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(a.shape[1], -1)


def unpad2d(xp: np.ndarray, pad: Pair, size: Pair) -> np.ndarray:
    """The interior of a padded array (a view)."""
    ph, pw = pad
    if xp.shape[2:] == size:
        return xp
    return xp[:, :, ph : ph + size[0], pw : pw + size[1]]


def padding_sources(size: int, low: int, high: int, mode: str) -> np.ndarray:
    """For each padded position along one axis, the input index it copies (-1: a zero), as nn.Conv2d's padding modes do."""
    positions = np.arange(-low, size + high)
    if mode == "reflect":  # mirror without repeating the edge: -1 -> 1, size -> size - 2
        return np.where(positions >= size, 2 * (size - 1) - positions, np.abs(positions))
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    if mode == "circular":
        return positions % size
    return np.where((positions >= 0) & (positions < size), positions, -1)


def pad_borders(x: np.ndarray, pads: tuple[int, int, int, int], mode: str) -> np.ndarray:
    """x (N, C, H, W) padded by (top, bottom, left, right) in `mode` (zeros, reflect, replicate, circular).

    The interior is one copy; the borders are filled from it a few rows and columns at a
    time (they are at most a kernel wide), so the cost is that of the copy.
    """
    top, bottom, left, right = pads
    if mode == "zeros":
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, h, w = x.shape
    out = np.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    out[:, :, top : top + h, left : left + w] = x
    rows = padding_sources(h, top, bottom, mode)
    border_rows = np.r_[0:top, top + h : top + h + bottom]
    if len(border_rows):
        out[:, :, border_rows, left : left + w] = x[:, :, rows[border_rows]]
    columns = padding_sources(w, left, right, mode)
    border_columns = np.r_[0:left, left + w : left + w + right]
    if len(border_columns):  # from the padded rows too: the corners
        out[:, :, :, border_columns] = out[:, :, :, left + columns[border_columns]]
    return out


def fold_borders(dxp: np.ndarray, pads: tuple[int, int, int, int], mode: str, size: Pair) -> np.ndarray:
    """pad_borders' backward: the padded gradient summed onto the input positions each border copied."""
    top, bottom, left, right = pads
    h, w = size
    rows = padding_sources(h, top, bottom, mode)
    columns = padding_sources(w, left, right, mode)
    folded = dxp[:, :, :, left : left + w].copy()
    if mode != "zeros":
        for position in (*range(left), *range(left + w, left + w + right)):  # a loop over the border: a few columns
            folded[:, :, :, columns[position]] += dxp[:, :, :, position]
    dx = folded[:, :, top : top + h].copy()
    if mode != "zeros":
        for position in (*range(top), *range(top + h, top + h + bottom)):
            dx[:, :, rows[position]] += folded[:, :, position]
    return dx


# ---------------------------------------------------------------- convolution


@dataclass(frozen=True)
class ConvGeometry:
    """Everything a convolution's kernels need, resolved once from the layer's arguments."""

    in_hw: Pair
    out_hw: Pair
    kernel: Pair
    stride: Pair
    pad: Pair
    dilation: Pair
    groups: int


def conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geo: ConvGeometry, ctx: NpContext) -> np.ndarray:
    """nn.Conv2d's forward: depthwise as a multiply-add per kernel offset, otherwise im2col + one matmul per group."""
    n, c = x.shape[:2]
    out_channels = weight.shape[0]
    xp = pad2d(x, geo.pad)
    if geo.groups == c and weight.shape[1] == 1:
        y = _depthwise_forward(xp, weight, geo)
    else:
        g = geo.groups
        k, og = c * geo.kernel[0] * geo.kernel[1] // g, out_channels // g
        w2 = weight.reshape(out_channels, k)
        y = np.empty((n, out_channels, *geo.out_hw), x.dtype)
        # Columns are kh*kw times the input: above COLUMN_BYTES, run the batch in slices so
        # that they never dominate the peak memory (each slice still one large product).
        per_sample = c * geo.kernel[0] * geo.kernel[1] * geo.out_hw[0] * geo.out_hw[1] * x.itemsize
        step = max(1, min(n, COLUMN_BYTES // max(1, per_sample)))
        size = geo.out_hw[0] * geo.out_hw[1]
        y3 = y.reshape(n, out_channels, size)
        for start in range(0, n, step):
            part = xp[start : start + step]
            cols = im2col(part, geo.kernel, geo.stride, geo.dilation, geo.out_hw, ctx.scratch)
            if size >= DIRECT_PRODUCT_PIXELS:
                # Large maps: one product per sample (and group) straight into the NCHW output;
                # BLAS reads the sample's columns in place (row stride N*OH*OW), no transpose.
                for sample in range(len(part)):
                    pixels = slice(sample * size, (sample + 1) * size)
                    for group in range(g):
                        rows = slice(group * og, (group + 1) * og)
                        np.matmul(w2[rows], cols[group * k : (group + 1) * k, pixels], out=y3[start + sample, rows])
                continue
            # Small maps: one product over the whole batch (per-sample products would be thin), then transpose.
            y2 = np.empty((out_channels, cols.shape[1]), x.dtype)
            for group in range(g):
                rows = slice(group * og, (group + 1) * og)
                np.matmul(w2[rows], cols[group * k : (group + 1) * k], out=y2[rows])
            np.copyto(y[start : start + step], y2.reshape(out_channels, len(part), *geo.out_hw).transpose(1, 0, 2, 3))
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    # The padded input is what backward needs; re-deriving the columns there is one copy,
    # far cheaper in memory than keeping kh*kw times the input alive until backward.
    ctx.save(xp=xp, geo=geo)
    return y


def conv_backward(weight: np.ndarray, has_bias: bool, ctx: NpContext, dy: np.ndarray) -> Backward:
    """Gradients of nn.Conv2d: dW and the column gradient as one matmul per group each, dx by col2im."""
    xp: np.ndarray = ctx.saved["xp"]
    geo: ConvGeometry = ctx.saved["geo"]
    c = xp.shape[1]
    out_channels = weight.shape[0]
    grads: dict[str, np.ndarray] = {}
    dxp = None
    if geo.groups == c and weight.shape[1] == 1:
        dw, dxp = _depthwise_backward(xp, weight, geo, dy, ctx.need_dx)
        grads["weight"] = dw
    else:
        g = geo.groups
        cols = im2col(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw, ctx.scratch)
        k, og = cols.shape[0] // g, out_channels // g
        dy2 = to_channel_major(dy)
        w2 = weight.reshape(out_channels, k)
        dw = np.empty((out_channels, k), weight.dtype)
        dcols = np.empty(cols.shape, dy.dtype) if ctx.need_dx else None
        for group in range(g):
            rows, columns = slice(group * og, (group + 1) * og), slice(group * k, (group + 1) * k)
            # As (cols @ dy^T)^T: OpenBLAS takes 20 times longer for dy @ cols^T, whose
            # reduction runs over the long N*H*W axis with a transposed right operand (measured).
            dw[rows] = np.matmul(cols[columns], dy2[rows].T).T
            if dcols is not None:
                np.matmul(w2[rows].T, dy2[rows], out=dcols[columns])
        grads["weight"] = dw.reshape(weight.shape)
        if dcols is not None:
            dxp = col2im(dcols, xp.shape, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    if has_bias:
        grads["bias"] = dy.sum(axis=(0, 2, 3))
    dx = None if dxp is None else unpad2d(dxp, geo.pad, geo.in_hw)
    return dx, grads


def _depthwise_forward(xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """groups == in_channels: accumulate weight[c, k, i, j] * window(i, j) over the kernel offsets."""
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    w = weight.reshape(c, mult, *geo.kernel)
    view = window_view(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    y = np.zeros((n, c, mult, *geo.out_hw), dtype=xp.dtype)
    tmp = np.empty_like(y)
    for i in range(geo.kernel[0]):
        for j in range(geo.kernel[1]):
            np.multiply(view[:, :, None, i, j], w[None, :, :, i, j, None, None], out=tmp)
            y += tmp
    return y.reshape(n, c * mult, *geo.out_hw)


def _depthwise_backward(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, dy: np.ndarray, need_dx: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    n, c = xp.shape[:2]
    mult = weight.shape[0] // c
    w = weight.reshape(c, mult, *geo.kernel)
    view = window_view(xp, geo.kernel, geo.stride, geo.dilation, geo.out_hw)
    dy5 = dy.reshape(n, c, mult, *geo.out_hw)
    dw = np.empty_like(w)
    dxp = np.zeros(xp.shape, dtype=xp.dtype) if need_dx else None
    dy_sum = dy5.sum(axis=2) if mult > 1 else dy5[:, :, 0]
    for i in range(geo.kernel[0]):
        for j in range(geo.kernel[1]):
            dw[:, :, i, j] = np.einsum("nckhw,nchw->ck", dy5, view[:, :, i, j])
            if dxp is not None:
                rows, columns = offset_slices(i, j, geo.stride, geo.dilation, geo.out_hw)
                if mult == 1:
                    dxp[:, :, rows, columns] += dy_sum * w[None, :, 0, i, j, None, None]
                else:
                    dxp[:, :, rows, columns] += np.einsum("nckhw,ck->nchw", dy5, w[:, :, i, j])
    return dw.reshape(weight.shape), dxp


# ---------------------------------------------------------------- pooling


def pool_extra(size: Pair, out_hw: Pair, kernel: Pair, stride: Pair, pad: Pair) -> Pair:
    """Bottom/right cells beyond the symmetric padding that ceil-mode windows reach."""
    return tuple(max(0, (out_hw[a] - 1) * stride[a] + kernel[a] - (size[a] + 2 * pad[a])) for a in (0, 1))  # type: ignore[return-value]


def maxpool_forward(x: np.ndarray, kernel: Pair, stride: Pair, pad: Pair, out_hw: Pair, ctx: NpContext) -> np.ndarray:
    """nn.MaxPool2d: -inf padding; backward routes to the first maximum in scan order, as PyTorch does."""
    size = (x.shape[2], x.shape[3])
    extra = pool_extra(size, out_hw, kernel, stride, pad)
    xp = pad2d(x, pad, extra, -np.inf)
    view = window_view(xp, kernel, stride, (1, 1), out_hw)
    # Separable: the maximum over each window's columns, then over its rows; fewer passes
    # than one per kernel offset (ResNet's 3x3/2 stem pool: 4 instead of 8).
    columns = [xp[:, :, :, j : j + stride[1] * (out_hw[1] - 1) + 1 : stride[1]] for j in range(kernel[1])]
    wide = columns[0].copy()
    for column in columns[1:]:
        np.maximum(wide, column, out=wide)
    rows = [wide[:, :, i : i + stride[0] * (out_hw[0] - 1) + 1 : stride[0]] for i in range(kernel[0])]
    y = rows[0].copy()
    for row in rows[1:]:
        np.maximum(y, row, out=y)
    del wide, columns, rows
    arg = None
    if ctx.record:
        # Offsets in reverse scan order, each overwriting where it attains the maximum: what
        # remains is the first maximum, the one PyTorch routes the gradient to.
        arg = np.zeros(y.shape, dtype=np.uint8 if kernel[0] * kernel[1] < 256 else np.int32)
        hit = np.empty(y.shape, dtype=bool)
        for offset in reversed(range(kernel[0] * kernel[1])):
            np.equal(view[:, :, offset // kernel[1], offset % kernel[1]], y, out=hit)
            np.copyto(arg, offset, where=hit)
    ctx.save(arg=arg, padded_shape=xp.shape)
    return y


def maxpool_backward(ctx: NpContext, kernel: Pair, stride: Pair, pad: Pair, in_hw: Pair, dy: np.ndarray) -> np.ndarray:
    arg: np.ndarray = ctx.saved["arg"]
    dxp = np.zeros(ctx.saved["padded_shape"], dtype=dy.dtype)
    out_hw = (dy.shape[2], dy.shape[3])
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, columns = offset_slices(i, j, stride, (1, 1), out_hw)
            dxp[:, :, rows, columns] += np.where(arg == i * kernel[1] + j, dy, 0)
    return unpad2d(dxp, pad, in_hw)


def avgpool_divisor(size: Pair, out_hw: Pair, kernel: Pair, stride: Pair, pad: Pair, dtype: Any) -> np.ndarray:
    """PyTorch's count_include_pad divisor per output cell: windows clipped to the padded input (ceil mode)."""
    counts = []
    for a in (0, 1):
        start = np.arange(out_hw[a]) * stride[a] - pad[a]
        end = np.minimum(start + kernel[a], size[a] + pad[a])
        counts.append(end - start)
    return np.outer(counts[0], counts[1]).astype(dtype)


def avgpool_forward(x: np.ndarray, kernel: Pair, stride: Pair, pad: Pair, out_hw: Pair, ctx: NpContext) -> np.ndarray:
    size = (x.shape[2], x.shape[3])
    extra = pool_extra(size, out_hw, kernel, stride, pad)
    xp = pad2d(x, pad, extra, 0.0)
    view = window_view(xp, kernel, stride, (1, 1), out_hw)
    y = view[:, :, 0, 0].copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                y += view[:, :, i, j]
    divisor = avgpool_divisor(size, out_hw, kernel, stride, pad, x.dtype)
    y /= divisor
    ctx.save(divisor=divisor, padded_shape=xp.shape)
    return y


def avgpool_backward(ctx: NpContext, kernel: Pair, stride: Pair, pad: Pair, in_hw: Pair, dy: np.ndarray) -> np.ndarray:
    share = dy / ctx.saved["divisor"]
    dxp = np.zeros(ctx.saved["padded_shape"], dtype=dy.dtype)
    out_hw = (dy.shape[2], dy.shape[3])
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, columns = offset_slices(i, j, stride, (1, 1), out_hw)
            dxp[:, :, rows, columns] += share
    return unpad2d(dxp, pad, in_hw)


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
