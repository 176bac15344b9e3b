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

How a network parameter reaches the layers is not in the IR (it holds numbers), so the
generator re-checks the source with other values of each parameter and fits each changed
constructor argument as `a * param + b`. Arguments that follow no such rule make the
generated constructor refuse other values of that parameter, with a message that says to
recompile with `--set`.
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
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import CnnDslError
from .ir import Node, Parallel, Reference, Sequence, walk
from .layers import MergeKind
from .layers.base import TorchCall
from .limits import MAX_FIT_LAYERS
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


def flat_values(call: TorchCall) -> list[Any]:
    """The call's numbers in order, tuples flattened: the slots a parameter can drive."""
    values: list[Any] = []
    for value in (*call.args, *(v for _, v in call.kwargs)):
        values.extend(value if isinstance(value, tuple) else (value,))
    return values


def skeleton(call: TorchCall) -> tuple[Any, ...]:
    """Everything about a call except its numbers: two calls with one skeleton differ only in values."""
    shape = tuple(len(v) if isinstance(v, tuple) else -1 for v in (*call.args, *(v for _, v in call.kwargs)))
    return (call.name, len(call.args), tuple(k for k, _ in call.kwargs), shape)


@dataclass
class Calls:
    """Every layer's TorchCall by path, and the tree's structure, for one parameter setting."""

    calls: dict[str, TorchCall]
    structure: tuple[tuple[str, str], ...]


def collect_calls(network: Network) -> Calls:
    calls = {plan.node.path: plan.call for plan in build_plan(network).walk() if plan.kind == "layer"}
    structure = tuple((node.path, type(node).__name__) for node, _ in walk(network.root))
    return Calls(calls, structure)


def _probes(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, bool):
        return [(not value, value)]
    if isinstance(value, int):
        candidates = [(value + 1, value + 2), (2 * value, 3 * value), (value + 2, value + 4)]
        return [c for c in candidates if min(c) >= 1 and value not in c]
    if isinstance(value, float):
        return [(value * 1.5, value * 0.5)] if value else [(0.25, 0.75)]
    return []  # bare words (`same`): no numeric rule to find


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _fit(name: str, points: list[tuple[Any, Any]]) -> str | None:
    """An expression of `name` through every (param value, slot value) point, or None."""
    if all(_same(slot, param) for param, slot in points):
        return name
    if not all(type(p) is int and type(s) is int for p, s in points):
        return None
    (p0, s0), (p1, s1) = points[0], points[1]
    if (s1 - s0) % (p1 - p0):
        return None
    slope = (s1 - s0) // (p1 - p0)
    offset = s0 - slope * p0
    if any(slope * p + offset != s for p, s in points):
        return None
    term = name if slope == 1 else f"{slope} * {name}"
    if offset == 0:
        return term
    return f"{term} + {offset}" if offset > 0 else f"{term} - {-offset}"


def parameter_expressions(network: Network, names: dict[str, str]) -> tuple[dict[tuple[str, int], str], list[str]]:
    """(layer path, slot) -> expression over the parameters, and the parameters no rule covers.

    `names` maps each network parameter to its (safe) name in the generated constructor.
    """
    from .frontend import check_source

    base: Calls | None = None  # made before the first probe: no probe, no cost
    found: dict[tuple[str, int], tuple[str, str]] = {}
    fixed: list[str] = []
    if not network.source:
        return {}, list(network.parameters)
    # Each probe re-checks the whole source: bound the work (layers re-checked in all), so
    # that many parameters on a large network cannot make compiling take minutes. The
    # parameters left over stay fixed (the generated constructor refuses other values).
    rechecked = 0
    for param, value in network.parameters.items():
        rule: dict[tuple[str, int], str] | None = None
        for probe in _probes(value):
            cost = len(probe) * max(len(network.layers), 1)
            if rechecked + cost > MAX_FIT_LAYERS:
                break
            rechecked += cost
            base = base or collect_calls(network)
            rule = _probe_rule(network, base, param, value, probe, names[param], check_source)
            if rule is not None:
                break
        if rule is None:
            fixed.append(param)
            continue
        for slot, expr in rule.items():
            if slot in found:  # two parameters drive one number: no single-parameter rule holds
                fixed.extend(p for p in (param, found[slot][0]) if p not in fixed)
            found[slot] = (param, expr)
    exprs = {slot: expr for slot, (param, expr) in found.items() if param not in fixed}
    return exprs, fixed


def _probe_rule(
    network: Network, base: Calls, param: str, value: Any, probe: tuple[Any, ...], name: str, check: Callable[..., Any]
) -> dict[tuple[str, int], str] | None:
    variants: list[Calls] = []
    for other in probe:
        params = {**network.parameters, param: other}
        checked, _ = check(network.source, network.filename, network.input_shape, params)
        if checked is None:
            return None
        try:
            variant = collect_calls(checked)
        except CnnDslError:
            return None
        if variant.structure != base.structure or variant.calls.keys() != base.calls.keys():
            return None
        variants.append(variant)
    rule: dict[tuple[str, int], str] = {}
    for path, call in base.calls.items():
        others = [v.calls[path] for v in variants]
        if any(skeleton(o) != skeleton(call) for o in others):
            return None
        columns = zip(flat_values(call), *(flat_values(o) for o in others), strict=True)
        for slot, values in enumerate(columns):
            if all(_same(v, values[0]) for v in values):
                continue
            expr = _fit(name, list(zip((value, *probe), values, strict=True)))
            if expr is None:
                return None
            rule[(path, slot)] = expr
    return rule


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
            return Code(call.name, args, explode=True, open_comment=f"-> {node.out_shape}")
        if plan.kind == "identity":
            return Code(call.name)
        assert isinstance(node, Sequence)
        # Shapes go on containers and forward lines: per-layer comments would push most
        # convolutions past 88 columns and make black split them.
        comment = f"{comment_text(node.title)} -> {node.out_shape}" if node.role in ("block", "repeat") else ""
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
        exprs, fixed = parameter_expressions(network, param_names)
        gen = Generator(exprs)
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
        "# Shapes in comments exclude the batch dimension.",
        "",
    ]
    if imports:
        lines += [*imports, ""]
    lines += ["import torch", "from torch import nn", ""]
    for source in helpers:
        lines += ["", source, ""]
    lines += ["", f"class {class_name}(nn.Module):"]
    lines.append(f'    """{comment_text(network.name)}: {network.input_shape} -> {network.output_shape}."""')
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
    for param in fixed:
        name, value = param_names[param], network.parameters[param]
        lines.append(f"        if {name} != {_default(value)}:")
        lines.append("            raise ValueError(")
        lines.append(f'                "{comment_text(param)} changes the network in ways this file cannot express; "')
        lines.append(f'                "recompile with: cnndsl compile FILE --target torch --set {comment_text(param)}=VALUE"')
        lines.append("            )")
    lines += init_lines
    if preprocess is not None:
        lines += preprocess_lines(preprocess, len(network.input_shape) + 1)
    several = network.outputs is not None and len(network.outputs) > 1
    returns = "tuple[torch.Tensor, ...]" if several else "torch.Tensor"
    lines += ["", f"    def forward(self, x: torch.Tensor) -> {returns}:"]
    if preprocess is not None:
        lines.append("        x = (x - self.input_mean) / self.input_std")
    if network.is_graph:
        lines += graph_forward(network, plan)
        return "\n".join(lines) + "\n"
    for attr, child in zip(attrs, plan.children, strict=True):
        target = f"self.{attr}" if attr.isidentifier() else f"getattr(self, {quoted(attr)})"
        lines.append(f"        x = {target}(x)  # {child.node.out_shape}")
    lines.append("        return x")
    return "\n".join(lines) + "\n"


def graph_forward(network: Network, plan: ModulePlan) -> list[str]:
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

    def assign(register: int, node: Node, expression: ForwardExpression, shape: object) -> list[str]:
        # A tensor that nothing reads is still computed (BatchNorm's statistics move in training), unnamed.
        if register not in read:
            return forward_statement("", expression, f"{shape}, read by nothing")
        return forward_statement(f"{name_for(register, node, expression.opening)} = ", expression, str(shape))

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
            lines += assign(flow.produced[child], child, call, child.out_shape)
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
            lines += assign(step.output, owner, expression, layer.out_shape)
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


def forward_statement(target: str, expression: ForwardExpression, comment: str) -> list[str]:
    """`target expression  # comment` in `forward` (indent 8), wrapped as ruff formats it when longer than a line
    (the generated file must pass `ruff format --check`): the call's arguments, or the operands in parentheses,
    on one indented line if they fit, else one per line."""
    line = f"        {target}{expression}  # {comment}"
    if len(line) <= LINE_LENGTH:
        return [line]
    opening, closing = f"        {target}{expression.opening}", f"        )  # {comment}"
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
