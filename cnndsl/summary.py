"""The summary table and the JSON report of a checked network."""

from __future__ import annotations

from collections.abc import Sequence as Sequence_
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .ir import Layer, Node, Parallel, Reference, Sequence, walk
from .layers.base import format_value
from .receptive import stride_json, stride_text

if TYPE_CHECKING:
    from .network import Network


DEFAULT_DEPTH = 1
"""Container levels a summary opens by default: ResNet-18's table fits a screen (20 rows)."""

COLUMNS: dict[str, tuple[str, bool]] = {
    "input": ("Input", False),
    "output": ("Output", False),
    "params": ("Params", True),
    "macs": ("MACs", True),
    "rf": ("RF", False),
    "kernel": ("Kernel", False),
}
"""Column name -> (heading, right-aligned), in the order `--columns` may name them."""

DEFAULT_COLUMNS = ("output", "params", "macs")


@dataclass(frozen=True)
class SummaryRow:
    """One row: a layer, or a container (block call, repetition, labelled group, merge) with its totals."""

    node: Node
    depth: int
    """How many shown containers hold it (its indentation)."""
    kind: str
    folded: bool
    """A container whose contents are deeper than the summary's depth: one row with their totals."""

    def cell(self, column: str) -> str:
        node = self.node
        if column == "input":
            return str(node.in_shape)
        if column == "output":
            return str(node.out_shape)
        if column == "params":
            return f"{node.params:,}"
        if column == "macs":
            return f"{node.macs:,}"
        if column == "rf":
            last = _last_layer(node)
            return _pair(last.receptive_field) if last is not None else ""
        if column == "kernel":
            window = node.kind.window(node.args) if isinstance(node, Layer) else None
            return _pair(window.kernel) if window is not None else ""
        raise ValueError(f"unknown summary column {column!r}")


def _last_layer(node: Node) -> Layer | None:
    """The layer whose output is the node's output (a merge for a Parallel); None for an empty group."""
    while not isinstance(node, Layer):
        if isinstance(node, Parallel):
            return node.merge
        children = node.children_nodes()
        if not children:
            return None
        node = children[-1]
    return node


def _container_kind(node: Node) -> str | None:
    """A container's Kind cell, or None for a container that gets no row of its own (an unlabelled
    group or a merge's branch: its layers show at its parent's level, their paths tell them apart)."""
    if isinstance(node, Parallel):
        return f"{node.op}[{len(node.branches)} branch{'' if len(node.branches) == 1 else 'es'}]"
    if isinstance(node, Sequence):
        if node.role == "block":
            return node.title
        if node.role == "repeat":
            first = node.children[0] if node.children else None
            what = _container_kind(first) or _group_kind(first) if first is not None else None
            return f"{what} {node.title}" if what else node.title
        if node.label is not None:
            return _group_kind(node)
    return None


def _group_kind(node: Node) -> str:
    """`[3 layers]` for a group; a layer's own description for a layer."""
    if isinstance(node, Layer):
        return node.describe
    return f"[{sum(1 for _ in node.leaves()):,} layers]"


def summary_rows(network: Network, depth: int | None = DEFAULT_DEPTH) -> list[SummaryRow]:
    """The rows of the table: parents before their children, as torchinfo lists modules.

    Containers deeper than `depth` are folded into their row (None: every layer is shown).
    """
    rows: list[SummaryRow] = []
    stack: list[tuple[Node, int]] = [(child, 0) for child in reversed(network.root.children)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, Layer):
            rows.append(SummaryRow(node, level, node.describe, False))
            continue
        if isinstance(node, Reference):
            rows.append(SummaryRow(node, level, node.target_text, False))
            continue
        kind = _container_kind(node)
        inner = level
        if kind is not None:
            folded = depth is not None and level >= depth
            rows.append(SummaryRow(node, level, kind, folded))
            if folded:
                continue
            inner = level + 1
        stack.extend((child, inner) for child in reversed(node.children_nodes()))
    return rows


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.2f} MB"


def _title(network: Network) -> str:
    return f"{network.name}" + (f" ({network.filename})" if not network.filename.startswith("<") else "")


def _io_line(network: Network) -> str:
    params_text = ", ".join(f"{k}={format_value(getattr(v, 'text', v))}" for k, v in network.parameters.items())
    if network.outputs is None:
        outputs = f"output {network.output_shape}"
    else:
        outputs = ("outputs " if len(network.outputs) > 1 else "output ") + ", ".join(
            f"{name} {shape}" for name, shape in zip(network.output_names, network.output_shapes, strict=True)
        )
    return f"input {network.input_shape} -> {outputs}" + (f"   [{params_text}]" if params_text else "")


def tensor_names(network: Network) -> dict[int, str]:
    """A name for every register of the data flow: `input`, or the path of the layer or merge that writes it."""
    names = {0: "input"}
    for step in network.program().steps:
        names[step.output] = step.layer.path
    return names


def skip_notes(network: Network) -> list[str]:
    """One line per reference: where it is, what it reads, and which merge or layer reads it in turn."""
    flow = network.program()
    names = tensor_names(network)
    notes = []
    for node, _ in walk(network.root):
        if isinstance(node, Reference):
            source = names[flow.produced[node]]
            what = "the network's input" if source == "input" else f"the output of `{source}`"
            notes.append(f"  {node.path} reads {node.target_text}: {what}, {node.out_shape}")
    for step in flow.steps:  # arguments that name a tensor read its shape (Upsample(like=@x))
        for (arg, ref), register in zip(step.layer.arg_refs.items(), step.shape_inputs, strict=True):
            source = names[register]
            what = "the network's input" if source == "input" else f"the output of `{source}`"
            notes.append(f"  {step.layer.path} reads the size of {arg}={ref.target_text}: {what}, {ref.out_shape}")
    return notes


def _totals(network: Network) -> list[tuple[str, str]]:
    rf, effective_stride = network.receptive_field, network.effective_stride
    input_bytes = 4 * network.input_shape.numel
    param_bytes = 4 * (network.params + network.buffers)
    return [
        ("Total params", f"{network.params:,}"),
        ("Trainable params", f"{network.trainable_params:,}"),
        ("Non-trainable params", f"{network.params - network.trainable_params:,}"),
        ("Buffers", f"{network.buffers:,}"),
        ("MACs", f"{network.macs:,} ({_human(network.macs)})"),
        ("Activation memory", f"{network.activation_bytes:,} bytes ({_human(network.activation_bytes, 'B')}, float32, batch 1)"),
        ("Input size", _mb(input_bytes)),
        ("Params size", f"{_mb(param_bytes)} (parameters and buffers, float32)"),
        ("Total size", f"{_mb(network.activation_bytes + param_bytes)} (input, activations, parameters and buffers)"),
        ("Receptive field", f"{_pair(rf)} (effective stride {'x'.join(map(stride_text, effective_stride))})"),
        ("Layers", f"{len(network.layers):,}"),
    ]


def _text(network: Network, depth: int | None, columns: tuple[str, ...], rows: list[SummaryRow]) -> str:
    header = ("Layer", "Kind", *(COLUMNS[c][0] for c in columns))
    right = {2 + i for i, c in enumerate(columns) if COLUMNS[c][1]}
    cells = [("  " * row.depth + row.node.path, row.kind, *(row.cell(c) for c in columns)) for row in rows]
    widths = [max(len(header[i]), *(len(r[i]) for r in cells)) if cells else len(header[i]) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [_title(network), _io_line(network), rule, line(header), rule, *(line(c) for c in cells), rule]
    totals = _totals(network)
    width = max(len(k) for k, _ in totals) + 1
    out.extend(f"{(k + ':').ljust(width)} {v}" for k, v in totals)
    references = skip_notes(network) if network.is_graph or network.reads_shapes else []
    if references:
        out.append("References (skip connections):")
        out.extend(references)
    if depth is not None and any(row.folded for row in rows):
        out.append(f"(blocks and groups below depth {depth} are folded into one row with their totals: --depth N opens them)")
    return "\n".join(out)


class Summary(str):
    """A network's summary table and totals.

    It is the text `cnndsl check` prints (a `str`, so it prints, compares and concatenates as
    one), and Jupyter displays it as an HTML table. `rows` holds the table's rows.
    """

    network: Network
    depth: int | None
    columns: tuple[str, ...]
    rows: list[SummaryRow]

    def __new__(cls, network: Network, depth: int | None = DEFAULT_DEPTH, columns: Sequence_[str] = DEFAULT_COLUMNS) -> Summary:
        columns = tuple(columns)
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown or not columns:
            given = ", ".join(repr(c) for c in unknown) or "(none given)"
            raise ValueError(f"unknown summary column {given}; choose from {', '.join(COLUMNS)}")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise ValueError(f"depth must be a whole number of at least 0, or None for every layer; got {depth!r}")
        rows = summary_rows(network, depth)
        self = super().__new__(cls, _text(network, depth, columns, rows))
        self.network, self.depth, self.columns, self.rows = network, depth, columns, rows
        return self

    def __repr__(self) -> str:
        # The table itself at a Python prompt, not a quoted string full of \n.
        return str.__str__(self)

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Copied or pickled, a summary is its text (the network it describes does not travel).
        return str, (str.__str__(self),)

    def _repr_html_(self) -> str:
        """The same rows and totals as HTML tables (Jupyter shows this instead of the text)."""
        from html import escape as esc  # here: only notebooks need it, and `check` never imports it

        head = "".join(f"<th>{esc(h)}</th>" for h in ("Layer", "Kind", *(COLUMNS[c][0] for c in self.columns)))
        body = []
        for row in self.rows:
            indent = 0.3 + 1.2 * row.depth
            cells = [
                f'<td style="text-align:left;padding-left:{indent:.1f}em"><code>{esc(row.node.path)}</code></td>',
                f'<td style="text-align:left">{esc(row.kind)}</td>',
            ]
            for column in self.columns:
                align = "right" if COLUMNS[column][1] else "left"
                cells.append(f'<td style="text-align:{align}">{esc(row.cell(column))}</td>')
            body.append(f"<tr>{''.join(cells)}</tr>")
        totals = "".join(
            f'<tr><th style="text-align:left">{esc(k)}</th><td style="text-align:left">{esc(v)}</td></tr>'
            for k, v in _totals(self.network)
        )
        return (
            f'<div class="cnndsl-summary"><p><b>{esc(_title(self.network))}</b><br>{esc(_io_line(self.network))}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<table>{totals}</table></div>"
        )


def warnings_html(network: Network) -> str:
    """The network's warnings for Jupyter, formatted as `check` prints them (a warning must not hide in a notebook)."""
    import html

    return "".join(
        f'<pre class="cnndsl-warning" style="color:#8a5300;background:#fff8e5;padding:0.4em">{html.escape(str(d))}</pre>'
        for d in network.warnings
    )


def _human(n: int, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n} {unit}".rstrip()


def _pair(p: tuple[int, ...]) -> str:
    """Every axis's size, even when equal (`3x3`, `3x3x3`; `80` for a 1-D layer): a table column reads more easily so."""
    return "x".join(str(v) for v in p)


def network_json(network: Network) -> dict[str, Any]:
    flow = network.program()
    names = tensor_names(network)
    # The data edges: the tensors each layer reads (a merge, one per branch), by the path of their writer.
    reads = {step.layer: [names[r] for r in step.inputs] for step in flow.steps}
    # And the tensors whose shape alone a layer reads (`Upsample(like=@x)`: `like` gave its size).
    reads_shape = {step.layer: [names[r] for r in step.shape_inputs] for step in flow.steps}
    return {
        "file": network.filename,
        "network": network.name,
        "input": list(network.input_shape),
        "output": list(network.output_shape),
        "outputs": [
            {"name": name, "shape": list(shape)} for name, shape in zip(network.output_names, network.output_shapes, strict=True)
        ],
        "params": network.params,
        "trainable_params": network.trainable_params,
        "buffers": network.buffers,
        "macs": network.macs,
        "activation_bytes": network.activation_bytes,
        "receptive_field": list(network.receptive_field),
        "effective_stride": [stride_json(s) for s in network.effective_stride],
        "parameters": {
            k: format_value(getattr(v, "text", v)) if not isinstance(v, (int, float)) else v
            for k, v in network.parameters.items()
        },
        "layers": [
            {
                "path": layer.path,
                "reads": reads[layer],
                "reads_shape_of": reads_shape[layer],
                "kind": layer.kind.name,
                "input": list(layer.in_shape),
                "output": list(layer.out_shape),
                "params": layer.params,
                "buffers": layer.buffers,
                "macs": layer.macs,
                "args": {k: list(v) if isinstance(v, tuple) else v for k, v in layer.args.items()},
                "receptive_field": list(layer.receptive_field),
                "effective_stride": [stride_json(s) for s in layer.effective_stride],
                "line": layer.pos.line,
                "column": layer.pos.column,
            }
            for layer in network.layers
        ],
        "diagnostics": [d.to_json() for d in network.diagnostics],
    }
