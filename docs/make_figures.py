"""Render the README's pictures into docs/figures/ (SVG and PNG), from the same IR as `cnndsl render`.

    python docs/make_figures.py

Needs the graphviz Python package and Graphviz's `dot`. The outputs are committed, so that
the README shows them without anyone running this; rerun it when the drawings change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cnndsl
from cnndsl.files import atomic_write
from cnndsl.graph import RenderError, build_graph, graph_bytes

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"

# The lecture's classic pattern, exactly as LANGUAGE.md writes it.
CLASSIC = """\
input 3x32x32
defaults Conv(32, 3, pad=1), Pool(2), FC(128)
[Conv,ReLU,Pool]x2, flatten, [FC,ReLU]x2, FC(10)
"""

PNG_DPI = "144"
"""1.5 times Graphviz's default: sharp on high-density screens, still a small file."""


def figures() -> list[tuple[str, cnndsl.Network, dict[str, object]]]:
    """(output stem, network, build_graph options) for every figure."""
    return [
        ("resnet18", cnndsl.load(ROOT / "architectures" / "resnet18.cnn"), {}),
        ("classic", cnndsl.parse(CLASSIC, "classic.cnn"), {"expand": True}),
    ]


def main() -> int:
    FIGURES.mkdir(parents=True, exist_ok=True)
    for stem, network, options in figures():
        graph = build_graph(network, **options)  # type: ignore[arg-type]
        try:
            atomic_write(FIGURES / f"{stem}.svg", graph_bytes(graph, "svg"))
            graph.attr(dpi=PNG_DPI)
            atomic_write(FIGURES / f"{stem}.png", graph_bytes(graph, "png"))
        except RenderError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"wrote docs/figures/{stem}.svg and docs/figures/{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
