"""The layer registry: one class per layer kind holds everything about it.

A kind's class declares its argument signature and implements its shape rule and its
parameter, buffer and MAC counts; the backends add their lowering beside them, so that
adding a layer kind is one edit (plus its test).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..errors import CnnDslError, error
from ..receptive import Field
from ..shapes import SPATIAL_AXES, Shape, Sizes, Window

if TYPE_CHECKING:  # the NumPy backend's types; importing them here would load numpy for `check`
    import numpy as np

    from ..numpy_ops import Backward, NpContext, Tensors, TorchRandom

ArgType = Literal["int", "pair", "pad", "bool", "float", "floats", "choice", "reference"]
"""How an argument's value is read: int, a whole number; pair, an int or a tuple with one
entry per spatial axis (`(h, w)`, `(d, h, w)`); pad, a pair or `same`; bool, `true`/`false`;
float, any number; choice, one of the bare words in `ArgSpec.choices` (`pad_mode=reflect`,
`approximate=tanh`); reference, `@name`, an earlier tensor (the kind's `resolve` receives it
as a TensorRef, its shape known)."""


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

InputRank = Literal["image", "flat", "spatial", "any"]
"""An image (C x H x W), a flat vector (N), channels with spatial axes (the ranks the kind's
`spatial_ranks` lists: C x L, C x H x W, C x D x H x W), or any of them."""


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
    spatial_ranks: ClassVar[tuple[int, ...]] = (1, 2, 3)
    """With input_rank "spatial": the numbers of spatial axes the kind works over (1: C x L,
    2: C x H x W, 3: C x D x H x W). A kind that supports several takes per-axis tuples of
    that length (see `spatial_tuple`) and lowers to torch's `*1d`/`*2d`/`*3d` module."""
    spelling_ranks: ClassVar[dict[str, tuple[int, ...]]] = {}
    """PyTorch's spellings tied to a rank (`Conv1d`: (1,), `BatchNorm1d`: (0, 1), flat or C x L):
    the checker refuses one on another input and names the spelling that fits."""
    is_view: ClassVar[bool] = False
    """True when the output aliases the input (no new activation memory)."""
    outputs_probabilities: ClassVar[bool] = False
    """True for Softmax and Sigmoid: a network ending in one gives probabilities, not the logits cross-entropy expects."""
    fresh_output: ClassVar[bool] = False
    """True when the output is a new tensor that autograd does not keep for backward (Conv,
    DWConv, BatchNorm, FC): a following activation may run in place on it, and a merge may
    accumulate into it (cnndsl.torch_plan's in-place rules)."""
    attribute_stem: ClassVar[str]
    """The module name an unlabelled layer of this kind gets in a sequence (`conv`, `bn`, `fc`:
    `conv1`, `conv2` when several siblings share it; see cnndsl.names). Declared beside the
    signature where torchvision's name differs from the kind's name in lower case (BatchNorm:
    `bn`, GlobalAvgPool: `avgpool`); otherwise that lower-case name, set by __init_subclass__."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A kind that names itself without declaring a stem gets its name's: a subclass that
        # renames its base (Dropout2d of _MaskedDropout) must not inherit the base's stem.
        if "name" in cls.__dict__ and "attribute_stem" not in cls.__dict__:
            cls.attribute_stem = cls.name.lower()

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

    def receptive(self, args: Args, shape: Shape, field: Field) -> Field:
        """The input span of each output pixel, per spatial axis, after this layer (cnndsl.receptive).

        Layers that collapse the map (global pooling, flatten) leave it as it was: what a
        user means by a network's receptive field is that of its last spatial layer (435x435,
        stride 32 for ResNet-18, at any input size), not the whole image.
        """
        window = self.window(args)
        if window is not None and len(window.kernel) == len(field):
            return tuple(axis.window(window.span(a), window.stride[a], window.pad[a]) for a, axis in enumerate(field))
        return field

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


def pair_text(value: Sizes, sep: str = "x") -> str:
    """One number when every axis has the same (`3`), else all of them (`3x1`, `3x7x7`)."""
    return str(value[0]) if len(set(value)) == 1 else sep.join(str(v) for v in value)


def as_pair(value: int | Sizes) -> Sizes:
    return value if isinstance(value, tuple) else (value, value)


Number = TypeVar("Number", int, float)
"""One spatial axis's entry: a size (int) or a scale factor (float)."""


def spatial_tuple(kind: str, name: str, value: Number | tuple[Number, ...], rank: int, noun: str = "int") -> tuple[Number, ...]:
    """An argument as one entry per spatial axis: an int (a `noun`) means the same on every axis;
    a tuple must have `rank` entries."""
    if not isinstance(value, tuple):
        return (value,) * rank
    if len(value) != rank:
        axes = SPATIAL_AXES[rank]
        raise LayerError(
            f"{kind}: `{name}` {format_value(value)} has {len(value)} entries but the input has {rank} spatial "
            f"ax{'is' if rank == 1 else 'es'} ({axes})",
            f"give one {noun} (the same on every axis) or {rank} entries, one per axis {axes}"
            if rank > 1
            else f"give one {noun}: a 1-D input has one spatial axis",
            arg=name,
        )
    return value


def rank_spelling(spellings: dict[str, tuple[int, ...]], rank: int) -> str | None:
    """The spelling among `spellings` that fits an input with `rank` spatial axes."""
    return next((spelling for spelling, ranks in spellings.items() if rank in ranks), None)


def check_spelling_rank(kind: LayerKind, shape: Shape, spelling: str) -> None:
    """Raise the LayerError for a spelling tied to a rank on an input of another (`Conv1d` on
    an image, `Conv2d` on a signal), naming the spelling that fits. The checker calls it
    before `resolve`, whose per-axis tuples are read by the input's rank."""
    spelt = canonical_spelling(spelling)
    ranks = kind.spelling_ranks.get(spelt)
    if ranks is None or shape.spatial_rank in ranks:
        return
    fitting = rank_spelling(kind.spelling_ranks, shape.spatial_rank)
    named = kind.name in kind.spelling_ranks  # every spelling names a rank (Dropout1d/2d/3d): the message names the one written
    if fitting is not None or kind.input_rank == "any" or shape.spatial_rank in kind.spatial_ranks or named:
        if named:
            hint = (
                f"on this input write `{fitting}`, as in PyTorch"
                if fitting is not None
                else "move it before `flatten`, or give the network an `input` line with spatial axes"
            )
        else:
            instead = f"`{fitting}` or `{kind.name}`" if fitting is not None else f"`{kind.name}`"
            hint = f"on this input write {instead} (cnndsl picks the rank from the input)"
        raise LayerError(f"{spelt} needs {_rank_words(ranks)}; got {shape.describe()}", hint)
    # Otherwise no spelling of the kind fits (Conv1d on a flat vector): check_input_rank says so.


def check_input_rank(kind: LayerKind, args: Args, shape: Shape) -> None:
    """Raise the LayerError for an input that is not of the kind's declared `input_rank`
    (with "spatial": of a rank among its `spatial_ranks`).

    The checker calls this once, before `infer`. A kind that needs a flat input still has an
    output once `flatten` is inserted as the hint says (FC on an image gives `out` features),
    and checking goes on with it.
    """
    if kind.input_rank == "spatial" and shape.spatial_rank not in kind.spatial_ranks:
        if shape.is_flat:
            raise LayerError(
                f"{kind.name} needs channels with spatial axes (CxL, CxHxW or CxDxHxW); got {shape.describe()}",
                "move it before `flatten`, or give the network an `input` line with spatial axes "
                "(`input 1x8000` for a 1-D signal, `input 3x224x224` for an image)",
            )
        raise LayerError(
            f"{kind.name} works over {_rank_words(tuple(r for r in kind.spatial_ranks if r))}; got {shape.describe()}",
            "1-D layers need `input CxL`, 3-D layers `input CxDxHxW`" if kind.spatial_ranks != (2,) else None,
        )
    if kind.input_rank == "image" and not shape.is_image:
        raise LayerError(
            f"{kind.name} needs an image input (CxHxW); got {shape.describe()}",
            f"{kind.name} has no 1-D or 3-D form; use it on CxHxW maps"
            if shape.has_space
            else "move it before `flatten`, or give the network an image `input` line",
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


def _rank_words(ranks: tuple[int, ...]) -> str:
    """`a 1-D input (CxL)`, `a flat or 1-D input (N or CxL)`, `an image (CxHxW)`."""
    words = {0: ("flat", "N"), 1: ("1-D", "CxL"), 2: ("2-D", "CxHxW"), 3: ("3-D", "CxDxHxW")}
    if ranks == (2,):
        return "an image (CxHxW)"
    names = " or ".join(words[r][0] for r in ranks)
    forms = " or ".join(words[r][1] for r in ranks)
    return f"a {names} input ({forms})"


def unsupported(kind: str, backend: str) -> CnnDslError:
    """The error for a layer kind that a backend does not implement."""
    message = f"`{kind}` is not supported by the {backend} backend"
    return error(message, "choose another backend or layer kind")
