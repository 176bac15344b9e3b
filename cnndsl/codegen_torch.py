"""Generate one standalone, readable PyTorch source file from a checked network.

The file imports only torch. It defines the network as `class <Name>(nn.Module)` whose
constructor takes the network's parameters as keyword arguments (and one class per block
it uses), builds named submodules
that mirror the IR exactly (so its state_dict keys equal `cnndsl.Network.to_torch()`'s),
and has a plain `forward` with one line per top-level element and shape comments (a network
with references or several outputs names its tensors: one line per element, or per layer
and merge inside an element that reads a reference, `return head, e2` at the end). The
module tree is `cnndsl.torch_plan.build_plan`'s, the one the in-memory module is built
from; the helpers the plan names (`ModulePlan.helpers`) are copied from torch_modules.py.

Every user-provided name (network, parameters, labels, the file name in comments) passes
through `identifier` or `comment_text` (module names are safe from the checker, see cnndsl.names) before it reaches the output: nothing
from the source file can inject code.

How a network parameter reaches the layers is in the IR: the checker records each argument's
and each input's expression (cnndsl.expr), over the network's parameters once composed
(`Network.terms`, cnndsl.terms), and `parameter_expressions` passes them through the layer's
`torch_call` as traced numbers and renders what comes out. What no
expression follows (a repetition count, a conditional) makes the generated constructor
refuse other values of those parameters, with a message that says to recompile with `--set`.

Each block definition becomes one class (`Writer`) from the terms the checker recorded inside
each block call over the block's own parameters (`Layer.terms`, `Sequence.call_terms`; this
module does not import the front end): `class Bottleneck(nn.Sequential)`
taking `in_channels` and the block's parameters, instantiated by every call whose class
comes out the same; a repetition of one same call is a loop. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import __version__
from .expr import BLOCK_PARAMETER, IN_CHANNELS, Expr, LayerExprs, Term, binary, call, expressible, opaque, params_of, render
from .ir import Layer, Node, Parallel, Reference, Sequence, walk
from .layers import MergeKind
from .layers.base import TorchCall
from .shapes import Shape
from .torch_plan import SEQUENTIAL, ModulePlan, build_plan, deep_recursion, shared_tensors

if TYPE_CHECKING:
    from .network import Network
    from .terms import NetworkTerms
    from .weights import Preprocess

LINE_LENGTH = 88
"""black's and ruff's default, so the file is format-clean under either without a config."""

INDENT = "    "


@cache
def helper_sources() -> dict[str, str]:
    """Every helper's source by name, read from torch_modules.py without importing it (that would import torch).

    The helpers are the module's public top-level classes and functions (the rule
    torch_modules.HELPERS follows), in definition order: the order the generated file copies them in.
    """
    text = (Path(__file__).resolve().parent / "torch_modules.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    return {
        node.name: ast.get_source_segment(text, node) or ""
        for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_")
    }


HELPER_IMPORTS = {"OrderedDict": "from collections import OrderedDict"}
"""Names a helper may use besides `torch` and `nn`, and the import the generated file then needs."""

# Names the generated file defines or uses itself; a network or parameter name equal to one
# of them is renamed so it cannot shadow them.
RESERVED = frozenset(
    {
        "torch",
        "nn",
        "math",
        "OrderedDict",
        "sequential",
        "self",
        "x",
        "super",
        "getattr",
        "ValueError",
        "int",
        "float",
        "bool",
        "str",
        "None",
        *helper_sources(),
    }
)


# ---- safe text -------------------------------------------------------------------------


def identifier(name: str, fallback: str) -> str:
    """A Python identifier for a user-provided name: keywords and reserved names get a trailing `_`.

    A name never starts with two underscores: in a class body `__x` is mangled to `_Net__x`
    (the constructor's keyword would not be `__x`), a parameter `__class__` breaks `super()`
    and `__debug__` cannot be assigned at all. One leading underscore stays.
    """
    text = re.sub(r"\W", "_", name, flags=re.ASCII) or fallback
    if text[0].isdigit():
        text = f"{fallback}_{text}"
    if text.startswith("__"):
        text = "_" + text.lstrip("_")
    while keyword.iskeyword(text) or text in RESERVED:
        text += "_"
    return text


def literal(value: Any) -> str:
    """A Python literal for an argument value; NaN and infinities as `float("nan")`, never a bare `nan`;
    a word (a `choice` argument's: `mode="row"`) double-quoted, as black writes it."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, str):
        return quoted(value)
    return repr(value)


def quoted(name: str) -> str:
    """A double-quoted literal (black's style) for a name that is already safe (letters, digits, `_`)."""
    if not re.fullmatch(r"\w+", name, flags=re.ASCII):
        raise ValueError(f"not a safe name: {name!r}")
    return f'"{name}"'


def comment_text(text: str) -> str:
    """Text safe inside a comment or docstring: one line, no quotes or backslashes."""
    return re.sub(r"[^A-Za-z0-9 _.,:;()+\-*/=<>@!?\[\]{}|~^%&]", "?", text)


# ---- parameters ------------------------------------------------------------------------


class _Traced:
    """A number a network parameter reaches, given to a kind's `torch_call` in place of the plain one.

    It is the number (an int or float subclass), carrying its term (cnndsl.expr). Passed through
    unchanged, the generated code writes its expression. Anything else `torch_call` does with it
    is recorded: arithmetic gives an opaque term, and a comparison or conversion is a decision
    (`decided`) whose outcome the generated code would freeze, so its parameters are fixed.
    Comparing two numbers with one term is no decision (`(k, k)` collapses to `k` for any k).
    """

    term: Term
    decided: ClassVar[set[str]] = set()

    def _decide(self) -> None:
        _Traced.decided |= params_of(self.term)

    def _combine(self, other: object) -> Term:
        return opaque(params_of(self.term) | params_of(getattr(other, "term", None)))


def _comparison(name: str) -> Callable[..., Any]:
    def compare(self: Any, other: object) -> Any:
        if isinstance(other, _Traced) and other.term == self.term and name in ("__eq__", "__le__", "__ge__"):
            return True
        if isinstance(other, _Traced) and other.term == self.term and name in ("__ne__", "__lt__", "__gt__"):
            return False
        self._decide()
        if isinstance(other, _Traced):
            other._decide()
        return getattr(self._base, name)(self, other)

    return compare


_OPERATOR_OF = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**"}
"""The dunder methods whose result `torch_call` may pass on: its term is the same operation's (cnndsl.expr)."""


def _arithmetic(name: str) -> Callable[..., Any]:
    stem = name.strip("_")
    reverse = stem.startswith("r") and stem[1:] in _OPERATOR_OF

    def compute(self: Any, *others: Any) -> Any:
        result = getattr(self._base, name)(self, *others)
        if isinstance(result, bool) or not isinstance(result, (int, float)):
            self._decide()
            return result
        other = others[0] if others else None
        other_term = other.term if isinstance(other, _Traced) else other
        operator = _OPERATOR_OF.get(stem[1:] if reverse else stem)
        if operator is not None and isinstance(other_term, (int, float, Expr)) and not isinstance(other_term, bool):
            term = binary(operator, other_term, self.term) if reverse else binary(operator, self.term, other_term)
        elif stem == "neg":
            term = call("neg", self.term)
        elif stem == "pos":
            term = self.term
        else:
            term = self._combine(other)
        return _traced(result, term)

    return compute


def _conversion(name: str) -> Callable[..., Any]:
    def convert(self: Any, *args: Any) -> Any:
        self._decide()
        return getattr(self._base, name)(self, *args)

    return convert


_COMPARISONS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")
_ARITHMETIC = (
    *("__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __floordiv__ __rfloordiv__".split()),
    *("__mod__ __rmod__ __pow__ __rpow__ __neg__ __pos__ __abs__ __round__ __trunc__ __floor__ __ceil__".split()),
)
_CONVERSIONS = ("__bool__", "__int__", "__float__", "__index__", "__str__", "__repr__", "__format__", "__divmod__")


def _traced_class(base: type) -> type:
    members: dict[str, Any] = {"_base": base, "__hash__": base.__hash__}
    members.update({name: _comparison(name) for name in _COMPARISONS})
    members.update({name: _arithmetic(name) for name in _ARITHMETIC})
    members.update({name: _conversion(name) for name in _CONVERSIONS})
    return type(f"Traced{base.__name__.title()}", (_Traced, base), members)


_TRACED = {int: _traced_class(int), float: _traced_class(float)}


def _traced(value: Any, term: Term) -> Any:
    """`value` carrying `term`; None for a value that cannot carry one (a bool, a word)."""
    cls = _TRACED.get(type(value))
    if cls is None:
        return None
    traced = cls(value)
    traced.term = term
    return traced


def _traced_value(value: Any, term: Term) -> Any:
    """An argument's value with its term: pairs element by element; None where a value cannot carry it."""
    if isinstance(value, tuple):
        terms = term if isinstance(term, tuple) else (term,) * len(value)
        items = [_traced(v, t) if params_of(t) else v for v, t in zip(value, terms, strict=True)]
        return None if any(i is None for i in items) else tuple(items)
    return _traced(value, term)


def traced_call(layer: Layer, exprs: LayerExprs, inplace: bool) -> tuple[TorchCall, set[str]]:
    """The layer's TorchCall computed from traced arguments and input (see _Traced) that carry `exprs`
    (the layer's terms), and the parameters whose effect on it no expression can write (they must stay fixed)."""
    fixed: set[str] = set()
    args = dict(layer.args)
    for name, term in exprs.args.items():
        traced = _traced_value(args[name], term)
        if traced is None:  # a boolean or a word: whatever torch_call does with it, it decides
            fixed |= params_of(term)
        else:
            args[name] = traced
    dims: list[Any] = list(layer.in_shape)
    if params_of(exprs.channels):
        dims[0] = _traced(dims[0], exprs.channels)
    if exprs.size and layer.in_shape.is_image:  # the image size is never written: reading it is a decision
        dims[1:] = [_traced(d, opaque(exprs.size)) for d in dims[1:]]
    shape = tuple.__new__(Shape, dims)  # Shape() would convert the traced dimensions to plain ints
    _Traced.decided = set()
    try:
        call = layer.kind.torch_call(args, shape, inplace)
    except Exception:  # noqa: BLE001 - any failure on traced values: the plain call stands, nothing varies
        return layer.kind.torch_call(layer.args, layer.in_shape, inplace), fixed | exprs.params
    finally:
        decided, _Traced.decided = _Traced.decided, set()
    return call, fixed | decided


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value._base.__pos__(value) if isinstance(value, _Traced) else value  # type: ignore[attr-defined]


def plain_call(call: TorchCall) -> TorchCall:
    """A traced call (`traced_call`) with plain numbers: what the generated code constructs, slot for slot.

    It may write an argument that the plain call leaves at its default (a stride a parameter reaches: see
    cnndsl.layers.conv.differs), so the code holds for every value; the module it builds is the same."""
    return TorchCall(call.name, _plain(call.args), tuple((key, _plain(value)) for key, value in call.kwargs))


def call_slots(call: TorchCall) -> list[Any]:
    """The numbers of a call in order (its positional arguments, then its keyword ones; tuples flattened)."""
    flat: list[Any] = []
    for value in (*call.args, *(v for _, v in call.kwargs)):
        flat.extend(value if isinstance(value, tuple) else (value,))
    return flat


@dataclass
class ParameterCode:
    """How the network's parameters reach the generated constructor's calls."""

    exprs: dict[tuple[str, int], str]
    """(layer path, slot) -> the expression that gives the call's number at that slot (its numbers in order, tuples flattened)."""
    fixed: list[str]
    """The parameters no expression follows: the constructor refuses other values."""
    definitions: list[tuple[str, str]]
    """Local variables the expressions read (name, expression), in order: the parts of long expressions."""
    calls: dict[str, TorchCall] = field(default_factory=dict)
    """The calls the slots number, by layer path (`plain_call`), where they differ from the plan's."""


def parameter_expressions(network: Network, names: dict[str, str]) -> ParameterCode:
    """Each layer's terms over the network's parameters (`Network.terms`, cnndsl.expr) passed through its `torch_call`
    (`traced_call`) and rendered over `names` (each network parameter's safe name in the
    generated constructor), read from the IR alone."""
    fixed = set(network.structural_parameters)
    slots: list[tuple[str, int, Term]] = []
    calls: dict[str, TorchCall] = {}
    terms = network.terms.layers
    for module in build_plan(network).walk():
        node = module.node
        layer_terms = terms.get(node) if isinstance(node, Layer) else None
        if module.kind != "layer" or layer_terms is None:
            continue
        assert isinstance(node, Layer)
        call, unexpressed = traced_call(node, layer_terms, module.inplace)
        fixed |= unexpressed
        calls[node.path] = plain_call(call)
        for slot, value in enumerate(call_slots(call)):
            if isinstance(value, _Traced):
                slots.append((node.path, slot, value.term))
                if not expressible(value.term):
                    fixed |= params_of(value.term)
    # A slot that reads a fixed parameter keeps its number: the constructor refuses other values.
    definitions: dict[Expr, tuple[str, str]] = {}
    taken = set(names.values())

    def name_of(node: Expr, text: str) -> str:
        if node not in definitions:
            name = f"c{len(definitions) + 1}"
            while name in taken:
                name += "_"
            taken.add(name)
            definitions[node] = (name, text)
        return definitions[node][0]

    exprs = {(path, slot): render(term, names, literal, name_of) for path, slot, term in slots if not params_of(term) & fixed}
    ordered = [p for p in network.parameters if p in fixed]
    return ParameterCode(exprs, ordered, list(definitions.values()), calls)


# ---- comments that hold for every value the constructor accepts ---------------------------------


MAX_COMMENT_EXPRESSION = 24
"""Longest expression a shape comment writes; a longer one is left out (the comment says less, not something false)."""


@dataclass
class Comments:
    """Shapes and block titles for comments, written over the constructor's parameters where those
    reach them (`# (2 * width)x16x16`, `# Res(width)`), so that they hold for every value it accepts.

    `names` maps each parameter the constructor lets vary to its name; `fixed` the others to their values;
    `terms` are the network's (`Network.terms`).
    """

    names: dict[str, str]
    fixed: dict[str, Any]
    terms: NetworkTerms

    def number(self, term: Term, value: Any) -> str | None:
        """A number's text: its value when no varying parameter reaches it, its expression, or None."""
        if not params_of(term) & self.names.keys():
            return literal(value)
        if not expressible(term):
            return None
        text = render(term, {**self.names, **{p: literal(v) for p, v in self.fixed.items()}}, literal)
        return text if len(text) <= MAX_COMMENT_EXPRESSION else None

    def shape(self, node: Node) -> str | None:
        """The node's output shape, or None where it depends on the parameters in a way no expression writes."""
        found = _output_terms(node, self.terms.layers.get)
        if found is None:
            return None if self.names else str(node.out_shape)
        term, size = found
        if size & self.names.keys():
            return None
        channels = self.number(term, node.out_shape[0])
        if channels is None:
            return None
        if not node.out_shape.has_space:
            return channels
        if not channels.isdigit():
            channels = f"({channels})" if " " in channels else channels
            return " x ".join([channels, *map(str, node.out_shape.spatial)])
        return str(node.out_shape)

    def title(self, node: Sequence) -> str:
        """A block call's title (`Res(64)`), with the arguments a varying parameter reaches as expressions."""
        exprs = self.terms.calls.get(node)
        if node.role != "block" or exprs is None or not any(params_of(t) & self.names.keys() for t in exprs.values()):
            return node.title
        given: list[str] = []
        for key, term in exprs.items():
            text = self.number(term, None if params_of(term) else term)
            if text is None:
                return f"{node.block}(...)"
            given.append(text if key.isdigit() else f"{key}={text}")
        return f"{node.block}({', '.join(given)})"


def _output_terms(node: Node, terms_of: Callable[[Layer], LayerExprs | None]) -> tuple[Term, frozenset[str]] | None:
    """The term of a node's output channels and the parameters its image size depends on (None: not known here),
    from each layer's terms (`terms_of`: the network's, or those recorded where the layer is written)."""
    while isinstance(node, Sequence):
        if not node.children:
            return None  # an empty branch passes its input on: what reaches that is not recorded here
        node = node.children[-1]
    layer = node.merge if isinstance(node, Parallel) else node
    assert isinstance(layer, Layer)
    exprs = terms_of(layer)
    if exprs is None:
        return layer.out_shape[0], frozenset()
    return exprs.out, exprs.out_size


def _recorded_terms(layer: Layer) -> LayerExprs | None:
    """A layer's terms as the checker recorded them, over the parameters in scope where it is written (`Layer.terms`)."""
    return layer.terms


# ---- layout ----------------------------------------------------------------------------


@dataclass
class Code:
    """A call or tuple to lay out the way black would: `head(` args `)`.

    `explode` forces one argument per line (containers: one line per layer); `atom` marks a
    tuple, which black explodes rather than keeping its body on one line.
    """

    head: str
    args: list[Code | str] = field(default_factory=list)
    explode: bool = False
    atom: bool = False
    open_comment: str = ""
    comment: str = ""


def keyword_argument(name: str, code: Code | str) -> Code | str:
    """`name=code`: a child of `sequential(conv=..., bn=...)`. One level of brackets per level of
    the tree, as `nn.Sequential(...)` has (Python's parser allows 200), where `("conv", ...)` pairs
    would take two; the checker names every child of a sequence with an identifier."""
    assert name.isidentifier() and not keyword.iskeyword(name), name
    return f"{name}={code}" if isinstance(code, str) else replace(code, head=f"{name}={code.head}")


def flat(code: Code | str) -> str | None:
    """The code on one line, or None if it must span several."""
    if isinstance(code, str):
        return code
    if code.explode:
        return None
    parts = [flat(a) for a in code.args]
    if any(p is None for p in parts):
        return None
    return f"{code.head}({', '.join(p for p in parts if p is not None)})"


def layout(code: Code | str, indent: str, prefix: str = "", suffix: str = "") -> Iterator[str]:
    """Lines for `prefix + code + suffix` at `indent`, as black formats them (88 columns)."""
    one = flat(code)
    if one is not None:
        line = f"{indent}{prefix}{one}{suffix}"
        comment = code.comment if isinstance(code, Code) else ""
        if comment and len(line) + 4 + len(comment) <= LINE_LENGTH:
            yield f"{line}  # {comment}"
            return
        if len(line) <= LINE_LENGTH or isinstance(code, str):
            yield line
            return
    assert isinstance(code, Code)
    inner = indent + INDENT
    parts = [flat(a) for a in code.args]
    if not code.explode and not code.atom and all(p is not None for p in parts):
        body = ", ".join(p for p in parts if p is not None)
        if len(inner) + len(body) <= LINE_LENGTH:
            yield f"{indent}{prefix}{code.head}("
            yield inner + body
            yield f"{indent}){suffix}"
            return
    opening = f"{indent}{prefix}{code.head}("
    if code.open_comment and len(opening) + 4 + len(code.open_comment) <= LINE_LENGTH:
        opening += f"  # {code.open_comment}"
    yield opening
    for arg in code.args:
        yield from layout(arg, inner, "", ",")
    yield f"{indent}){suffix}"


# ---- the tree --------------------------------------------------------------------------


@dataclass
class Generator:
    """Lays a plan's modules out as constructor calls; `exprs` puts network parameters into their arguments."""

    exprs: dict[tuple[str, int], str]
    comments: Comments
    calls: dict[str, TorchCall] = field(default_factory=dict)
    """The calls `exprs` number the slots of, by layer path (ParameterCode.calls); the plan's elsewhere."""

    def value(self, path: str, slot: int, value: Any) -> str:
        return self.exprs.get((path, slot), literal(value))

    def layer(self, plan: ModulePlan, texts: dict[int, str] | None = None, call: TorchCall | None = None) -> Code:
        """The layer's constructor call; `texts` and `call`, when given, the code of its numbers by slot of
        `call` (else the network's expressions)."""
        path = plan.node.path
        if call is None:
            call = plan.call if texts is not None else self.calls.get(path, plan.call)

        def value(path: str, slot: int, number: Any) -> str:
            return self.value(path, slot, number) if texts is None else texts.get(slot, literal(number))

        args: list[Code | str] = []
        slot = 0
        for key, item in [*((None, a) for a in call.args), *call.kwargs]:
            if isinstance(item, tuple):
                items = [value(path, slot + i, v) for i, v in enumerate(item)]
                text = f"({', '.join(items)})"
                slot += len(item)
            else:
                text = value(path, slot, item)
                slot += 1
            args.append(text if key is None else f"{key}={text}")
        return Code(call.name, args)


# ---- one class per block ---------------------------------------------------------------


class NotGeneral(Exception):
    """A block call whose class cannot be written: a network parameter that the constructor varies
    reaches a number that the block's own parameters do not carry."""


@dataclass
class BlockClass:
    """A generated class for a block definition: an nn.Sequential of the block's elements."""

    name: str
    markers: list[str]
    """The term names (cnndsl.expr.IN_CHANNELS, `block:c`, ...) of the constructor's arguments, in order."""
    lines: list[str]


@dataclass
class Context:
    """Where a module's constructor call is written: the network's constructor, a block class's, or
    a place that writes plain numbers (a block call inlined into a class, whose numbers the class's
    arguments do not reach)."""

    kind: str
    """"network", "class" or "literal"."""
    names: dict[str, str] = field(default_factory=dict)
    """A class's arguments: term name -> identifier."""
    fixed: set[str] = field(default_factory=set)
    """A class's term names that its numbers cannot follow: written as numbers (so the class is the call's only)."""
    needs_fixed: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    """The term names a class's code reads: its constructor's arguments."""
    inlined: bool = False
    """In the network's constructor, inside a block call written out: its block calls' terms are that block's."""


@dataclass
class Writer:
    """Lays a plan's modules out as constructor calls (see `Generator`), writing each block call whose
    calls can share one class as that class's instantiation (`Bottleneck(256, 64)`); `uses` says which."""

    gen: Generator
    network_fixed: set[str]
    network_names: dict[str, str]
    uses: dict[int, BlockClass] = field(default_factory=dict)
    """The class of each block call (by the plan's id) written as an instantiation."""
    varied: set[str] = field(default_factory=set)
    """The paths of the nodes that hold a number the network's constructor varies (Generator.exprs)."""

    def __post_init__(self) -> None:
        for path, _ in self.gen.exprs:
            parts = path.split(".")
            self.varied.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    # -- numbers --

    def number(self, term: Term, value: Any, ctx: Context) -> str:
        """A number of the code in `ctx`: its expression over the arguments where they reach it, else its value."""
        params = params_of(term)
        if not params or ctx.kind == "literal":
            return literal(value)
        if ctx.kind == "network":
            if params & self.network_fixed:
                return literal(value)
            if not expressible(term):
                raise NotGeneral
            return render(term, self.network_names, literal)
        outside = params - ctx.names.keys()
        if outside - self.network_fixed:
            raise NotGeneral  # a network parameter the block's arguments do not carry
        own = params & ctx.names.keys()
        if outside or not expressible(term) or own & ctx.fixed:
            ctx.needs_fixed |= own
            return literal(value)
        ctx.read |= own
        return render(term, ctx.names, literal)

    # -- modules --

    def layer(self, plan: ModulePlan, ctx: Context) -> Code:
        if ctx.kind == "network":
            return self.gen.layer(plan)
        texts: dict[int, str] = {}
        layer = plan.node
        assert isinstance(layer, Layer)
        if ctx.kind == "literal" and layer.path in self.varied:
            raise NotGeneral  # a network parameter reaches it, through nothing the class takes
        if ctx.kind == "literal" or layer.terms is None:  # its terms over the block's own parameters
            return self.gen.layer(plan, texts)
        call, decided = traced_call(layer, layer.terms, plan.inplace)
        if decided - ctx.names.keys() - self.network_fixed:
            raise NotGeneral
        ctx.needs_fixed |= decided & ctx.names.keys()
        plain = plain_call(call)
        for slot, (value, number) in enumerate(zip(call_slots(call), call_slots(plain), strict=True)):
            if isinstance(value, _Traced):
                texts[slot] = self.number(value.term, number, ctx)
        return self.gen.layer(plan, texts, plain)

    def node(self, plan: ModulePlan, ctx: Context) -> Code:
        call, node = plan.call, plan.node
        if plan.kind == "layer":
            return self.layer(plan, ctx)
        if plan.kind == "merge":
            if ctx.kind == "class":  # which branches exist is this call's (`| Identity if shortcut`)
                assert isinstance(node, Parallel)
                decided = params_of(node.condition_terms)
                if decided - ctx.names.keys() - self.network_fixed:
                    raise NotGeneral
                ctx.needs_fixed |= decided & ctx.names.keys()
            args: list[Code | str] = [self.node(branch, ctx) for branch in plan.children]
            args += [literal(value) for value in call.args]
            args += [f"{key}={literal(value)}" for key, value in call.kwargs]
            shape = self.gen.comments.shape(node) if ctx.kind == "network" else None
            return Code(call.name, args, explode=True, open_comment=f"-> {shape}" if shape else "")
        if plan.kind == "identity":
            return Code(call.name)
        assert isinstance(node, Sequence)
        if node.role == "block":
            instance = self.instance(plan, ctx)
            if instance is not None:
                return instance
            if ctx.kind == "class":  # inlined: its numbers are this call's, so the class's arguments must not reach them
                assert node.call_terms is not None
                reached = params_of((*node.call_terms.values(), node.in_channels_term))
                if reached - ctx.names.keys() - self.network_fixed:
                    raise NotGeneral
                ctx.needs_fixed |= reached & ctx.names.keys()
                ctx = Context("literal")
            elif ctx.kind == "network":
                ctx = Context("network", inlined=True)
        comment = ""
        if ctx.kind == "network" and node.role in ("block", "repeat"):
            shape = self.gen.comments.shape(node)
            comment = comment_text(self.gen.comments.title(node)) + (f" -> {shape}" if shape else "")
        children: list[Code | str] = [self.node(child, ctx) for child in plan.children]
        if node.role == "repeat" and call.name == SEQUENTIAL:
            loop = self.loop(node, children, ctx, comment)
            if loop is not None:
                return loop
        if call.name == SEQUENTIAL:
            return Code(call.name, children, explode=True, open_comment=comment)
        entries = [keyword_argument(child.name, code) for child, code in zip(plan.children, children, strict=True)]
        return Code(call.name, entries, explode=True, open_comment=comment)

    def loop(self, node: Sequence, children: list[Code | str], ctx: Context, comment: str) -> Code | None:
        """`nn.Sequential(*[Block(...) for _ in range(n)])` for a repetition of one same call on one line."""
        texts = {flat(child) for child in children}
        text = next(iter(texts))
        if len(texts) != 1 or text is None or (len(children) < 2 and not self.same_iterations(node, ctx)):
            if ctx.kind == "class":  # written out: which modules exist is this count's
                ctx.needs_fixed |= params_of(node.count_term) & ctx.names.keys()
            return None
        count = literal(len(children))
        if ctx.kind == "class":
            if node.reads_index:
                ctx.needs_fixed |= params_of(node.count_term) & ctx.names.keys()
            else:
                count = self.number(node.count_term, len(children), ctx)
        body = f"*[{text} for _ in range({count})]"
        if len(INDENT * 4) + len(body) > LINE_LENGTH:
            return None
        return Code(SEQUENTIAL, [body], open_comment=comment, comment=comment)

    def same_iterations(self, node: Sequence, ctx: Context) -> bool:
        """Whether a repetition of one iteration would repeat that same code for any count: a class's
        block call that neither reads its index nor changes its input's shape or channels' term."""
        if ctx.kind != "class" or node.in_shape != node.out_shape:
            return False
        first = node.children[0]
        found = _output_terms(node, _recorded_terms)
        return (
            not node.reads_index
            and isinstance(first, Sequence)
            and first.role == "block"
            and found is not None
            and found[0] == first.in_channels_term
        )

    def instance(self, plan: ModulePlan, ctx: Context) -> Code | None:
        """The block call as its class's instantiation, or None (no class, or arguments it cannot write here)."""
        cls = self.uses.get(id(plan))
        if cls is None:
            return None
        node = plan.node
        assert isinstance(node, Sequence) and node.block_args is not None and node.call_terms is not None
        args: list[Code | str] = []
        if ctx.inlined:  # its terms are the inlined block's: its numbers stand, unless the network varies them
            if node.path in self.varied:
                return None
            ctx = Context("literal")
        trial = Context(ctx.kind, ctx.names, ctx.fixed, set(), set())
        try:
            for marker in cls.markers:
                if marker == IN_CHANNELS:
                    args.append(self.number(node.in_channels_term, node.in_shape[0], trial))
                else:
                    name = marker.removeprefix(BLOCK_PARAMETER)
                    args.append(self.number(node.call_terms[name], node.block_args[name], trial))
        except NotGeneral:
            return None
        if trial.needs_fixed - ctx.fixed:  # an argument only right for this call's numbers: the class stays general only inlined
            ctx.needs_fixed |= trial.needs_fixed
        ctx.read |= trial.read
        shape = self.gen.comments.shape(node) if ctx.kind == "network" else None
        return Code(cls.name, args, comment=f"-> {shape}" if shape else "")

    # -- classes --

    def class_source(self, plan: ModulePlan, name: str, names: dict[str, str], params: list[str]) -> BlockClass | None:
        """The class a block call needs (its source names the class `name`; `params` are the block's
        parameters in order, `names` their identifiers), or None where none can be written."""
        node = plan.node
        assert isinstance(node, Sequence) and node.block_args is not None
        fixed: set[str] = set()
        while True:
            ctx = Context("class", names, set(fixed))
            try:
                body = [self.node(child, ctx) for child in plan.children]
            except NotGeneral:
                return None
            if ctx.needs_fixed <= fixed:
                break
            fixed |= ctx.needs_fixed
        order = [IN_CHANNELS, *(BLOCK_PARAMETER + p for p in params)]
        markers = [m for m in order if m in ctx.read]

        values = node.block_args

        def annotation(marker: str) -> str:
            return "int" if marker == IN_CHANNELS else _annotation(values[marker.removeprefix(BLOCK_PARAMETER)])

        signature = ", ".join(["self", *(f"{names[m]}: {annotation(m)}" for m in markers)])
        lines = [f"class {name}(nn.Sequential):", f'    """The block `{comment_text(node.block or "")}`."""', ""]
        def_line = f"    def __init__({signature}) -> None:"
        if len(def_line) > LINE_LENGTH:
            lines += ["    def __init__(", "        self,"]
            lines += [f"        {names[m]}: {annotation(m)}," for m in markers]
            lines.append("    ) -> None:")
        else:
            lines.append(def_line)
        if plan.call.name == SEQUENTIAL:
            lines.extend(layout(Code("super().__init__", list(body), explode=True), INDENT * 2))
        else:
            lines.append("        super().__init__()")
            for child, code in zip(plan.children, body, strict=True):
                if child.name.isidentifier():
                    lines.extend(layout(code, INDENT * 2, f"self.{child.name} = "))
                else:
                    lines.extend(layout(Code("self.add_module", [quoted(child.name), code]), INDENT * 2))
        return BlockClass(name, markers, lines)

    def choose_classes(self, plan: ModulePlan, taken: set[str]) -> list[BlockClass]:
        """One class per block definition whose calls can share it, deepest blocks first; the calls
        that cannot (their class would differ) stay nn.Sequential. Returns the classes in the order
        the file defines them."""
        calls: dict[str, list[ModulePlan]] = {}
        height: dict[int, int] = {}
        for module in reversed(list(plan.walk())):  # children before parents
            below = max((height[id(child)] for child in module.children), default=-1)
            block = module.node.block if isinstance(module.node, Sequence) and module.kind == "sequence" else None
            height[id(module)] = below + 1 if block is not None else below
            if block is not None:
                calls.setdefault(block, []).append(module)
        class_names: dict[str, str] = {}
        for block in calls:
            name = identifier(block, "Block")
            while name in taken:
                name += "_"
            taken.add(name)
            class_names[block] = name
        order = sorted(calls, key=lambda b: max(height[id(c)] for c in calls[b]))
        classes: list[BlockClass] = []
        for block in order:
            first = calls[block][-1]  # the first call in the file (calls were collected in reverse)
            assert isinstance(first.node, Sequence) and first.node.call_terms is not None
            params = list(first.node.call_terms)  # in the definition's order
            names = {IN_CHANNELS: "in_channels"}
            used = {"in_channels", *taken}
            for param in params:
                ident = identifier(param, "param")
                while ident in used:
                    ident += "_"
                used.add(ident)
                names[BLOCK_PARAMETER + param] = ident
            found: dict[str, tuple[BlockClass, list[ModulePlan]]] = {}
            for module in reversed(calls[block]):
                assert isinstance(module.node, Sequence)
                cls = self.class_source(module, class_names[block], names, params)
                if cls is not None:
                    key = "\n".join(cls.lines)
                    found.setdefault(key, (cls, []))[1].append(module)
            if not found:
                continue
            cls, members = max(found.values(), key=lambda entry: len(entry[1]))  # the first of the most used
            self.uses.update({id(module): cls for module in members})
            classes.append(cls)
        return classes


def _names(source: str) -> set[str]:
    """The names a helper's source reads (to know which imports it needs)."""
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def _annotation(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float"}.get(type(value), "str")


def _default(value: Any) -> str:
    if isinstance(value, (bool, int, float)):
        return literal(value)
    return json.dumps(str(getattr(value, "text", value)))  # double quotes, as black writes them


def _file_name(filename: str) -> str:
    # The base name only: the output must not depend on where the file was checked out.
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def _macs(count: int) -> str:
    return f"{count / 1e9:.2f} GMACs" if count >= 1e8 else f"{count / 1e6:.2f} MMACs"


def preprocess_lines(preprocess: Preprocess, batch_ndim: int) -> list[str]:
    """Constructor lines that hold the training normalisation as non-persistent buffers (the state_dict keeps the layers' keys)."""
    view = ", ".join(["1", "-1"] + ["1"] * (batch_ndim - 2))
    lines = [
        f"{INDENT * 2}# The input normalisation the weights were trained with (cnndsl train): forward",
        f"{INDENT * 2}# standardises x per channel, (x - mean) / std, on the images as their source stores them.",
    ]
    for name, values in (("input_mean", preprocess.mean), ("input_std", preprocess.std)):
        numbers = [repr(float(v)) for v in values]  # finite: Preprocess refuses NaN and infinities
        one_line = (
            f'{INDENT * 2}self.register_buffer("{name}", torch.tensor([{", ".join(numbers)}]).view({view}), persistent=False)'
        )
        if len(one_line) <= LINE_LENGTH:
            lines.append(one_line)
            continue
        lines.append(f"{INDENT * 2}self.register_buffer(")
        lines.append(f'{INDENT * 3}"{name}",')
        lines.append(f"{INDENT * 3}torch.tensor(")
        lines.append(f"{INDENT * 4}[")
        lines.extend(f"{INDENT * 5}{number}," for number in numbers)
        lines.append(f"{INDENT * 4}]")
        lines.append(f"{INDENT * 3}).view({view}),")
        lines.append(f"{INDENT * 3}persistent=False,")
        lines.append(f"{INDENT * 2})")
    return lines


def generate_source(network: Network, preprocess: Preprocess | None = None) -> str:
    """The network as one Python file that imports only torch (see the module docstring).

    With `preprocess` (the normalisation stored with trained weights), the class holds the
    mean and std and its `forward` standardises its input first, as `to_torch(weights=...)` does.
    """
    class_name = identifier(network.name, "Network")
    param_names: dict[str, str] = {}
    used: set[str] = set()
    for param in network.parameters:
        name = identifier(param, "param")
        while name in used:
            name += "_"
        used.add(name)
        param_names[param] = name
    with deep_recursion():
        plan = build_plan(network)
        parameter_code = parameter_expressions(network, param_names)
        fixed = {p: network.parameters[p] for p in parameter_code.fixed}
        comments = Comments({p: n for p, n in param_names.items() if p not in fixed}, fixed, network.terms)
        gen = Generator(parameter_code.exprs, comments, parameter_code.calls)
        writer = Writer(gen, set(parameter_code.fixed), {p: n for p, n in param_names.items() if p not in fixed})
        # A class must not shadow the network's class, a helper, `math`, or a name its constructors read.
        taken = {class_name, "in_channels", *RESERVED, *param_names.values(), *(n for n, _ in parameter_code.definitions)}
        classes = writer.choose_classes(plan, taken)
        # The network itself is the generated class: its children are its attributes.
        attrs = [child.name for child in plan.children]
        body = [writer.node(child, Context("network")) for child in plan.children]
        init_lines: list[str] = []
        for attr, code in zip(attrs, body, strict=True):
            if attr.isidentifier():
                init_lines.extend(layout(code, INDENT * 2, f"self.{attr} = "))
            else:  # an unlabelled element: its index is its name, as in nn.Sequential
                init_lines.extend(layout(Code("self.add_module", [quoted(attr), code]), INDENT * 2))
    used = set().union(*(child.helpers() for child in plan.children))
    helpers = [source for name, source in helper_sources().items() if name in used]  # definition order
    imports = sorted({HELPER_IMPORTS[name] for source in helpers for name in _names(source) if name in HELPER_IMPORTS})

    lines = [
        f"# {class_name}: generated by cnndsl {__version__} from {comment_text(_file_name(network.filename))}.",
        "# Edit the .cnn file and recompile rather than editing this file.",
        f"# Input {network.input_shape} -> output {network.output_shape}: {network.params:,} parameters, "
        f"{network.buffers:,} buffers, {_macs(network.macs)}.",
        *(["# These figures are for the default parameter values; the comments below hold for any."] if comments.names else []),
        "# Shapes in comments exclude the batch dimension.",
        "",
    ]
    written = "\n".join(
        [*init_lines, *(line for cls in classes for line in cls.lines), *(t for _, t in parameter_code.definitions)]
    )
    if re.search(r"\bmath\.", re.sub(r"#.*", "", written)):  # floor and ceil (cnndsl.expr.FUNCTIONS)
        imports.insert(0, "import math")  # isort's order: plain imports before `from` ones
    if imports:
        lines += [*imports, ""]
    lines += ["import torch", "from torch import nn", ""]
    for source in helpers:
        lines += ["", source, ""]
    for cls in classes:
        lines += ["", *cls.lines, ""]
    lines += ["", f"class {class_name}(nn.Module):"]
    output = comments.shape(network.root) or "?"
    lines.append(f'    """{comment_text(network.name)}: {network.input_shape} -> {output}."""')
    lines.append("")
    signature = ", ".join(f"{param_names[p]}: {_annotation(v)} = {_default(v)}" for p, v in network.parameters.items())
    def_line = f"    def __init__(self, {signature}) -> None:" if signature else "    def __init__(self) -> None:"
    if len(def_line) > LINE_LENGTH:
        lines.append("    def __init__(")
        lines.append("        self,")
        lines.extend(f"        {param_names[p]}: {_annotation(v)} = {_default(v)}," for p, v in network.parameters.items())
        lines.append("    ) -> None:")
    else:
        lines.append(def_line)
    lines.append("        super().__init__()")
    for param in parameter_code.fixed:
        name, value = param_names[param], network.parameters[param]
        lines.append(f"        if {name} != {_default(value)}:")
        lines.append("            raise ValueError(")
        lines.append(f'                "{comment_text(param)} changes the network in ways this file cannot express; "')
        lines.append(f'                "recompile with: cnndsl compile FILE --target torch --set {comment_text(param)}=VALUE"')
        lines.append("            )")
    definitions = used_definitions(parameter_code.definitions, init_lines)
    if definitions:
        lines.append("        # Numbers shared by the layers below, computed from the parameters as the .cnn file does.")
        lines += [f"        {name} = {text}" for name, text in definitions]
    lines += init_lines
    if preprocess is not None:
        lines += preprocess_lines(preprocess, len(network.input_shape) + 1)
    several = network.outputs is not None and len(network.outputs) > 1
    returns = "tuple[torch.Tensor, ...]" if several else "torch.Tensor"
    lines += ["", f"    def forward(self, x: torch.Tensor) -> {returns}:"]
    if preprocess is not None:
        lines.append("        x = (x - self.input_mean) / self.input_std")
    if network.is_graph:
        lines += graph_forward(network, plan, comments)
        return "\n".join(lines) + "\n"
    for attr, child in zip(attrs, plan.children, strict=True):
        target = f"self.{attr}" if attr.isidentifier() else f"getattr(self, {quoted(attr)})"
        shape = comments.shape(child.node)
        lines.append(f"        x = {target}(x)  # {shape}" if shape else f"        x = {target}(x)")
    lines.append("        return x")
    return "\n".join(lines) + "\n"


def used_definitions(definitions: list[tuple[str, str]], code: list[str]) -> list[tuple[str, str]]:
    """The local variables (ParameterCode.definitions) that `code` reads, directly or through another's
    expression: a layer that a block's class now builds leaves its variable unread."""
    text = "\n".join(code)
    kept: list[tuple[str, str]] = []
    for name, expression in reversed(definitions):  # a definition reads only earlier ones
        if re.search(rf"\b{re.escape(name)}\b", text):
            kept.append((name, expression))
            text += "\n" + expression
    return kept[::-1]


def graph_forward(network: Network, plan: ModulePlan, comments: Comments) -> list[str]:
    """`forward`'s body for a network whose data flow leaves the tree: named tensors, as a person writes a U-Net.

    A top-level element that holds no reference and none of whose inner tensors is read
    again runs as one call (its container's forward is exact); any other is written out
    one layer or merge per line. Labelled tensors take their label's name.
    """
    flow = network.program()
    shared = shared_tensors(network)
    modules = module_expressions(plan)
    names = {0: "x"}
    taken = {"x", "self", "torch", "nn"}

    def name_for(register: int, node: Node, opening: str) -> str:
        """The tensor's name: its label; a label used again (each block call's `conv`, `bn`, ...) qualified by its
        path, `c3.cv1.act` -> `c3_cv1_act`, unless that makes `name = callee(` too long; then numbered."""
        if register not in names:
            candidates = [identifier(node.label, "t")] if node.label else []
            qualified = identifier("x" * node.path[:1].isdigit() + node.path, "t")
            if node.label and len(f"        {qualified} = {opening}") <= LINE_LENGTH:
                candidates.append(qualified)
            name = next((c for c in candidates if c not in taken), None) or f"x{len(names)}"
            base, number = name, 2
            while name in taken:
                name, number = f"{base}_{number}", number + 1
            taken.add(name)
            names[register] = name
        return names[register]

    read = {register for step in flow.steps for register in step.inputs} | set(flow.outputs)

    def assign(register: int, node: Node, expression: ForwardExpression, shaped: Node) -> list[str]:
        shape = comments.shape(shaped)
        # A tensor that nothing reads is still computed (BatchNorm's statistics move in training), unnamed.
        if register not in read:
            return forward_statement("", expression, f"{shape or 'its shape depends on the parameters'}, read by nothing")
        return forward_statement(f"{name_for(register, node, expression.opening)} = ", expression, shape)

    lines: list[str] = []
    steps = iter(flow.steps)
    for child in network.root.children:
        leaves = sum(1 for _ in child.leaves())
        own = [next(steps) for _ in range(leaves)]
        if isinstance(child, Reference):
            continue  # the next element reads the reference's source directly
        inner = [node for node, _ in walk(child) if node is not child]
        if not any(isinstance(node, Reference) or node in shared for node in inner):
            call = ForwardExpression(modules[child], [names[flow.consumed[child]]])
            lines += assign(flow.produced[child], child, call, child)
            continue
        for step in own:
            layer = step.layer
            owner: Node = layer
            if isinstance(layer.kind, MergeKind):  # the merge's tensor is its Parallel's: the label is there
                owner = next(node for node in [child, *inner] if isinstance(node, Parallel) and node.merge is layer)
            inputs = [names[r] for r in step.inputs]
            if isinstance(layer.kind, MergeKind):
                if layer.kind.name == "Concat":
                    expression = ForwardExpression("torch.cat", inputs, listed=True)
                else:
                    expression = ForwardExpression("", inputs, operator="+" if layer.kind.name == "Add" else "*")
            else:
                expression = ForwardExpression(modules[layer], inputs[:1])
            lines += assign(step.output, owner, expression, layer)
    results = [names[r] for r in flow.outputs]
    returned = f"        return {', '.join(results)}"
    if len(returned) <= LINE_LENGTH:
        lines.append(returned)
    else:  # as ruff formats a long tuple: in parentheses, on one line if it fits, else one item per line
        one_line = f"            {', '.join(results)}"
        body = [one_line] if len(one_line) <= LINE_LENGTH else [f"            {result}," for result in results]
        lines += ["        return (", *body, "        )"]
    return lines


@dataclass(frozen=True)
class ForwardExpression:
    """One line of a graph network's `forward`: a call `callee(arguments)` (`listed`: `callee([arguments], dim=1)`,
    torch.cat's form) or, with `operator`, the arguments joined by it."""

    callee: str
    arguments: list[str]
    listed: bool = False
    operator: str | None = None

    @property
    def opening(self) -> str:
        """What stays on the statement's first line when it is wrapped."""
        return "(" if self.operator else f"{self.callee}("

    def __str__(self) -> str:
        if self.operator:
            return f" {self.operator} ".join(self.arguments)
        inner = f"[{', '.join(self.arguments)}], dim=1" if self.listed else ", ".join(self.arguments)
        return f"{self.callee}({inner})"


def _chained_attributes(callee: str) -> int:
    """The attribute accesses of `callee`, outside brackets, that follow a closing bracket (`)`, `]`): the dots
    ruff's formatter counts as split points of the expression."""
    depth, count, previous = 0, 0, ""
    for char in callee:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "." and depth == 0 and previous in ")]":
            count += 1
        previous = char
    return count


def forward_statement(target: str, expression: ForwardExpression, comment: str | None) -> list[str]:
    """`target expression  # comment` in `forward` (indent 8), wrapped as ruff formats it when longer than a line
    (the generated file must pass `ruff format --check`): the call's arguments, or the operands in parentheses,
    on one indented line if they fit, else one per line. No comment when `comment` is None."""
    note = f"  # {comment}" if comment is not None else ""
    line = f"        {target}{expression}{note}"
    if len(line) <= LINE_LENGTH:
        return [line]
    opening, closing = f"        {target}{expression.opening}", f"        ){note}"
    whole = f"            {expression}"
    if target and not expression.operator and len(whole) <= LINE_LENGTH and _chained_attributes(expression.callee) >= 2:
        # ruff keeps a call whose callee chains attributes off brackets (`getattr(self, "2").m[0].cv1(x)`) whole, in
        # parentheses around the right-hand side, rather than splitting its arguments.
        return [f"        {target}(", whole, closing]
    if expression.operator:
        joined = f"            {expression}"
        if len(joined) <= LINE_LENGTH:
            return [opening, joined, closing]
        first, *rest = expression.arguments
        return [opening, f"            {first}", *(f"            {expression.operator} {a}" for a in rest), closing]
    listed = f"[{', '.join(expression.arguments)}]" if expression.listed else None
    inner = f"            {listed}, dim=1" if listed else f"            {', '.join(expression.arguments)}"
    if len(inner) <= LINE_LENGTH:
        return [opening, inner, closing]
    if listed is None:
        return [opening, *(f"            {a}," for a in expression.arguments), closing]
    if len(f"            {listed},") <= LINE_LENGTH:
        return [opening, f"            {listed},", "            dim=1,", closing]
    items = [f"                {a}," for a in expression.arguments]
    return [opening, "            [", *items, "            ],", "            dim=1,", closing]


def module_expressions(plan: ModulePlan) -> dict[Node, str]:
    """How `forward` reaches each node's module: `self.e1[0]`, `self.up4[1][0]`, `getattr(self, "5")`.

    Every container below the network is an nn.Sequential (a sequence, a merge, a block's
    class), which indexes its children by position: an unlabelled child is reached as
    `parent[i]`, `i` its position among the modules (a reference has none, so a name `2` may
    sit at position 1). Only an unlabelled top-level element needs `getattr(self, "5")`.
    """
    found: dict[Node, str] = {}
    stack: list[tuple[ModulePlan, str, int]] = [(child, "self", i) for i, child in enumerate(plan.children)]
    parents = {id(child): plan for child in plan.children}
    while stack:
        current, parent_expr, position = stack.pop()
        parent = parents[id(current)]
        if current.name.isidentifier() and not keyword.iskeyword(current.name):
            expr = f"{parent_expr}.{current.name}"
        elif parent is not plan:
            expr = f"{parent_expr}[{position}]"
        else:
            expr = f"getattr({parent_expr}, {quoted(current.name)})"
        found[current.node] = expr
        if isinstance(current.node, Parallel):
            found[current.node.merge] = expr
        for index, child in enumerate(current.children):
            parents[id(child)] = current
            stack.append((child, expr, index))
    return found
