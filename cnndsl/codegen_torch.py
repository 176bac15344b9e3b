"""Generate one standalone, readable PyTorch source file from a checked network.

The file imports only torch. It defines the network as `class <Name>(nn.Module)` whose
constructor takes the network's parameters as keyword arguments, builds named submodules
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
and each input's expression (`Layer.exprs`, cnndsl.expr), and `parameter_expressions` passes
them through the layer's `torch_call` as traced numbers and renders what comes out. What no
expression follows (a repetition count, a comparison such as `groups != 1`) makes the
generated constructor refuse other values of those parameters, with a message that says to
recompile with `--set`. Nothing is checked again: this module does not import the front end.
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import __version__
from .expr import Expr, Term, binary, call, expressible, opaque, params_of, render
from .ir import Layer, Node, Parallel, Reference, Sequence, walk
from .layers import MergeKind
from .layers.base import TorchCall
from .shapes import Shape
from .torch_plan import SEQUENTIAL, ModulePlan, build_plan, deep_recursion, shared_tensors

if TYPE_CHECKING:
    from .network import Network
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


def traced_call(layer: Layer, inplace: bool) -> tuple[TorchCall, set[str]]:
    """The layer's TorchCall computed from traced arguments and input (see _Traced), and the
    parameters whose effect on it no expression can write (they must stay fixed)."""
    exprs = layer.exprs
    assert exprs is not None
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


@dataclass
class ParameterCode:
    """How the network's parameters reach the generated constructor's calls."""

    exprs: dict[tuple[str, int], str]
    """(layer path, slot) -> the expression that gives the call's number at that slot (its numbers in order, tuples flattened)."""
    fixed: list[str]
    """The parameters no expression follows: the constructor refuses other values."""
    definitions: list[tuple[str, str]]
    """Local variables the expressions read (name, expression), in order: the parts of long expressions."""


def parameter_expressions(network: Network, names: dict[str, str]) -> ParameterCode:
    """Each layer's recorded terms (`Layer.exprs`, cnndsl.expr) passed through its `torch_call`
    (`traced_call`) and rendered over `names` (each network parameter's safe name in the
    generated constructor), read from the IR alone."""
    fixed = set(network.structural_parameters)
    slots: list[tuple[str, int, Term]] = []
    for module in build_plan(network).walk():
        node = module.node
        if module.kind != "layer" or not isinstance(node, Layer) or node.exprs is None:
            continue
        call, unexpressed = traced_call(node, module.inplace)
        fixed |= unexpressed
        flat: list[Any] = []
        for value in (*call.args, *(v for _, v in call.kwargs)):
            flat.extend(value if isinstance(value, tuple) else (value,))
        for slot, value in enumerate(flat):
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
    return ParameterCode(exprs, ordered, list(definitions.values()))


# ---- comments that hold for every value the constructor accepts ---------------------------------


MAX_COMMENT_EXPRESSION = 24
"""Longest expression a shape comment writes; a longer one is left out (the comment says less, not something false)."""


@dataclass
class Comments:
    """Shapes and block titles for comments, written over the constructor's parameters where those
    reach them (`# (2 * width)x16x16`, `# Res(width)`), so that they hold for every value it accepts.

    `names` maps each parameter the constructor lets vary to its name; `fixed` the others to their values.
    """

    names: dict[str, str]
    fixed: dict[str, Any]

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
        found = _output_terms(node)
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
        exprs = node.block_exprs
        if node.role != "block" or exprs is None or not any(params_of(t) & self.names.keys() for t in exprs.values()):
            return node.title
        given: list[str] = []
        for key, term in exprs.items():
            text = self.number(term, None)
            if text is None:
                return f"{node.block}(...)"
            given.append(text if key.isdigit() else f"{key}={text}")
        return f"{node.block}({', '.join(given)})"


def _output_terms(node: Node) -> tuple[Term, frozenset[str]] | None:
    """The term of a node's output channels and the parameters its image size depends on (None: not known here)."""
    while isinstance(node, Sequence):
        if not node.children:
            return None  # an empty branch passes its input on: what reaches that is not recorded here
        node = node.children[-1]
    layer = node.merge if isinstance(node, Parallel) else node
    assert isinstance(layer, Layer)
    if layer.exprs is None:
        return layer.out_shape[0], frozenset()
    return layer.exprs.out, layer.exprs.out_size


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

    def value(self, path: str, slot: int, value: Any) -> str:
        return self.exprs.get((path, slot), literal(value))

    def layer(self, plan: ModulePlan) -> Code:
        call, path = plan.call, plan.node.path
        args: list[Code | str] = []
        slot = 0
        for key, value in [*((None, a) for a in call.args), *call.kwargs]:
            if isinstance(value, tuple):
                items = [self.value(path, slot + i, v) for i, v in enumerate(value)]
                text = f"({', '.join(items)})"
                slot += len(value)
            else:
                text = self.value(path, slot, value)
                slot += 1
            args.append(text if key is None else f"{key}={text}")
        return Code(call.name, args)

    def node(self, plan: ModulePlan) -> Code:
        call, node = plan.call, plan.node
        if plan.kind == "layer":
            return self.layer(plan)
        if plan.kind == "merge":  # the branches first, as the container takes them
            args: list[Code | str] = [self.node(branch) for branch in plan.children]
            args += [literal(value) for value in call.args]
            args += [f"{key}={literal(value)}" for key, value in call.kwargs]
            shape = self.comments.shape(node)
            return Code(call.name, args, explode=True, open_comment=f"-> {shape}" if shape else "")
        if plan.kind == "identity":
            return Code(call.name)
        assert isinstance(node, Sequence)
        # Shapes go on containers and forward lines: per-layer comments would push most
        # convolutions past 88 columns and make black split them.
        comment = ""
        if node.role in ("block", "repeat"):
            shape = self.comments.shape(node)
            comment = comment_text(self.comments.title(node)) + (f" -> {shape}" if shape else "")
        if call.name == SEQUENTIAL:  # children named 0, 1, ...: nn.Sequential names them so
            return Code(call.name, [self.node(child) for child in plan.children], explode=True, open_comment=comment)
        entries: list[Code | str] = []
        for child in plan.children:
            code = self.node(child)
            entries.append(Code("", [quoted(child.name), code], atom=True, comment=code.comment))
        return Code(call.name, entries, explode=True, open_comment=comment)


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
        comments = Comments({p: n for p, n in param_names.items() if p not in fixed}, fixed)
        gen = Generator(parameter_code.exprs, comments)
        # The network itself is the generated class: its children are its attributes.
        attrs = [child.name for child in plan.children]
        body = [gen.node(child) for child in plan.children]
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
    if imports:
        lines += [*imports, ""]
    lines += ["import torch", "from torch import nn", ""]
    for source in helpers:
        lines += ["", source, ""]
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
    if parameter_code.definitions:
        lines.append("        # Numbers shared by the layers below, computed from the parameters as the .cnn file does.")
        lines += [f"        {name} = {text}" for name, text in parameter_code.definitions]
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


def forward_statement(target: str, expression: ForwardExpression, comment: str | None) -> list[str]:
    """`target expression  # comment` in `forward` (indent 8), wrapped as ruff formats it when longer than a line
    (the generated file must pass `ruff format --check`): the call's arguments, or the operands in parentheses,
    on one indented line if they fit, else one per line. No comment when `comment` is None."""
    note = f"  # {comment}" if comment is not None else ""
    line = f"        {target}{expression}{note}"
    if len(line) <= LINE_LENGTH:
        return [line]
    opening, closing = f"        {target}{expression.opening}", f"        ){note}"
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
    """How `forward` reaches each node's module: `self.e1[0]`, `getattr(self, "5")`, ..."""
    found: dict[Node, str] = {}
    stack: list[tuple[ModulePlan, str]] = [(child, "self") for child in plan.children]
    parents = {id(child): plan for child in plan.children}
    while stack:
        current, parent_expr = stack.pop()
        parent = parents[id(current)]
        if current.name.isidentifier() and not keyword.iskeyword(current.name):
            expr = f"{parent_expr}.{current.name}"
        elif parent.call.name == SEQUENTIAL and parent is not plan:  # indices 0, 1, ...: nn.Sequential's own
            expr = f"{parent_expr}[{current.name}]"
        else:
            expr = f"getattr({parent_expr}, {quoted(current.name)})"
        found[current.node] = expr
        if isinstance(current.node, Parallel):
            found[current.node.merge] = expr
        for child in current.children:
            parents[id(child)] = current
            stack.append((child, expr))
    return found
