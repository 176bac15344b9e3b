"""The registry as users read it: `cnndsl layers`, its JSON, and the layer table of docs/LANGUAGE.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .base import KINDS, LayerKind


@dataclass(frozen=True)
class LayerRow:
    name: str
    aliases: tuple[str, ...]
    signature: str
    input: str
    description: str
    alias_signatures: dict[str, str]
    """The aliases that take a signature of their own (PyTorch's spellings take PyTorch's)."""


def _description(kind: LayerKind) -> str:
    """The first sentence of the kind's docstring."""
    doc = (type(kind).__doc__ or "").strip()
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def _input_text(kind: LayerKind) -> str:
    """The input a kind takes: `image`, `flat`, `any`, or its spatial ranks (`1-D/2-D/3-D`)."""
    if kind.input_rank != "spatial":
        return kind.input_rank
    return "/".join(f"{rank}-D" for rank in kind.spatial_ranks)


def layer_rows() -> list[LayerRow]:
    """One row per registered kind, in registration order."""
    rows = []
    for kind in KINDS.values():
        own = type(kind).signature_text()
        others = {alias: text for alias, text in type(kind).spellings().items() if alias != kind.name and text != own}
        rows.append(LayerRow(kind.name, tuple(kind.aliases), own, _input_text(kind), _description(kind), others))
    return rows


def layers_json() -> list[dict[str, object]]:
    return [asdict(row) for row in layer_rows()]


def layers_text() -> str:
    """A plain table for the terminal: signature, aliases, input and description."""
    out = []
    for row in layer_rows():
        aliases = f"  (also {', '.join(row.aliases)})" if row.aliases else ""
        out.append(f"{row.signature}{aliases}")
        out.append(f"    input: {row.input}. {row.description}")
        out.extend(f"    {text}" for text in row.alias_signatures.values())
    return "\n".join(out)


def layers_markdown() -> str:
    """The layer table of docs/LANGUAGE.md (a test keeps the document equal to this)."""
    lines = ["| layer | also spelt | signature | input | what it does |", "| --- | --- | --- | --- | --- |"]
    for row in layer_rows():
        aliases = ", ".join(f"`{a}`" for a in row.aliases) or "—"
        description = row.description.replace("|", "\\|")
        lines.append(f"| `{row.name}` | {aliases} | `{row.signature}` | {row.input} | {description} |")
    lines += [
        "",
        "PyTorch's spellings take PyTorch's signatures (an input size, when given, is checked against the inferred one):",
        "",
    ]
    lines += [f"- `{text}`" for row in layer_rows() for text in row.alias_signatures.values()]
    return "\n".join(lines)
