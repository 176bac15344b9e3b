"""The summary table and the JSON report of a checked network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ir import Layer, Node, Parallel, Sequence
from .layers.base import format_value

if TYPE_CHECKING:
    from .network import Network


def _kind_text(node: Node) -> str:
    if isinstance(node, Layer):
        return node.describe
    if isinstance(node, Parallel):
        return f"{node.op}[{len(node.branches)} branches]"
    if isinstance(node, Sequence):
        return node.title
    return type(node).__name__


def _human(n: int, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n} {unit}".rstrip()


def summary_rows(network: Network) -> list[tuple[str, str, str, str, str]]:
    """(indented path, kind, output shape, params, MACs) for every node below the root.

    Parents come before their children and a merge after its branches, as they run.
    """
    rows = []
    stack: list[tuple[Node, int]] = [(child, 0) for child in reversed(network.root.children)]
    while stack:
        node, depth = stack.pop()
        indent = "  " * depth
        if isinstance(node, Layer):
            rows.append((indent + node.path, node.describe, str(node.out_shape), f"{node.params:,}", f"{node.macs:,}"))
            continue
        rows.append((indent + node.path, _kind_text(node), str(node.out_shape), f"{node.params:,}", f"{node.macs:,}"))
        if isinstance(node, Parallel):
            stack.append((node.merge, depth + 1))
        stack.extend((child, depth + 1) for child in reversed(node.children_nodes()))
    return rows


def summary_table(network: Network) -> str:
    header = ("Layer", "Kind", "Output", "Params", "MACs")
    rows = summary_rows(network)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(5)]
    right = {3, 4}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    rule = "-" * (sum(widths) + 2 * 4)
    title = f"{network.name}" + (f" ({network.filename})" if not network.filename.startswith("<") else "")
    params_text = ", ".join(f"{k}={format_value(getattr(v, 'text', v))}" for k, v in network.parameters.items())
    out = [
        title,
        f"input {network.input_shape} -> output {network.output_shape}" + (f"   [{params_text}]" if params_text else ""),
        rule,
        line(header),
        rule,
    ]
    out.extend(line(r) for r in rows)
    out.append(rule)
    rf, jump = network.receptive_field, network.effective_stride
    totals = [
        ("Total params", f"{network.params:,}"),
        ("Trainable params", f"{network.trainable_params:,}"),
        ("Non-trainable params", f"{network.params - network.trainable_params:,}"),
        ("Buffers", f"{network.buffers:,}"),
        ("MACs", f"{network.macs:,} ({_human(network.macs)})"),
        ("Activation memory", f"{network.activation_bytes:,} bytes ({_human(network.activation_bytes, 'B')}, float32, batch 1)"),
        ("Receptive field", f"{_pair(rf)} (effective stride {_pair(jump)})"),
        ("Layers", f"{len(network.layers):,}"),
    ]
    width = max(len(k) for k, _ in totals) + 1
    out.extend(f"{(k + ':').ljust(width)} {v}" for k, v in totals)
    return "\n".join(out)


def _pair(p: tuple[int, int]) -> str:
    return f"{p[0]}x{p[1]}" if p[0] != p[1] else f"{p[0]}x{p[0]}"


def network_json(network: Network) -> dict[str, Any]:
    return {
        "file": network.filename,
        "network": network.name,
        "input": list(network.input_shape),
        "output": list(network.output_shape),
        "params": network.params,
        "trainable_params": network.trainable_params,
        "buffers": network.buffers,
        "macs": network.macs,
        "activation_bytes": network.activation_bytes,
        "receptive_field": list(network.receptive_field),
        "effective_stride": list(network.effective_stride),
        "parameters": {
            k: format_value(getattr(v, "text", v)) if not isinstance(v, (int, float)) else v
            for k, v in network.parameters.items()
        },
        "layers": [
            {
                "path": layer.path,
                "kind": layer.kind.name,
                "input": list(layer.in_shape),
                "output": list(layer.out_shape),
                "params": layer.params,
                "buffers": layer.buffers,
                "macs": layer.macs,
                "args": {k: list(v) if isinstance(v, tuple) else v for k, v in layer.args.items()},
                "receptive_field": list(layer.receptive_field),
                "effective_stride": list(layer.jump),
                "line": layer.pos.line,
                "column": layer.pos.column,
            }
            for layer in network.layers
        ],
        "diagnostics": [d.to_json() for d in network.diagnostics],
    }
