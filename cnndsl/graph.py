"""Drawings of a checked network with Graphviz: DOT, SVG, PNG and PDF, and Jupyter's inline SVG.

Built from the IR only. By default every block call and every repetition is one box with
its totals (`Basic(64, 1) ×2`), so ResNet-50 or GoogLeNet stays a page tall; `depth` opens
block calls that many levels deep and `expand` draws every layer. Edges carry the shape of
the tensor they move; Add/Concat/Mul merges are nodes of their own; labels and opened blocks
are clusters.

Every piece of user text (network, block and label names, titles) reaches DOT only through
`_html` (node and cluster labels are HTML-like labels, escaped) or `_plain` (quoted strings
with backslashes and quotes escaped), and node identifiers are generated (`n0`, `n1`, ...),
so no name can add attributes or statements to the DOT source.
"""

from __future__ import annotations

import html
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import graphviz

from .files import atomic_write, same_file
from .ir import Layer, Node, Parallel, Reference, Sequence, walk
from .layers.channel import Identity
from .limits import DOT_TIMEOUT_S, MAX_DRAWN_MERGE_NESTING, MAX_DRAWN_NODES, MAX_DRAWN_RANK_WIDTH, MAX_PNG_DPI
from .shapes import Shape

if TYPE_CHECKING:
    from .network import Network

FORMATS: tuple[str, ...] = ("svg", "png", "pdf", "dot")
RANKDIRS: tuple[str, ...] = ("TB", "LR")

INSTALL_HINT = (
    "Graphviz's `dot` program was not found on PATH; it is needed for {fmt} output. "
    "Install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz; "
    "conda: conda install -c conda-forge graphviz; Windows: winget install graphviz), "
    "or write DOT text instead with `-o FILE.dot`."
)

FONT = "Helvetica"

# Light fills with dark borders and black text: distinct on screen, still readable when
# printed in grey scale (every fill is pale enough for black text).
FAMILY_STYLE: dict[str, tuple[str, str]] = {
    "conv": ("#cfe2f3", "#2f5f8f"),
    "pool": ("#d9ead3", "#3f6f2f"),
    "linear": ("#fce5cd", "#a0561a"),
    "norm": ("#fff2cc", "#8a7010"),
    "activation": ("#f4cccc", "#8f3a3a"),
    "regularization": ("#eeeeee", "#555555"),
    "reshape": ("#ffffff", "#555555"),
    "merge": ("#ffffff", "#111111"),
    "identity": ("#ffffff", "#888888"),
}
UNIT_STYLE = ("#e4dff0", "#4b3b7b")
"""Collapsed block calls and repetitions: one neutral colour, whatever they contain."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RenderError(Exception):
    """A drawing could not be produced or written; the message is for the user as is."""


def _clean(text: str) -> str:
    # Newlines and other control characters would break a label or a quoted string.
    return _CONTROL.sub(" ", str(text))


def _html(text: str) -> str:
    """User text for the inside of an HTML-like label: every markup character escaped."""
    return html.escape(_clean(text), quote=True)


def _plain(text: str) -> graphviz.quoting.NoHtml:
    """User text for a quoted DOT string. graphviz's own quoting leaves backslashes alone (a
    trailing one would swallow the closing quote) and treats `<...>` as HTML, so escape
    backslashes and quotes here and mark the text as not HTML."""
    escaped = _clean(text).replace("\\", "\\\\").replace('"', '\\"')
    return graphviz.nohtml(escaped)


def shape_text(shape: Shape) -> str:
    """`64×56×56` for an image, `1000` for a flat vector."""
    return "×".join(str(d) for d in shape)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def count_text(n: int) -> str:
    """Exact below a million (people compare small counts digit by digit), else `2.36M`."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f}G"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n:,}"


# ---------------------------------------------------------------------------------------
# A small drawing model: nodes in (nested) clusters, and edges. Edges are emitted after
# every cluster, because a node first named by an edge statement outside its cluster would
# be placed outside it by dot.


@dataclass
class _DrawNode:
    id: str
    label: str
    """An HTML-like label body, already escaped."""
    attrs: dict[str, str]


@dataclass
class _Cluster:
    id: str
    label: str
    attrs: dict[str, str]
    items: list[_DrawNode | _Cluster] = field(default_factory=list)


@dataclass
class _Edge:
    tail: str
    head: str
    label: str
    attrs: dict[str, str] = field(default_factory=dict)


Ends = list[tuple[str, Shape, bool]]
"""The nodes whose outputs feed what is drawn next, each with the shape it produces and
whether it arrives through a reference (`@name`: drawn as a skip edge)."""

SKIP_EDGE = {"style": "dashed", "color": "#1f5fa8", "fontcolor": "#1f5fa8"}
"""A reference's edge: from the referenced tensor to where it is read."""

SHAPE_EDGE = {"style": "dotted", "color": "#1f5fa8", "fontcolor": "#1f5fa8", "arrowhead": "odot"}
"""An argument's reference (`Upsample(like=@x)`): the layer reads only that tensor's size."""


def _is_unit(node: Node) -> bool:
    """Block calls and repetitions: what collapses into one box."""
    return isinstance(node, Sequence) and node.role in ("block", "repeat")


def _is_identity(node: Node) -> bool:
    return isinstance(node, Layer) and isinstance(node.kind, Identity)


def _brief(node: Node) -> str:
    """A one-line name for the content of a collapsed box."""
    if isinstance(node, Layer):
        return node.describe
    if isinstance(node, Parallel):
        return f"{node.op}[{len(node.branches)} branch{'' if len(node.branches) == 1 else 'es'}]"
    if isinstance(node, Sequence):
        if node.role == "block":
            return node.title
        if node.role == "repeat":
            inner = _brief(node.children[0]) if node.children else "[]"
            return f"{inner} ×{len(node.children)}"
        parts = [_brief(child) for child in node.children]
        text = "[" + ", ".join(parts) + "]"
        # A long group reads better as its size than as a line wider than the drawing.
        return text if len(text) <= 48 else f"[{len(node.children)} elements]"
    return type(node).__name__


class _Builder:
    def __init__(self, network: Network, depth: float) -> None:
        self.network = network
        self.depth = depth
        self.root = _Cluster("root", "", {})
        self.stack = [self.root]
        self.edges: list[_Edge] = []
        self.counter = 0
        self.cluster_counter = 0
        self.group_counter = 0
        self.groups: list[str] = []
        """Graphviz `group`s of the branches being drawn: dot keeps a group's nodes in one
        straight column, so each branch of a merge reads as its own lane."""
        self.outputs: dict[Node, Ends] = {}
        """What each drawn node's output is drawn as (a reference's source is looked up here);
        the nodes inside a collapsed box map to the box."""
        self.inputs: dict[Node, Ends] = {}
        """The ends feeding each body (network, block call): what `@input` reads."""
        self.merge_depth = 0
        self.max_merge_depth = 0
        """Deepest nesting of drawn merges: dot's layout time explodes with it (long edges crossing)."""

    # -- primitives ----------------------------------------------------------------------

    def add_node(self, label: str, attrs: dict[str, str]) -> str:
        node_id = f"n{self.counter}"
        self.counter += 1
        if self.groups:
            attrs = {**attrs, "group": self.groups[-1]}
        self.stack[-1].items.append(_DrawNode(node_id, label, attrs))
        return node_id

    def connect(self, ends: Ends, head: str) -> None:
        for tail, shape, skip in ends:
            self.edges.append(_Edge(tail, head, shape_text(shape), dict(SKIP_EDGE) if skip else {}))

    @contextmanager
    def cluster(self, label: str, attrs: dict[str, str]) -> Iterator[None]:
        cluster = _Cluster(f"cluster_{self.cluster_counter}", label, attrs)
        self.cluster_counter += 1
        self.stack[-1].items.append(cluster)
        self.stack.append(cluster)
        try:
            yield
        finally:
            self.stack.pop()

    # -- the walk ------------------------------------------------------------------------

    def draw_network(self) -> None:
        net = self.network
        start = self.add_node(
            f"<b>input</b><br/>{_html(shape_text(net.input_shape))}",
            {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#e8e8e8", "color": "#111111", "penwidth": "2"},
        )
        self.inputs[net.root] = [(start, net.input_shape, False)]
        ends = self.draw_children(net.root, [(start, net.input_shape, False)], 0)
        outputs = (
            [(name, self.reference_ends(ref)) for name, ref in zip(net.output_names, net.outputs, strict=True)]
            if net.outputs is not None
            else [("output", ends)]
        )
        for name, feeding in outputs:
            shape = feeding[0][1] if feeding else net.output_shape
            out = self.add_node(
                f"<b>{_html(name)}</b><br/>{_html(shape_text(shape))}",
                {
                    "shape": "box",
                    "style": "rounded,filled,bold",
                    "fillcolor": "#e8e8e8",
                    "color": "#111111",
                    "penwidth": "2",
                    "peripheries": "2",
                },
            )
            self.connect([(tail, shape, False) for tail, shape, _ in feeding], out)

    def reference_ends(self, ref: Reference) -> Ends:
        """What a reference reads, as drawn: its source's output (or a body's input), arriving as a skip edge."""
        ends = self.inputs.get(ref.source, []) if ref.of_input else self.outputs.get(ref.source, [])
        return [(tail, shape, True) for tail, shape, _ in ends]

    def widest_rank(self) -> int:
        """The most boxes and edges passing one level of the layout (dot places each edge that skips
        levels as a chain of hidden nodes; its crossing minimisation grows with the square of this)."""
        rank: dict[str, int] = {}
        # Every edge points from an earlier node to a later one (n0, n1, ... in drawing order).
        for edge in sorted(self.edges, key=lambda e: int(e.head[1:])):
            rank[edge.head] = max(rank.get(edge.head, 0), rank.get(edge.tail, 0) + 1)
        width = [0] * (max(rank.values(), default=0) + 2)
        for level in rank.values():
            width[level] += 1
        passing = [0] * len(width)  # +1 where a skipping edge starts passing levels, -1 after it ends
        for edge in self.edges:
            start, end = rank.get(edge.tail, 0) + 1, rank[edge.head]
            if end > start:
                passing[start] += 1
                passing[end] -= 1
        running, widest = 0, 1
        for level, boxes in enumerate(width):
            running += passing[level]
            widest = max(widest, boxes + running)
        return widest

    def draw_children(self, seq: Sequence, ends: Ends, level: int) -> Ends:
        for child in seq.children:
            ends = self.draw(child, ends, level)
        return ends

    def draw(self, node: Node, ends: Ends, level: int) -> Ends:
        ends = self.draw_node(node, ends, level)
        self.outputs[node] = ends
        return ends

    def draw_node(self, node: Node, ends: Ends, level: int) -> Ends:
        if isinstance(node, Reference):
            return self.reference_ends(node)
        if isinstance(node, Layer):
            return self.draw_layer(node, ends)
        if isinstance(node, Parallel):
            return self.draw_parallel(node, ends, level)
        assert isinstance(node, Sequence)
        if node.role == "block":
            self.inputs[node] = ends
        if _is_unit(node):
            if level >= self.depth:
                return self.draw_collapsed(node, ends)
            return self.open_unit(node, ends, level + 1)
        if node.label is not None:
            with self.cluster(f"<b>{_html(node.label)}</b>", {"style": "rounded,dashed", "color": "#666666"}):
                return self.draw_children(node, ends, level)
        # Unlabelled groups (`[...]`, branches) add nothing a reader needs: draw them inline.
        return self.draw_children(node, ends, level)

    def open_unit(self, seq: Sequence, ends: Ends, child_level: int) -> Ends:
        """An opened block call or repetition: a cluster around its content."""
        prefix = f"{_html(seq.label)}: " if seq.label is not None else ""
        if seq.role == "block":
            title = f"<b>{prefix}{_html(seq.title)}</b>"
            attrs = {"style": "rounded,filled", "fillcolor": "#f6f6f6", "color": "#777777"}
        else:
            title = f"<b>{prefix}×{len(seq.children)}</b>"
            attrs = {"style": "rounded,bold", "color": UNIT_STYLE[1]}
        with self.cluster(title, attrs):
            if seq.role == "block":
                return self.draw_children(seq, ends, child_level)
            total = len(seq.children)
            for index, child in enumerate(seq.children):
                if isinstance(child, Sequence) and child.role == "block":
                    # A repetition of a block call is one level: `Basic(64) x 2` opens into
                    # the two Basic blocks' layers at the depth that opens `Down(128)`.
                    ends = self.open_unit(child, ends, child_level)
                elif isinstance(child, Sequence) and child.label is None and len(child.children) > 1:
                    # Mark where each iteration of a repeated group starts and ends.
                    with self.cluster(f"{index + 1} of {total}", {"style": "rounded,dotted", "color": "#999999"}):
                        ends = self.draw_children(child, ends, child_level)
                else:
                    ends = self.draw(child, ends, child_level)
            return ends

    def draw_collapsed(self, seq: Sequence, ends: Ends) -> Ends:
        lines = []
        if seq.label is not None:
            lines.append(f'<font point-size="9"><i>{_html(seq.label)}</i></font>')
        lines.append(f"<b>{_html(_brief(seq))}</b>")
        layers = sum(1 for leaf in seq.leaves() if not _is_identity(leaf))
        lines.append(f'<font point-size="9">{plural(layers, "layer")} · {count_text(seq.params)} params</font>')
        fill, border = UNIT_STYLE
        attrs = {"style": "filled,bold", "fillcolor": fill, "color": border, "tooltip": _plain(seq.path)}
        # A repetition looks like a stack of boxes; a single block call like one box.
        attrs["shape"] = "box3d" if seq.role == "repeat" else "box"
        if seq.role == "repeat":
            # Room for the 3-D edge, which would otherwise touch the first line of text.
            attrs["margin"] = "0.16,0.09"
        if seq.role == "block":
            attrs["style"] = "rounded,filled,bold"
        node_id = self.add_node("<br/>".join(lines), attrs)
        self.connect(ends, node_id)
        drawn: Ends = [(node_id, seq.out_shape, False)]
        if self.network.is_graph or self.network.reads_shapes:  # a reference to a label inside the box reads the box
            for inner, _ in walk(seq):
                self.outputs[inner] = drawn
        return drawn

    def draw_layer(self, layer: Layer, ends: Ends) -> Ends:
        if _is_identity(layer):
            # Identity is the plain edge that carries its input on (a residual shortcut).
            return ends
        fill, border = FAMILY_STYLE.get(layer.kind.family, FAMILY_STYLE["identity"])
        lines = []
        if layer.label is not None:
            lines.append(f'<font point-size="9"><i>{_html(layer.label)}</i></font>')
        lines.append(f"<b>{_html(layer.describe)}</b>")
        if layer.params:
            lines.append(f'<font point-size="9">{count_text(layer.params)} params</font>')
        style = "rounded,filled,dashed" if layer.kind.family == "reshape" else "rounded,filled"
        node_id = self.add_node(
            "<br/>".join(lines),
            {"shape": "box", "style": style, "fillcolor": fill, "color": border, "tooltip": _plain(layer.path)},
        )
        self.connect(ends, node_id)
        for arg, ref in layer.arg_refs.items():
            for tail, shape, _ in self.reference_ends(ref):
                self.edges.append(_Edge(tail, node_id, f"{arg}: {shape_text(shape)}", dict(SHAPE_EDGE)))
        return [(node_id, layer.out_shape, False)]

    def draw_parallel(self, par: Parallel, ends: Ends, level: int) -> Ends:
        def body() -> Ends:
            branch_ends: Ends = []
            self.merge_depth += 1
            self.max_merge_depth = max(self.max_merge_depth, self.merge_depth)
            for branch in par.branches:
                self.groups.append(f"g{self.group_counter}")
                self.group_counter += 1
                try:
                    branch_ends.extend(self.draw(branch, ends, level))
                finally:
                    self.groups.pop()
            self.merge_depth -= 1
            merge = par.merge
            fill, border = FAMILY_STYLE["merge"]
            merge_id = self.add_node(
                f"<b>{_html(merge.kind.name)}</b>",
                {
                    "shape": "ellipse",
                    "style": "filled,bold",
                    "fillcolor": fill,
                    "color": border,
                    "tooltip": _plain(merge.path),
                    "margin": "0.05,0.02",
                },
            )
            self.connect(branch_ends, merge_id)
            return [(merge_id, merge.out_shape, False)]

        if par.label is not None:
            with self.cluster(f"<b>{_html(par.label)}</b>", {"style": "rounded,dashed", "color": "#666666"}):
                return body()
        return body()


def _emit(target: graphviz.Digraph, cluster: _Cluster) -> None:
    for item in cluster.items:
        if isinstance(item, _DrawNode):
            target.node(item.id, label=f"<{item.label}>", **item.attrs)
        else:
            with target.subgraph(name=item.id) as sub:
                sub.attr(label=f"<{item.label}>", labeljust="l", fontsize="10", **item.attrs)
                _emit(sub, item)


def build_graph(network: Network, expand: bool = False, depth: int | None = None, rankdir: str = "TB") -> graphviz.Digraph:
    """The network as a `graphviz.Digraph`.

    Collapsed by default (one box per block call and per repetition); `depth=N` opens block
    calls N levels deep; `expand=True` draws every layer (an Identity is drawn as the edge it is).
    """
    rankdir = rankdir.upper()
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}; got {rankdir!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be 0 or more; got {depth}")
    levels = float("inf") if expand else float(depth or 0)
    builder = _Builder(network, levels)
    builder.draw_network()
    # Graphviz's layout time grows much faster than linearly with the boxes, the width of the
    # drawing and the nesting of merges: refuse before running it rather than wait for minutes.
    if expand or levels > 0:
        advice = "; draw it collapsed (without --expand) or with a smaller --depth"
        collapsed = ""
    else:
        advice = "; group layers into blocks (a collapsed block is drawn as one box)"
        collapsed = " even collapsed"
    if builder.counter > MAX_DRAWN_NODES:
        raise RenderError(
            f"the drawing would have {builder.counter:,} boxes{collapsed}; the limit is {MAX_DRAWN_NODES:,}" + advice
        )
    if builder.max_merge_depth > MAX_DRAWN_MERGE_NESTING:
        raise RenderError(
            f"the drawing would nest merges {builder.max_merge_depth} deep{collapsed}; "
            f"the limit is {MAX_DRAWN_MERGE_NESTING} (Graphviz's layout time explodes with the nesting)" + advice
        )
    widest = builder.widest_rank()
    if widest > MAX_DRAWN_RANK_WIDTH:
        raise RenderError(
            f"the drawing would be {widest:,} boxes and edges wide{collapsed}; the limit is {MAX_DRAWN_RANK_WIDTH:,} "
            "(a merge of many branches)" + advice
        )

    # Name and totals on lines of their own: each line is then one text element, placed whole.
    # Side by side they were two texts placed with dot's font metrics, and ran together where
    # the viewer's font is wider (rsvg).
    title = (
        f"<b>{_html(network.name)}</b><br/>"
        f'<font point-size="11">{count_text(network.params)} params · '
        f"{count_text(network.macs)} MACs · {plural(len(network.layers), 'layer')}</font>"
    )
    graph = graphviz.Digraph(name=re.sub(r"\W", "_", network.name) or "network")
    graph.attr(
        rankdir=rankdir,
        label=f"<{title}>",
        labelloc="t",
        fontname=FONT,
        fontsize="14",
        nodesep="0.25",
        ranksep="0.3",
        newrank="true",
    )
    graph.attr("node", fontname=FONT, fontsize="11", shape="box", margin="0.12,0.04", height="0.3")
    graph.attr("edge", fontname=FONT, fontsize="9", fontcolor="#444444", color="#333333", arrowsize="0.6")
    _emit(graph, builder.root)
    for edge in builder.edges:
        graph.edge(edge.tail, edge.head, label=_plain(" " + edge.label), **edge.attrs)
    return graph


# ---------------------------------------------------------------------------------------
# Output


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The output format: `fmt` if given, else the file's extension; ValueError if neither says."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt == "gv":
            fmt = "dot"
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    ext = Path(path).suffix.lower().lstrip(".")
    if ext == "gv":
        ext = "dot"
    if ext not in FORMATS:
        shown = f"'.{ext}'" if ext else "no extension"
        raise ValueError(f"cannot tell the format from {shown}; name the file .svg, .png, .pdf or .dot, or pass --format")
    return ext


DEFAULT_DPI = 96
"""Graphviz's resolution for bitmaps: `--scale S` means S times this."""


def check_dpi(dpi: float | None, fmt: str) -> None:
    """A resolution applies to PNG only (SVG and PDF scale without loss), within MAX_PNG_DPI."""
    if dpi is None:
        return
    if fmt != "png":
        raise ValueError(f"a resolution (dpi, scale) applies to PNG drawings only; {fmt.upper()} scales without loss")
    if not 1 <= dpi <= MAX_PNG_DPI:
        raise ValueError(f"dpi must be between 1 and {MAX_PNG_DPI} (scale up to {MAX_PNG_DPI / DEFAULT_DPI:g}); got {dpi:g}")


def graph_bytes(graph: graphviz.Digraph, fmt: str, timeout: float = DOT_TIMEOUT_S) -> bytes:
    """The drawing in one format. DOT needs nothing else; the others run Graphviz's `dot`, for at most `timeout` seconds."""
    if fmt == "dot":
        return graph.source.encode("utf-8")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        # `dot` itself, not graphviz's pipe(): that has no timeout, and the limits in
        # build_graph only estimate the layout's cost.
        done = subprocess.run(["dot", f"-T{fmt}"], input=graph.source.encode("utf-8"), capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise RenderError(INSTALL_HINT.format(fmt=fmt.upper())) from None
    except subprocess.TimeoutExpired:
        raise RenderError(
            f"Graphviz's `dot` did not finish drawing {fmt.upper()} in {timeout:g} s and was stopped; "
            "draw it collapsed (without --expand) or with a smaller --depth, or write DOT text with `-o FILE.dot`"
        ) from None
    except OSError as err:
        # Found but not runnable (permissions, a broken install): still the user's to fix.
        raise RenderError(f"cannot run Graphviz's `dot`: {err.strerror or err}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()
        raise RenderError(f"Graphviz's `dot` failed to draw {fmt.upper()}: {detail or f'exit status {done.returncode}'}")
    return done.stdout


def render(
    network: Network,
    path: str | Path,
    fmt: str | None = None,
    *,
    expand: bool = False,
    depth: int | None = None,
    rankdir: str = "TB",
    dpi: float | None = None,
) -> Path:
    """Draw `network` into `path` (format from `fmt` or the extension); return the path.

    `dpi` sets a PNG's resolution (Graphviz's default is 96; 192 doubles the pixels for
    slides). Raises ValueError for a bad format or dpi, RenderError when Graphviz is missing
    or the file cannot be written, and refuses to overwrite the network's own source file.
    """
    path = Path(path)
    fmt = format_for(path, fmt)
    check_dpi(dpi, fmt)
    source = network.filename
    if not source.startswith("<") and same_file(source, path):
        raise RenderError(f"refusing to overwrite the input file {source}; choose another output name")
    graph = build_graph(network, expand=expand, depth=depth, rankdir=rankdir)
    if dpi is not None:
        graph.attr(dpi=f"{dpi:g}")
    data = graph_bytes(graph, fmt)
    try:
        atomic_write(path, data)
    except OSError as err:
        raise RenderError(f"cannot write {path}: {err.strerror or err}") from None
    return path


# ---------------------------------------------------------------------------------------
# Jupyter


def notebook_svg(network: Network) -> str | None:
    """SVG text for Jupyter, or None when `dot` is missing (Jupyter then uses another repr)."""
    try:
        return graph_bytes(build_graph(network), "svg").decode("utf-8")
    except RenderError:
        return None


def notebook_html(network: Network) -> str:
    """The drawing inline, with the summary table folded underneath it."""
    svg = notebook_svg(network)
    if svg is None:
        picture = f"<p><i>{html.escape(INSTALL_HINT.format(fmt='the drawing'))}</i></p>"
    else:
        # An inline <svg> in HTML must not carry the XML prolog or the doctype.
        start = svg.find("<svg")
        picture = svg[start:] if start >= 0 else svg
    from .summary import warnings_html

    return (
        f'<div class="cnndsl-network">{warnings_html(network)}{picture}'
        f"<details><summary>{html.escape(repr(network))}</summary>{network.summary()._repr_html_()}</details></div>"
    )
