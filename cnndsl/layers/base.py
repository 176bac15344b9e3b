"""The layer registry: one class per layer kind holds everything about it.

A kind's class declares its argument signature and implements its shape rule and its
parameter, buffer and MAC counts; the backends add their lowering beside them, so that
adding a layer kind is one edit (plus its test).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import CnnDslError, error
from ..shapes import Pair, Shape, Window

if TYPE_CHECKING:  # the NumPy backend's types; importing them here would load numpy for `check`
    import numpy as np

    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom

ArgType = Literal["int", "pair", "pad", "bool", "float", "choice", "reference"]
"""How an argument's value is read: int, a whole number; pair, an int or `(h, w)`;
pad, a pair or `same`; bool, `true`/`false`; float, any number; choice, one of the bare
words in `ArgSpec.choices` (`pad_mode=reflect`, `approximate=tanh`); reference, `@name`,
an earlier tensor (the kind's `resolve` receives it as a TensorRef, its shape known)."""


@dataclass(frozen=True)
class TensorRef:
    """An argument that names a tensor (`like=@skip`), as `resolve` receives it.

    The checker resolves the reference in the layer's scope (the labels of its body) and
    records it on the Layer (`Layer.arg_refs`) as a data edge; the kind reads only the
    shape, which is known statically, and keeps `text` in its resolved arguments."""

    text: str
    """`@skip` as written."""
    shape: Shape


class Required:
    """Marks an argument with no default."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = Required()


class Inferred:
    """Marks a PyTorch spelling's input size (`in_channels`, `num_features`, `in_features`):
    optional, since cnndsl infers it, and checked against the input when given."""

    def __repr__(self) -> str:
        return "inferred"


INFERRED = Inferred()

ArgRole = Literal["arg", "input", "ignored", "fixed"]
"""What a spelling's argument does: `arg` sets the kind's argument `target`; `input` is the
input size PyTorch asks for (checked against the inferred one); `ignored` is accepted and has
no effect on the network (`inplace`); `fixed` accepts only its default (PyTorch options that
cnndsl does not model, such as MaxPool2d's `dilation`)."""


@dataclass(frozen=True)
class SameAs:
    """A default taken from another argument (MaxPool's stride defaults to its kernel)."""

    name: str


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type: ArgType
    default: Any = REQUIRED
    minimum: float | None = None
    keywords: tuple[str, ...] = ()
    """Other keyword names for it (PyTorch's `padding` for `pad`), where no other reading exists."""
    target: str | None = None
    """The kind's argument this one sets, when a spelling names it differently (Conv2d's
    `kernel_size` sets Conv's `kernel`); None: the argument of the same name."""
    role: ArgRole = "arg"
    choices: tuple[str, ...] = ()
    """The words a `choice` argument takes, in lower case."""

    @property
    def canonical(self) -> str:
        """The name of the kind's argument (in `Layer.args`) that this one sets."""
        return self.target or self.name

    def describe(self) -> str:
        if self.default is REQUIRED or self.default is INFERRED:
            return self.name
        if isinstance(self.default, SameAs):
            return f"{self.name}={self.default.name}"
        return f"{self.name}={format_value(self.default)}"


class LayerError(Exception):
    """A problem with one layer; `arg` names the argument to point at, if any.

    `recovered` is the output the layer would have once the problem is fixed, where that is
    known (FC on an image still gives `out` features): checking goes on with it, so that
    independent errors further on are reported too. `branch` is, for a merge, the first
    branch whose shape disagrees with branch 0's.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        arg: str | None = None,
        recovered: Shape | None = None,
        branch: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg
        self.recovered = recovered
        self.branch = branch


Args = dict[str, Any]


@dataclass(frozen=True)
class TorchCall:
    """How PyTorch builds one layer: `nn.Conv2d(3, 64, kernel_size=7, ...)` or a cnndsl helper class.

    One description serves both the in-memory module and the generated source (through
    cnndsl.torch_plan), so the two cannot drift apart. `name` is `nn.<Class>` or the name of
    a helper in cnndsl.torch_modules; values are plain numbers, booleans or tuples of them.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


Family = Literal["conv", "pool", "linear", "norm", "activation", "regularization", "reshape", "merge", "identity"]

InputRank = Literal["image", "flat", "any"]
"""An image (C x H x W), a flat vector (N), or either."""


class LayerKind:
    """Base of every layer kind. Subclasses set the class attributes and override the rules."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    signature: ClassVar[tuple[ArgSpec, ...]] = ()
    spelling_signatures: ClassVar[dict[str, tuple[ArgSpec, ...]]] = {}
    """Aliases with a signature of their own: PyTorch's spellings (`Conv2d`, `Linear`,
    `BatchNorm2d`, `MaxPool2d`, ...) take PyTorch's arguments, in PyTorch's order, each
    mapped onto this kind's arguments by `ArgSpec.target` and `role`. Other aliases take
    `signature`."""
    family: ClassVar[Family]
    """What the layer is, for drawings (a fill colour per family); no rule reads it."""
    input_rank: ClassVar[InputRank] = "any"
    """The input the kind accepts. The checker enforces it before calling `infer` (one
    positioned error, see `check_input_rank`), so the shape rules may assume it."""
    is_view: ClassVar[bool] = False
    """True when the output aliases the input (no new activation memory)."""
    outputs_probabilities: ClassVar[bool] = False
    """True for Softmax and Sigmoid: a network ending in one gives probabilities, not the logits cross-entropy expects."""
    fresh_output: ClassVar[bool] = False
    """True when the output is a new tensor that autograd does not keep for backward (Conv,
    DWConv, BatchNorm, FC): a following activation may run in place on it, and a merge may
    accumulate into it (cnndsl.torch_plan's in-place rules)."""

    def infer(self, args: Args, shape: Shape) -> Shape:
        """The output shape for an input shape of the declared `input_rank`; raise LayerError when it does not apply."""
        raise NotImplementedError

    def param_count(self, args: Args, shape: Shape) -> int:
        return 0

    def buffer_count(self, args: Args, shape: Shape) -> int:
        return 0

    def macs(self, args: Args, shape: Shape, out: Shape) -> int:
        return 0

    def window(self, args: Args) -> Window | None:
        """The sliding window of windowed layers (for shape, fit and receptive-field rules)."""
        return None

    def receptive(self, args: Args, shape: Shape, field: Pair, effective_stride: Pair) -> tuple[Pair, Pair]:
        """Receptive field and effective stride (in input pixels) after this layer.

        Layers that collapse the map (global pooling, flatten) leave both as they were: what a
        user means by a network's receptive field is that of its last spatial layer (435x435,
        stride 32 for ResNet-18, at any input size), not the whole image.
        """
        window = self.window(args)
        if window is not None:
            return (
                (field[0] + (window.span(0) - 1) * effective_stride[0], field[1] + (window.span(1) - 1) * effective_stride[1]),
                (effective_stride[0] * window.stride[0], effective_stride[1] * window.stride[1]),
            )
        return field, effective_stride

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        """Turn bound arguments into the canonical form the rules and backends read."""
        return args

    def describe(self, args: Args) -> str:
        """Kind and key arguments for summaries and graphs: `Conv 64 3x3 /2 pad 1`."""
        return self.name

    @classmethod
    def signature_of(cls, spelling: str | None = None) -> tuple[ArgSpec, ...]:
        """The arguments a spelling takes (the kind's own signature unless the alias has one)."""
        if spelling is None:
            return cls.signature
        return cls.spelling_signatures.get(canonical_spelling(spelling), cls.signature)

    @classmethod
    @functools.cache
    def signature_text(cls, spelling: str | None = None) -> str:
        """`Conv(out, kernel, stride=1, ...)`, or a spelling's own: `Conv2d(in_channels, out_channels, ...)`."""
        specs = cls.signature_of(spelling)
        name = cls.name if spelling is None or specs is cls.signature else canonical_spelling(spelling)
        return f"{name}({', '.join(a.describe() for a in specs)})"

    @classmethod
    def spellings(cls) -> dict[str, str]:
        """Every spelling (the name and the aliases) and its signature's text, for listings."""
        return {spelling: cls.signature_text(spelling) for spelling in (cls.name, *cls.aliases)}

    # ---- NumPy backend (cnndsl.numpy_backend). Forward and backward sit side by side, as in
    # micrograd. `params` maps the layer's tensor names (PyTorch's: weight, bias,
    # running_mean, ...) to arrays; `shape` is the layer's input shape without the batch.

    np_supported: ClassVar[bool] = False
    """True when the kind implements its NumPy kernels (`np_forward` and `np_backward`; a merge's
    `np_merge_forward` and `np_merge_backward`; an activation's `np_apply` and `np_derivative`).
    The NumPy backend refuses a network with a layer that does not declare it, naming the
    layer; tests/test_layers.py checks that every declaration is true."""

    def np_refusal(self, args: Args) -> str | None:
        """Why the NumPy backend cannot run this layer with these arguments (Upsample's bicubic mode), or None."""
        return None

    np_buffers: ClassVar[tuple[str, ...]] = ()
    """Names among `np_init`'s tensors that are buffers (not trained, no gradient)."""

    def np_workspace_bytes(self, args: Args, shape: Shape, out: Shape, batch: int, itemsize: int) -> int:
        """Bytes of temporaries the kernels allocate for a batch beside its input and output
        (padded copies, im2col columns), counted by the memory check before running."""
        return 0

    def np_init(self, args: Args, shape: Shape, rng: TorchRandom, dtype: Any) -> Tensors:
        """Every tensor of the layer, parameters then buffers in state_dict order, drawn from `rng` as PyTorch draws them."""
        return {}

    def np_forward(self, args: Args, params: Tensors, x: np.ndarray, ctx: NpContext, train: bool) -> np.ndarray:
        """The output for a batch `x` (N, *shape).

        Save what backward needs with `ctx.save(...)` (a no-op unless a backward pass will
        follow); overwrite `x` only when `ctx.inplace`; in train mode, update buffers in
        place (BatchNorm's running statistics). Draw randomness from `ctx.rng` only.
        """
        raise unsupported(self.name, "numpy")

    def np_backward(self, args: Args, params: Tensors, ctx: NpContext, dy: np.ndarray) -> Backward:
        """(dx, gradients by parameter name) from the output gradient `dy` and `ctx.saved`.

        `dx` may be None when `ctx.need_dx` is false. Never modify `dy` in place: the same
        array can flow to several branches.
        """
        raise unsupported(self.name, "numpy")

    # ---- PyTorch targets (cnndsl.torch_plan lowers every layer through torch_call; the
    # in-memory module and the generated source are both built from that plan).

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        """The PyTorch constructor for this layer; `inplace` asks for an in-place activation where one exists."""
        raise unsupported(self.name, "torch")


class MergeKind(LayerKind):
    """Add, Concat and Mul: combine the outputs of parallel branches."""

    family = "merge"

    def merge(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def np_merge_forward(self, args: Args, xs: list[np.ndarray], ctx: NpContext) -> np.ndarray:
        """Combine the branch outputs; `ctx.inplace` means the first one may be overwritten."""
        raise unsupported(self.name, "numpy")

    def np_merge_backward(self, args: Args, ctx: NpContext, dy: np.ndarray) -> list[np.ndarray]:
        """The gradient of each branch output, in branch order (views of `dy` are fine)."""
        raise unsupported(self.name, "numpy")

    torch_inplace: ClassVar[bool] = False
    """True where the container can accumulate into the first branch's output (Add, as torchvision's `out += identity`)."""

    def torch_call(self, args: Args, in_shape: Shape, inplace: bool = False) -> TorchCall:
        # The container class of the same name in cnndsl.torch_modules (and in generated
        # source); it takes the branch modules as positional arguments before these.
        return TorchCall(self.name, (), (("inplace", True),) if inplace and self.torch_inplace else ())

    def infer(self, args: Args, shape: Shape) -> Shape:
        return self.merge([shape])


REGISTRY: dict[str, LayerKind] = {}
"""Every spelling (lower-case canonical name and aliases) to its kind."""

SPELLINGS: dict[str, str] = {}
"""Every spelling in lower case to its registered case (`conv2d` -> `Conv2d`)."""

KINDS: dict[str, LayerKind] = {}
"""Canonical name to kind, in registration order."""


def register(cls: type[LayerKind]) -> type[LayerKind]:
    kind = cls()
    KINDS[cls.name] = kind
    for spelling in (cls.name, *cls.aliases):
        REGISTRY[spelling.lower()] = kind
        SPELLINGS[spelling.lower()] = spelling
    unknown = set(cls.spelling_signatures) - set(cls.aliases)
    assert not unknown, f"{cls.name}: signatures for spellings it does not have: {unknown}"
    return cls


def lookup(name: str) -> LayerKind | None:
    return REGISTRY.get(name.lower())


def canonical_spelling(name: str) -> str:
    """A spelling as registered (layer names are case-insensitive: `conv2d` is `Conv2d`)."""
    return SPELLINGS.get(name.lower(), name)


def format_value(value: Any) -> str:
    if value is None:  # an optional argument with no default value (Upsample's scale or size)
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return f"({', '.join(format_value(v) for v in value)})"
    return str(value)


def pair_text(value: Pair, sep: str = "x") -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}{sep}{value[1]}"


def as_pair(value: int | Pair) -> Pair:
    return value if isinstance(value, tuple) else (value, value)


def check_input_rank(kind: LayerKind, args: Args, shape: Shape) -> None:
    """Raise the LayerError for an input that is not of the kind's declared `input_rank`.

    The checker calls this once, before `infer`. A kind that needs a flat input still has an
    output once `flatten` is inserted as the hint says (FC on an image gives `out` features),
    and checking goes on with it.
    """
    if kind.input_rank == "image" and not shape.is_image:
        raise LayerError(
            f"{kind.name} needs an image input (CxHxW); got {shape.describe()}",
            "move it before `flatten`, or give the network an image `input` line",
        )
    if kind.input_rank == "flat" and not shape.is_flat:
        try:
            recovered: Shape | None = kind.infer(args, Shape((shape.numel,)))
        except LayerError:
            recovered = None
        raise LayerError(
            f"{kind.name} needs a flat input; got {shape.describe()}",
            "insert `flatten` (or GlobalAvgPool, flatten) before it",
            recovered=recovered,
        )


def unsupported(kind: str, backend: str) -> CnnDslError:
    """The error for a layer kind that a backend does not implement."""
    message = f"`{kind}` is not supported by the {backend} backend"
    return error(message, "choose another backend or layer kind")
