"""Hypothesis strategies for random *valid* .cnn programs, as text.

`networks()` draws a whole program: a header (sometimes a network parameter, defaults and
blocks), then a body built element by element while tracking the shape, so that every
program checks. It covers chains, residual Add (plain and strided), Concat, Mul gates
(squeeze-excitation), a ShuffleNet-style Chunk split, block calls, repetition, labels
(some of them Python keywords or nn.Module attribute names), odd sizes and strides,
dilation, groups, ceil mode, pad=same, and flat (`input N`) networks; references to
earlier labelled tensors (`Add[@stem | ...]`, `Concat[@x | ...]`, `@input, ...`) and
`output` lines naming several of them.

Shapes are tracked with cnndsl's own window arithmetic only to steer generation; the
tests that use these programs compare the checker against PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from cnndsl.shapes import Window

ACTIVATIONS = ["ReLU", "ReLU6", "Sigmoid", "Tanh", "GELU", "SiLU", "Hardswish", "Hardsigmoid", "LeakyReLU(0.2)", "Softmax"]
LABELS = [
    "stem",
    "body",
    "head",
    "conv",
    "forward",
    "training",
    "class",
    "def",
    "eval",
    "to",
    "_x",
    "__init__",
    "layer_1",
    "self",
    "x",
    "nn",
    "fc",
    "cuda",
    "state_dict",
    "features",
]

# Blocks every generated program may call (defined in the header when used).
BLOCKS = {
    "Res": "block Res(c) = [ Add[ Conv(c, 3, pad=1), BN, ReLU, Conv(c, 3, pad=1), BN | ], ReLU ]",
    "Down": "block Down(c, s=2) = [ Add[ Conv(c, 3, stride=s, pad=1), BN | Conv(c, 1, stride=s), BN ], ReLU ]",
    "SE": "block SE(c, r) = Mul[ Identity | GlobalAvgPool, Conv(r, 1), ReLU, Conv(c, 1), Sigmoid ]",
}

Shape = tuple[int, ...]


@dataclass
class Program:
    """What is drawn so far: the blocks used and the network parameter, if any."""

    blocks: set[str] = field(default_factory=set)
    labels_used: int = 0
    labels: set[str] = field(default_factory=set)
    """Every label drawn so far: one namespace for the whole body, so labels never repeat."""
    tensors: list[tuple[str, Shape]] = field(default_factory=list)
    """Labelled elements already complete, with their shapes: what a reference may read."""
    top_level: list[str] = field(default_factory=list)
    """Labels of the body's own elements (for `output` lines)."""
    input_shape: Shape = (0, 0, 0)
    graphs: bool = True
    """Whether to draw references, `@input` restarts and `output` lines (some layers then feed no output)."""


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1, ceil: bool = False) -> int:
    window = Window((kernel, kernel), (stride, stride), (pad, pad), (dilation, dilation), ceil)
    if dilation * (kernel - 1) + 1 > size + 2 * pad:
        return 0
    return window.output_size(size, 0)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def conv(draw: st.DrawFn, shape: Shape) -> tuple[str, Shape]:
    """A Conv that fits the image: any kernel, stride, padding (or same), dilation and groups."""
    c, h, w = shape
    groups = draw(st.sampled_from(_divisors(c)[:4]))
    out = groups * draw(st.integers(1, max(1, 8 // groups)))
    dilation = draw(st.sampled_from([1, 1, 1, 2]))
    kernel = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    span = dilation * (kernel - 1) + 1
    args = [str(out), str(kernel)]
    if stride != 1:
        args.append(f"stride={stride}")
    if span % 2 == 1 and draw(st.booleans()):
        pad_text, pad = "same", (span - 1) // 2
    else:
        pad = draw(st.integers(0, kernel // 2 + 1))
        pad_text = str(pad)
    if pad:
        args.append(f"pad={pad_text}")
    if dilation != 1:
        args.append(f"dilation={dilation}")
    if groups != 1:
        args.append(f"groups={groups}")
    if draw(st.booleans()):
        args.append(f"bias={draw(st.sampled_from(['true', 'false']))}")
    oh, ow = _window_out(h, kernel, stride, pad, dilation), _window_out(w, kernel, stride, pad, dilation)
    if oh < 1 or ow < 1:
        return f"Conv({out}, 1)", (out, h, w)  # the drawn window does not fit: a 1x1 always does
    return f"Conv({', '.join(args)})", (out, oh, ow)


@st.composite
def pool(draw: st.DrawFn, shape: Shape) -> tuple[str, Shape]:
    c, h, w = shape
    name = draw(st.sampled_from(["MaxPool", "AvgPool", "Pool"]))
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, kernel // 2))
    ceil = draw(st.booleans())
    oh, ow = _window_out(h, kernel, stride, pad, 1, ceil), _window_out(w, kernel, stride, pad, 1, ceil)
    if oh < 1 or ow < 1:
        return "Identity", shape
    args = [str(kernel), f"stride={stride}"]
    if pad:
        args.append(f"pad={pad}")
    if ceil:
        args.append("ceil=true")
    return f"{name}({', '.join(args)})", (c, oh, ow)


@st.composite
def dwconv(draw: st.DrawFn, shape: Shape) -> tuple[str, Shape]:
    c, h, w = shape
    kernel = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.integers(1, 2))
    multiplier = draw(st.integers(1, 2))
    pad = kernel // 2
    oh, ow = _window_out(h, kernel, stride, pad), _window_out(w, kernel, stride, pad)
    text = (
        f"DWConv({kernel}, stride={stride}, pad={pad}, multiplier={multiplier}, bias={draw(st.sampled_from(['true', 'false']))})"
    )
    return text, (c * multiplier, oh, ow)


@st.composite
def preserving(draw: st.DrawFn, shape: Shape) -> str:
    """A short chain that keeps the image shape (for residual branches and repetition)."""
    c = shape[0]
    items = draw(
        st.lists(
            st.sampled_from(
                [
                    f"Conv({c}, 3, pad=same)",
                    "BN",
                    "ReLU",
                    "DWConv(3, pad=1)",
                    "SiLU",
                    f"Conv({c}, (1, 3), pad=(0, 1))",
                    "Dropout(0.1)",
                    "Identity",
                ]
            ),
            min_size=1,
            max_size=3,
        )
    )
    return ", ".join(items)


@st.composite
def element(draw: st.DrawFn, shape: Shape, program: Program, depth: int) -> tuple[str, Shape]:
    """One body element for an image input, and the shape after it."""
    c, h, w = shape
    choices = ["conv", "conv", "act", "bn", "pool", "dwconv", "add", "concat", "gate", "misc"]
    if depth < 2:
        choices += ["group", "repeat", "block"]
    if c % 2 == 0:
        choices.append("split")
    same = [label for label, seen in program.tensors if seen == shape]
    spatial = [(label, seen) for label, seen in program.tensors if seen[1:] == shape[1:]]
    if (same or spatial) and program.graphs:
        choices += ["reference", "reference"]
    if program.input_shape and program.graphs:
        choices.append("restart")
    kind = draw(st.sampled_from(choices))
    if kind == "reference":
        if same and draw(st.booleans()):
            other = draw(st.sampled_from(["Identity", draw(preserving(shape))]))
            return f"Add[ @{draw(st.sampled_from(same))} | {other} ]", shape
        label, seen = draw(st.sampled_from(spatial))
        return f"Concat[ @{label}, {draw(preserving(seen))} | Identity ]", (seen[0] + c, h, w)
    if kind == "restart":  # continue from the network's input: what came before is read only by references
        text, out = draw(conv(program.input_shape))
        return f"@input, {text}", out
    if kind == "conv":
        return draw(conv(shape))
    if kind == "act":
        return draw(st.sampled_from(ACTIVATIONS)), shape
    if kind == "bn":
        # Per-sample norms only where they keep the network's gradient well-conditioned: a
        # group of one channel (InstanceNorm) is undone exactly by the head's global average,
        # and two values normalise to +-1 whatever they were, which leaves a zero gradient
        # that NumPy and torch round differently (no meaningful comparison).
        norms = ["BN", "BatchNorm(eps=0.001, momentum=0.2)", "Scale(0.5)", "LRN(3, alpha=0.01)"]
        norms += ["LayerNorm"] if c >= 3 else []
        norms += [f"GroupNorm({g})" for g in _divisors(c) if c // g >= 2 and c // g * h * w >= 3][-2:]
        return draw(st.sampled_from(norms)), shape
    if kind == "pool":
        return draw(pool(shape))
    if kind == "dwconv":
        text, out = draw(dwconv(shape))
        return (text, out) if out[1] >= 1 and out[2] >= 1 else ("Identity", shape)
    if kind == "misc":
        groups = [g for g in _divisors(c) if g > 1]
        options = ["Identity", "Dropout(0.3)", "Dropout2d(0.2)", "StochasticDepth(0.2)"]
        options += [f"ChannelShuffle({g})" for g in groups[:2]]
        if h >= 2 and w >= 2:
            options.append("AdaptiveAvgPool((2, 1))")
        return _misc_shape(draw(st.sampled_from(options)), shape)
    if kind == "add":
        if h >= 2 and w >= 2 and draw(st.booleans()):
            out = draw(st.integers(1, 8))
            oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            return f"Add[ Conv({out}, 3, stride=2, pad=1), BN | Conv({out}, 1, stride=2) ]", (out, oh, ow)
        other = draw(st.sampled_from(["", "Identity", draw(preserving(shape))]))
        return f"Add[ {draw(preserving(shape))} | {other} ]", shape
    if kind == "concat":
        widths = draw(st.lists(st.integers(1, 4), min_size=2, max_size=3))
        branches = [f"Conv({n}, {k}, pad=same)" for n, k in zip(widths, [1, 3, 5], strict=False)]
        if draw(st.booleans()):
            branches.append("MaxPool(3, stride=1, pad=1)")
            widths.append(c)
        return f"Concat[ {' | '.join(branches)} ]", (sum(widths), h, w)
    if kind == "gate":
        reduced = draw(st.integers(1, 4))
        if draw(st.booleans()):
            program.blocks.add("SE")
            return f"SE({c}, {reduced})", shape
        return f"Mul[ | GlobalAvgPool, Conv({reduced}, 1), ReLU, Conv({c}, 1), Sigmoid ]", shape
    if kind == "split":
        half = c // 2
        return f"Concat[ Chunk(2, 0) | Chunk(2, 1), Conv({half}, 1), BN, ReLU ], ChannelShuffle(2)", shape
    if kind == "group":
        text, out = draw(chain(shape, program, depth + 1, 1, 3))
        return f"[{text}]", out
    if kind == "repeat":
        count = draw(st.integers(1, 3))
        return f"[{draw(preserving(shape))}] x {count}", shape
    # a block call
    name = draw(st.sampled_from(["Res", "Down"] if h >= 2 and w >= 2 else ["Res"]))
    program.blocks.add(name)
    if name == "Res":
        count = draw(st.integers(1, 2))
        return (f"Res({c})" + (f" x {count}" if count > 1 else "")), shape
    out = draw(st.integers(1, 8))
    return f"Down({out})", (out, (h - 1) // 2 + 1, (w - 1) // 2 + 1)


def _misc_shape(text: str, shape: Shape) -> tuple[str, Shape]:
    if text.startswith("AdaptiveAvgPool"):
        return text, (shape[0], 2, 1)
    return text, shape


@st.composite
def chain(draw: st.DrawFn, shape: Shape, program: Program, depth: int, low: int, high: int) -> tuple[str, Shape]:
    """`low`..`high` elements, some labelled (labels unique within the chain)."""
    parts: list[str] = []
    labels = draw(
        st.lists(st.sampled_from([label for label in LABELS if label not in program.labels]), unique=True, max_size=high)
    )
    program.labels.update(labels)
    for index in range(draw(st.integers(low, high))):
        text, shape = draw(element(shape, program, depth))
        if index < len(labels) and draw(st.booleans()):
            # A label names one element; wrap comma-separated text in a group first.
            text = f"{labels[index]}: [{text}]" if "," in text and not text.startswith("[") else f"{labels[index]}: {text}"
            program.tensors.append((labels[index], shape))
            if depth == 0:
                program.top_level.append(labels[index])
        parts.append(text)
    return ", ".join(parts), shape


@st.composite
def head(draw: st.DrawFn, shape: Shape) -> str:
    """The classifier: optionally pool and flatten, then FC layers (some with BN and dropout)."""
    parts = []
    if len(shape) == 3:
        parts.append(draw(st.sampled_from(["GlobalAvgPool, flatten", "flatten"])))
    for _ in range(draw(st.integers(0, 2))):
        parts.append(f"FC({draw(st.integers(1, 12))})")
        parts.append(draw(st.sampled_from(["ReLU", "BN", "Dropout(0.2)", "Tanh"])))
    parts.append("FC(classes)")
    return ", ".join(parts)


@st.composite
def networks(draw: st.DrawFn, with_head: bool | None = None, graphs: bool = True) -> str:
    """A whole valid .cnn program (text); `graphs` False: a series-parallel network, without references or outputs."""
    program = Program(graphs=graphs)
    classes = draw(st.integers(1, 10))
    if draw(st.integers(0, 5)) == 0:  # flat networks: FC, BN1d, activations, dropout
        features = draw(st.integers(1, 20))
        body = []
        for _ in range(draw(st.integers(0, 3))):
            body.append(f"FC({draw(st.integers(1, 16))}, bias={draw(st.sampled_from(['true', 'false']))})")
            body.append(draw(st.sampled_from(["ReLU", "BN", "Dropout(0.5)", "GELU", "Softmax"])))
        body.append("FC(classes)")
        return f"network Flat(classes={classes})\ninput {features}\n" + ", ".join(body) + "\n"
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 19)), draw(st.integers(1, 19)))
    program.input_shape = shape
    body, out = draw(chain(shape, program, 0, 1, 5))
    lines = [f"network Net(classes={classes})", f"input {shape[0]}x{shape[1]}x{shape[2]}"]
    if program.top_level and graphs and draw(st.integers(0, 3)) == 0:
        lines.append(
            "output " + ", ".join(draw(st.lists(st.sampled_from(program.top_level), min_size=1, max_size=3, unique=True)))
        )
    if draw(st.booleans()):
        lines.append("defaults Conv(bias=false), Pool(2)")
    lines += [BLOCKS[name] for name in sorted(program.blocks)]
    lines.append(body)
    if with_head if with_head is not None else draw(st.booleans()):
        lines.append(draw(head(out)))
    return "\n".join(lines) + "\n"
