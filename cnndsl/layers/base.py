"""The layer registry: one class per layer kind holds everything about it.

A kind's class declares its argument signature and implements its shape rule and its
parameter, buffer and MAC counts; the backends add their lowering beside them, so that
adding a layer kind is one edit (plus its test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..shapes import Pair, Shape, Window

ArgType = Literal["int", "pair", "pad", "bool", "float"]
"""How an argument's value is read: int, a whole number; pair, an int or `(h, w)`;
pad, a pair or `same`; bool, `true`/`false`; float, any number."""


class Required:
    """Marks an argument with no default."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = Required()


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

    def describe(self) -> str:
        if self.default is REQUIRED:
            return self.name
        if isinstance(self.default, SameAs):
            return f"{self.name}={self.default.name}"
        return f"{self.name}={format_value(self.default)}"


class LayerError(Exception):
    """A problem with one layer; `arg` names the argument to point at, if any."""

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg


Args = dict[str, Any]

Family = Literal["conv", "pool", "linear", "norm", "activation", "regularization", "reshape", "merge", "identity"]


class LayerKind:
    """Base of every layer kind. Subclasses set the class attributes and override the rules."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    signature: ClassVar[tuple[ArgSpec, ...]] = ()
    family: ClassVar[Family]
    input_rank: ClassVar[Literal["image", "flat", "any"]] = "any"
    is_merge: ClassVar[bool] = False
    is_view: ClassVar[bool] = False
    """True when the output aliases the input (no new activation memory)."""

    def infer(self, args: Args, shape: Shape) -> Shape:
        """The output shape for an input shape; raise LayerError when it does not apply."""
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

    def global_window(self, args: Args, shape: Shape) -> bool:
        """True when every output sees the whole input map (global pooling, flatten)."""
        return False

    def receptive(self, args: Args, shape: Shape, field: Pair, jump: Pair) -> tuple[Pair, Pair]:
        """Receptive field and effective stride (in input pixels) after this layer."""
        window = self.window(args)
        if window is not None:
            return (
                (field[0] + (window.span(0) - 1) * jump[0], field[1] + (window.span(1) - 1) * jump[1]),
                (jump[0] * window.stride[0], jump[1] * window.stride[1]),
            )
        if shape.is_image and self.global_window(args, shape):
            height, width = shape.spatial
            return (field[0] + (height - 1) * jump[0], field[1] + (width - 1) * jump[1]), (jump[0] * height, jump[1] * width)
        return field, jump

    def resolve(self, args: Args, shape: Shape | None) -> Args:
        """Turn bound arguments into the canonical form the rules and backends read."""
        return args

    def describe(self, args: Args) -> str:
        """Kind and key arguments for summaries and graphs: `Conv 64 3x3 /2 pad 1`."""
        return self.name

    @classmethod
    def signature_text(cls) -> str:
        return f"{cls.name}({', '.join(a.describe() for a in cls.signature)})"


class MergeKind(LayerKind):
    """Add, Concat and Mul: combine the outputs of parallel branches."""

    family = "merge"
    is_merge = True

    def merge(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def infer(self, args: Args, shape: Shape) -> Shape:
        return self.merge([shape])


REGISTRY: dict[str, LayerKind] = {}
"""Every spelling (lower-case canonical name and aliases) to its kind."""

KINDS: dict[str, LayerKind] = {}
"""Canonical name to kind, in registration order."""


def register(cls: type[LayerKind]) -> type[LayerKind]:
    kind = cls()
    KINDS[cls.name] = kind
    for spelling in (cls.name, *cls.aliases):
        REGISTRY[spelling.lower()] = kind
    return cls


def lookup(name: str) -> LayerKind | None:
    return REGISTRY.get(name.lower())


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return f"({', '.join(format_value(v) for v in value)})"
    return str(value)


def pair_text(value: Pair, sep: str = "x") -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}{sep}{value[1]}"


def as_pair(value: int | Pair) -> Pair:
    return value if isinstance(value, tuple) else (value, value)


def require_image(kind: str, shape: Shape) -> None:
    if not shape.is_image:
        raise LayerError(
            f"{kind} needs an image input (CxHxW); got {shape.describe()}",
            "move it before `flatten`, or give the network an image `input` line",
        )


def require_flat(kind: str, shape: Shape) -> None:
    if not shape.is_flat:
        raise LayerError(
            f"{kind} needs a flat input; got {shape.describe()}",
            "insert `flatten` (or GlobalAvgPool, flatten) before it",
        )
