"""Drawings: the DOT built from the IR, the SVG/PNG/PDF that `dot` makes of it, `cnndsl render`,
the notebook representations, and the missing-`dot` path."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import graphviz
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli import main
from cnndsl.graph import RenderError, build_graph, format_for, graph_bytes, shape_text
from cnndsl.ir import Layer, Node, Sequence, walk
from cnndsl.layers import MergeKind
from cnndsl.network import Network

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "architectures"
SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

# Every construct a drawing has to show: a labelled group, a repeated group, a repeated
# layer, block calls (one with a Mul gate and an identity branch), Add with a projection
# shortcut, Concat with an empty branch, flatten, a labelled layer.
SMALL = """
network Small(classes=10)
input 3x32x32
defaults Conv(16, 3, pad=1, bias=false)
block SE(c) = Mul[ Identity | GlobalAvgPool, Conv(c // 4, 1, pad=0), ReLU, Conv(c, 1, pad=0), Sigmoid ]
block Res(c, s=1) = [ Add[ Conv(c, 3, stride=s), BN, ReLU, Conv(c, 3), BN | Conv(c, 1, stride=s, pad=0), BN ], ReLU ]
stem: [Conv, BN, ReLU]
Res(32, 2)
SE(32)
Concat[ Conv(8, 1, pad=0) | | MaxPool(3, stride=1, pad=1) ]
[Conv(24, 3), ReLU] x 2
Conv(24, 3) x 2
head: [GlobalAvgPool, flatten, Dropout(0.25), fc: FC(classes)]
"""


@dataclass
class Drawn:
    """What a reader sees in an SVG: the text of every node (keyed by its tooltip, the IR
    path, where it has one) and every edge label."""

    nodes: list[str]
    by_path: dict[str, str]
    edges: list[str]
    clusters: list[str]


def read_svg(svg: bytes | str) -> Drawn:
    root = ET.fromstring(svg.encode() if isinstance(svg, str) else svg)
    nodes, edges, clusters = [], [], []
    by_path: dict[str, str] = {}
    for group in root.iter(f"{SVG}g"):
        kind = group.get("class")
        if kind not in ("node", "edge", "cluster"):
            continue
        text = " ".join((t.text or "").strip() for t in group.iter(f"{SVG}text")).strip()
        if kind == "node":
            nodes.append(text)
            for link in group.iter(f"{SVG}a"):
                if link.get(XLINK_TITLE) is not None:
                    by_path[link.get(XLINK_TITLE)] = text
        elif kind == "edge":
            edges.append(text)
        else:
            clusters.append(text)
    return Drawn(nodes, by_path, edges, clusters)


def svg_of(network: Network, **options: object) -> Drawn:
    return read_svg(graph_bytes(build_graph(network, **options), "svg"))  # type: ignore[arg-type]


def count_text(n: int) -> str:
    return f"{n:,}" if n < 1_000_000 else f"{n / 1e6:.2f}M"


@pytest.fixture(scope="module")
def small() -> Network:
    return cnndsl.parse(SMALL, "small.cnn")


@pytest.fixture(scope="module")
def zoo() -> dict[str, Network]:
    # The drawings must work on the real zoo, so a missing file is a failure, not a skip.
    return {name: cnndsl.load(ZOO / f"{name}.cnn") for name in ("classic", "resnet18", "resnet50", "googlenet")}


def drawn_leaves(network: Network) -> list[Layer]:
    # An Identity is drawn as the edge it is (a shortcut), not as a box.
    return [layer for layer in network.layers if layer.kind.family != "identity"]


# -- expanded drawings -------------------------------------------------------------------


@needs_dot
def test_expanded_svg_has_every_leaf_with_its_description_and_params(small: Network) -> None:
    drawn = svg_of(small, expand=True)
    leaves = drawn_leaves(small)
    assert len(drawn.nodes) == len(leaves) + 2  # plus input and output
    for layer in leaves:
        text = drawn.by_path[layer.path]
        if isinstance(layer.kind, MergeKind):
            assert text == layer.kind.name
            continue
        assert layer.describe in text
        if layer.params:
            assert f"{count_text(layer.params)} params" in text
        else:
            assert "params" not in text
    assert any(t.startswith("input") and "3×32×32" in t for t in drawn.nodes)
    assert any(t.startswith("output") and t.endswith("10") for t in drawn.nodes)


@needs_dot
def test_edges_carry_the_shape_of_every_tensor(small: Network) -> None:
    drawn = svg_of(small, expand=True)
    labels = set(drawn.edges)
    assert "3×32×32" in labels
    for layer in drawn_leaves(small):
        assert shape_text(layer.out_shape) in labels, layer.path
    assert all(re.fullmatch(r"\d+(×\d+)*", label) for label in drawn.edges)
    assert "32×1×1" in labels and "24" in labels  # the SE gate; the flattened map


def test_merges_take_one_edge_per_branch_and_identity_is_a_plain_edge(small: Network) -> None:
    graph = build_graph(small, expand=True)
    source = graph.source
    ids = {m.group(2): m.group(1) for m in re.finditer(r"(n\d+) \[label=<<b>(Add|Concat|Mul)</b>>", source)}
    assert set(ids) == {"Add", "Concat", "Mul"}
    into = {op: len(re.findall(rf"-> {node_id} ", source)) for op, node_id in ids.items()}
    assert into == {"Add": 2, "Concat": 3, "Mul": 2}
    assert "Identity" not in source
    # Concat's empty branch: an edge straight from the block before it to the merge.
    concat = ids["Concat"]
    assert len(re.findall(rf'-> {concat} \[label=" 32×16×16"\]', source)) == 2


def test_labels_and_opened_blocks_are_clusters(small: Network) -> None:
    source = build_graph(small, expand=True).source
    clusters = re.findall(r"subgraph (cluster_\d+) \{\n\s*(.*)", source)
    titles = [re.search(r"label=<(.*?)> labeljust", attrs).group(1) for _, attrs in clusters]  # type: ignore[union-attr]
    assert "<b>stem</b>" in titles and "<b>head</b>" in titles
    assert "<b>Res(32, 2)</b>" in titles and "<b>SE(32)</b>" in titles
    assert titles.count("<b>×2</b>") == 2
    # The labelled layer keeps its label in its box.
    assert "<i>fc</i></font><br/><b>FC 10</b>" in source


# -- collapsed drawings and depth -------------------------------------------------------


def units(node: Node) -> list[Sequence]:
    """The outermost block calls and repetitions, in order: the boxes of a collapsed drawing."""
    if isinstance(node, Sequence) and node.role in ("block", "repeat"):
        return [node]
    return [unit for child in node.children_nodes() for unit in units(child)]


@needs_dot
def test_collapsed_resnet18_has_one_box_per_block_call_with_totals(zoo: dict[str, Network]) -> None:
    net = zoo["resnet18"]
    drawn = svg_of(net)
    boxes = units(net.root)
    assert len(boxes) == 7  # Basic(64) x 2, then Down and Basic per stage
    for box in boxes:
        text = drawn.by_path[box.path]
        layers = sum(1 for leaf in box.leaves() if leaf.kind.family != "identity")
        assert f"{layers} layers · {count_text(box.params)} params" in text
    assert "Basic(64) ×2" in drawn.by_path[boxes[0].path]
    assert "Down(128)" in drawn.by_path[boxes[1].path]
    inside = {leaf.path for box in boxes for leaf in box.leaves()}
    assert not inside & set(drawn.by_path), "a collapsed block's layers must not be drawn"
    # The stem (a labelled group, not a block) stays open: its layers are there.
    for layer in net.layers:
        if layer.path.startswith("stem."):
            assert layer.describe in drawn.by_path[layer.path]
    assert {"64×56×56", "128×28×28", "256×14×14", "512×7×7", "1000"} <= set(drawn.edges)


@needs_dot
def test_depth_opens_blocks_level_by_level(zoo: dict[str, Network]) -> None:
    net = zoo["resnet50"]
    texts = {depth: " | ".join(svg_of(net, depth=depth).nodes) for depth in (0, 1, 2)}
    assert "Stage(64, 3, stride=1)" in texts[0] and "Bottleneck" not in texts[0]
    # Depth 1 opens each Stage into its Down block and its repeated Bottleneck.
    assert "Stage(" not in texts[1]
    assert "Bottleneck(64) ×2" in texts[1] and "Bottleneck(256) ×5" in texts[1]
    assert "Down(64, 1)" in texts[1]
    # Depth 2 opens those too; the Residual blocks inside them stay boxes until depth 3.
    assert "Bottleneck(" not in texts[2] and "Residual(" in texts[2]
    assert len(svg_of(net, expand=True).nodes) == len(drawn_leaves(net)) + 2


@needs_dot
def test_big_networks_stay_legible_collapsed(zoo: dict[str, Network]) -> None:
    for name in ("resnet50", "googlenet"):
        drawn = svg_of(zoo[name])
        assert len(drawn.nodes) <= 30, f"{name}: {len(drawn.nodes)} boxes collapsed"
    google = " | ".join(svg_of(zoo["googlenet"]).nodes)
    assert google.count("Inception(") == 9
    for label in ("inception3a", "inception4e", "inception5b"):
        assert label in google


def test_repeated_group_and_layer_collapse_into_one_box(zoo: dict[str, Network]) -> None:
    source = build_graph(zoo["classic"]).source
    assert "[Conv 32 3x3 pad 1, ReLU, MaxPool 2x2 /2] ×2" in source
    assert "[FC 128, ReLU] ×2" in source
    assert source.count("shape=box3d") == 2


def test_every_zoo_network_draws(zoo: dict[str, Network]) -> None:
    # Pure Python: the DOT of every network in the zoo, collapsed and expanded, is well formed.
    for path in sorted(ZOO.glob("*.cnn")):
        net = cnndsl.load(path)
        for options in ({}, {"expand": True}):
            source = build_graph(net, **options).source  # type: ignore[arg-type]
            assert source.startswith("digraph ") and source.rstrip().endswith("}")
            assert source.count("{") == source.count("}")


def test_options_are_validated(small: Network) -> None:
    assert "rankdir=LR" in build_graph(small, rankdir="lr").source
    with pytest.raises(ValueError, match="rankdir"):
        build_graph(small, rankdir="BT-ish")
    with pytest.raises(ValueError, match="depth"):
        build_graph(small, depth=-1)
    assert format_for("a/net.SVG") == "svg" and format_for("net.gv") == "dot" and format_for("x", "PNG") == "png"
    with pytest.raises(ValueError, match="cannot tell the format"):
        format_for("net.jpg")


# -- golden DOT ---------------------------------------------------------------------------


def test_golden_dot_classic_expanded(zoo: dict[str, Network], golden: Callable[[str, str], None]) -> None:
    golden("graph_classic_expanded.dot", zoo["classic"].to_dot(expand=True).source)


def test_golden_dot_resnet18_collapsed(zoo: dict[str, Network], golden: Callable[[str, str], None]) -> None:
    golden("graph_resnet18.dot", zoo["resnet18"].to_dot().source)


# -- injection safety ---------------------------------------------------------------------

HOSTILE = [
    'x" ] ; evil [label="pwned',
    "a\\",
    "<b>bold</b> & <i>",
    'tail \\" ]; n0 -> n0; //',
    "line\nbreak\rand\ttab\x00",
    '"><svg onload=alert(1)>',
]


@pytest.mark.parametrize("hostile", HOSTILE)
@needs_dot
def test_user_text_cannot_inject_dot(small: Network, hostile: str) -> None:
    # The parser only accepts identifiers, but the IR is a public API: names set there must
    # come out as text, never as DOT or SVG syntax.
    net = cnndsl.parse(SMALL, "small.cnn")
    net.name = hostile
    for node, _ in walk(net.root):
        if isinstance(node, Sequence) and node.role == "block":
            node.title = hostile
        if node.label is not None or isinstance(node, Layer):
            node.label = hostile
        node.path = node.path + hostile  # a trailing backslash would eat a closing quote
    for options in ({}, {"expand": True}):
        clean = svg_of(small, **options)
        graph = build_graph(net, **options)  # type: ignore[arg-type]
        # The graph's name is reduced to an identifier; after it, nothing of the hostile text
        # may remain outside quoted strings and HTML labels.
        first, rest = graph.source.split("\n", 1)
        assert re.fullmatch(r"digraph \w+ \{", first)
        assert "evil" not in re.sub(r'"(?:[^"\\]|\\.)*"|<(?:[^<>]|<[^<>]*>)*>', "", rest)
        drawn = read_svg(graph_bytes(graph, "svg"))  # dot must accept it, and the SVG must parse
        assert len(drawn.nodes) == len(clean.nodes) and len(drawn.edges) == len(clean.edges)
        printable = re.sub(r"[\x00-\x1f]", " ", hostile)
        assert any(printable.strip() in text for text in drawn.nodes + drawn.clusters)


# -- the command line ---------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)


@needs_dot
def test_render_svg_png_pdf(tmp_path: Path) -> None:
    src = str(ZOO / "resnet18.cnn")
    for name, magic in (("net.png", b"\x89PNG\r\n\x1a\n"), ("net.pdf", b"%PDF-"), ("net.svg", b"<?xml")):
        result = run_cli("render", src, "-o", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_bytes().startswith(magic)
    drawn = read_svg((tmp_path / "net.svg").read_bytes())
    assert any("Basic(64) ×2" in t for t in drawn.nodes)
    # --format wins over the extension; no temporary files are left behind.
    assert run_cli("render", src, "-o", str(tmp_path / "net.img"), "--format", "png").exit_code == 0
    assert (tmp_path / "net.img").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.img", "net.pdf", "net.png", "net.svg"]


def test_render_dot_with_options(tmp_path: Path) -> None:
    out = tmp_path / "net.dot"
    out.write_text("old", encoding="utf-8")
    result = run_cli("render", str(ZOO / "classic.cnn"), "-o", str(out), "--rankdir", "LR", "--expand", "--input", "3x64x64")
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "rankdir=LR" in text and '" 3×64×64"' in text and '" 32×16×16"' in text
    result = run_cli("render", str(ZOO / "resnet50.cnn"), "-o", str(out), "--depth", "1", "--set", "num_classes=10")
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "Bottleneck(64) ×2" in text and '" 10"' in text
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600


def test_render_usage_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "net.cnn"
    src.write_text("input 3x8x8\nConv(4, 3)\n", encoding="utf-8")
    before = src.read_bytes()
    for args in (
        ["-o", str(tmp_path / "net.jpg")],
        ["-o", str(src), "--format", "dot"],
        ["-o", str(tmp_path / "x.svg"), "--expand", "--depth", "1"],
        ["-o", str(tmp_path / "x.svg"), "--rankdir", "BT"],
        ["-o", str(tmp_path / "x.svg"), "--depth", "-1"],
    ):
        result = run_cli("render", str(src), *args)
        assert result.exit_code == 2, (args, result.output)
    assert src.read_bytes() == before
    # A relative spelling of the same file is refused too.
    monkeypatch.chdir(tmp_path)
    assert run_cli("render", "net.cnn", "-o", "./net.cnn", "--format", "dot").exit_code == 2
    assert src.read_bytes() == before

    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x8x8\nConv(4, 30)\n", encoding="utf-8")
    result = run_cli("render", str(bad), "-o", str(tmp_path / "bad.dot"))
    assert result.exit_code == 1 and "error" in result.output and not (tmp_path / "bad.dot").exists()
    result = run_cli("render", str(src), "-o", str(tmp_path / "missing" / "x.dot"))
    assert result.exit_code == 1 and "cannot write" in result.output
    assert run_cli("render", str(tmp_path / "nope.cnn"), "-o", str(tmp_path / "x.dot")).exit_code == 1
    # Writing over a folder fails cleanly and leaves no temporary file behind.
    (tmp_path / "folder.dot").mkdir()
    result = run_cli("render", str(src), "-o", str(tmp_path / "folder.dot"))
    assert result.exit_code == 1 and "cannot write" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.cnn", "folder.dot", "net.cnn"]


# -- without Graphviz's dot -------------------------------------------------------------


def test_missing_dot_fails_clearly_but_dot_output_works(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    src = str(ZOO / "classic.cnn")
    for name in ("net.svg", "net.png", "net.pdf"):
        result = run_cli("render", src, "-o", str(tmp_path / name), env={"PATH": str(empty)})
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)
        assert "apt-get install graphviz" in result.output and "brew install graphviz" in result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / name).exists()
    result = run_cli("render", src, "-o", str(tmp_path / "net.dot"), env={"PATH": str(empty)})
    assert result.exit_code == 0
    assert (tmp_path / "net.dot").read_text(encoding="utf-8").startswith("digraph classic {")


def test_missing_dot_in_a_real_process(tmp_path: Path) -> None:
    # The installed entry point, with a PATH that holds no `dot`: one clear line, no traceback.
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "cnndsl", "render", str(ZOO / "classic.cnn"), "-o", str(tmp_path / "n.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "install graphviz" in proc.stderr.lower()


def test_executable_not_found_is_a_render_error(small: Network, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` there
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        graph_bytes(build_graph(small), "svg")
    assert graph_bytes(build_graph(small), "dot").startswith(b"digraph Small {")
    # Jupyter: no SVG (so it falls back), and the HTML says what to install under the table.
    assert small._repr_svg_() is None
    page = small._repr_html_()
    assert page is not None and "<svg" not in page and "install graphviz" in page.lower()
    assert "Total params" in page


# -- notebooks ----------------------------------------------------------------------------


@needs_dot
def test_notebook_reprs(small: Network) -> None:
    svg = small._repr_svg_()
    assert svg is not None
    drawn = read_svg(svg)
    assert any("SE(32)" in t for t in drawn.nodes)
    page = small._repr_html_()
    assert page is not None
    assert page.startswith('<div class="cnndsl-network"><svg') and "<?xml" not in page and "<!DOCTYPE" not in page
    assert "Total params" in page and "&lt;Network Small" in page
    # The page embeds valid SVG (the part between <svg and </svg>).
    read_svg(page[page.index("<svg") : page.index("</svg>") + 6])


def test_to_dot_returns_a_digraph(small: Network) -> None:
    graph = small.to_dot(depth=1, rankdir="LR")
    assert isinstance(graph, graphviz.Digraph)
    assert "Res(32, 2)" in graph.source and "rankdir=LR" in graph.source


def test_network_render_writes_atomically(small: Network, tmp_path: Path) -> None:
    out = small.render(tmp_path / "n.dot")
    assert out.read_text(encoding="utf-8") == build_graph(small).source
    with pytest.raises(ValueError):
        small.render(tmp_path / "n.bmp")
    net = cnndsl.load(ZOO / "classic.cnn")
    copy = tmp_path / "classic.cnn"
    copy.write_bytes((ZOO / "classic.cnn").read_bytes())
    net.filename = str(copy)
    with pytest.raises(RenderError, match="refusing to overwrite"):
        net.render(copy, "dot")
    assert copy.read_bytes() == (ZOO / "classic.cnn").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classic.cnn", "n.dot"]


def test_render_from_standard_input(tmp_path: Path) -> None:
    out = tmp_path / "net.dot"
    result = CliRunner().invoke(main, ["render", "-", "-o", str(out)], input="input 3x8x8\nConv(4, 3)\n")
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "<b>Conv 4 3x3</b>" in text and "1 layer</font>" in text  # the title counts one layer, in the singular


@needs_dot
def test_committed_figures_match_the_current_drawings() -> None:
    # The README shows docs/figures/*; they must be what docs/make_figures.py draws today.
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for stem, network, options in module.figures():
        figure = ROOT / "docs" / "figures" / stem
        assert figure.with_suffix(".png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        committed = read_svg(figure.with_suffix(".svg").read_bytes())
        current = svg_of(network, **options)
        assert sorted(committed.nodes) == sorted(current.nodes), f"{figure}.svg is stale: run python docs/make_figures.py"
        assert sorted(committed.edges) == sorted(current.edges), f"{figure}.svg is stale: run python docs/make_figures.py"


def test_broken_dot_programs_fail_with_a_message(tmp_path: Path) -> None:
    src = str(ZOO / "classic.cnn")
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "dot").write_text("#!/bin/sh\necho 'boom: out of memory' >&2\nexit 3\n", encoding="utf-8")
    (failing / "dot").chmod(0o755)
    result = run_cli("render", src, "-o", str(tmp_path / "a.svg"), env={"PATH": str(failing)})
    assert result.exit_code == 1 and "failed to draw SVG" in result.output and "boom: out of memory" in result.output
    unrunnable = tmp_path / "unrunnable"
    unrunnable.mkdir()
    (unrunnable / "dot").write_text("not a program\n", encoding="utf-8")
    (unrunnable / "dot").chmod(0o644)
    result = run_cli("render", src, "-o", str(tmp_path / "b.png"), env={"PATH": str(unrunnable)})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "cannot run Graphviz's `dot`" in result.output
    assert not (tmp_path / "a.svg").exists() and not (tmp_path / "b.png").exists()


@needs_dot
def test_svg_title_is_one_text_per_line_so_no_font_can_run_name_and_totals_together(tmp_path: Path) -> None:
    svg = ET.fromstring(graph_bytes(build_graph(cnndsl.load(ZOO / "lenet5.cnn")), "svg"))
    graph = svg.find(f"{SVG}g")
    assert graph is not None
    # The graph's own label: the <text> children of the top group, before any node or cluster.
    by_text = {(t.text or "").strip(): float(t.get("y", "0")) for t in graph.findall(f"{SVG}text")}
    assert "LeNet5" in by_text and "61,706 params · 416,520 MACs · 12 layers" in by_text
    assert by_text["LeNet5"] != by_text["61,706 params · 416,520 MACs · 12 layers"]  # two lines, not two runs on one
    assert len({round(y, 1) for y in by_text.values()}) == len(by_text)


@needs_dot
def test_png_scale_and_dpi(tmp_path: Path) -> None:
    def png_size(path: Path) -> tuple[int, int]:
        data = path.read_bytes()
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")

    src = str(ZOO / "lenet5.cnn")
    assert run_cli("render", src, "-o", str(tmp_path / "plain.png")).exit_code == 0
    assert run_cli("render", src, "-o", str(tmp_path / "slides.png"), "--scale", "2").exit_code == 0
    assert run_cli("render", src, "-o", str(tmp_path / "print.png"), "--dpi", "288").exit_code == 0
    plain, slides, printed = (png_size(tmp_path / f"{n}.png") for n in ("plain", "slides", "print"))
    assert abs(slides[0] - 2 * plain[0]) <= 2 and abs(printed[0] - 3 * plain[0]) <= 3
    result = run_cli("render", src, "-o", str(tmp_path / "a.svg"), "--dpi", "200")
    assert result.exit_code == 2 and "applies to PNG drawings only" in result.output
    result = run_cli("render", src, "-o", str(tmp_path / "a.png"), "--scale", "50")
    assert result.exit_code == 2 and "dpi must be between 1 and 1200" in result.output
    assert run_cli("render", src, "-o", str(tmp_path / "a.png"), "--scale", "2", "--dpi", "96").exit_code == 2


def test_render_without_output_writes_name_svg_beside_the_input(tmp_path: Path) -> None:
    src = tmp_path / "net.cnn"
    src.write_text("input 3x8x8\nConv(4, 3)\n")
    done = subprocess.run(
        [sys.executable, "-m", "cnndsl", "render", str(src), "--format", "dot"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "net.dot").read_text().startswith("digraph")
    assert done.stdout.strip() == f"wrote {tmp_path / 'net.dot'}"
    if shutil.which("dot") is not None:
        done = subprocess.run([sys.executable, "-m", "cnndsl", "render", str(src)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and (tmp_path / "net.svg").read_bytes().lstrip().startswith(b"<?xml")
    result = CliRunner().invoke(main, ["render", "-"], input="input 3x8x8\nConv(4, 3)\n")
    assert result.exit_code == 2 and "give -o OUT" in result.output


@pytest.mark.parametrize("expand", [False, True], ids=["collapsed", "expanded"])
def test_unet_draws_its_skip_connections_as_dashed_edges(expand: bool) -> None:
    """architectures/unet.cnn: each decoder level's Concat gets the skip of its encoder level as a dashed edge carrying
    the skip's shape, from the encoder's box (collapsed) or its last layer (expanded); every other edge is solid."""
    source = cnndsl.load(ZOO / "unet.cnn").to_dot(expand=expand).source
    tooltips = dict(re.findall(r'^\s*(n\d+) \[.*\btooltip="?([\w.]+)"?', source, re.MULTILINE))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+) \[label=\" ([^\"]+)\"(.*)\]$", source, re.MULTILINE)
    skips = [(tooltips[tail], tooltips[head], shape) for tail, head, shape, rest in edges if "style=dashed" in rest]
    last = "double_conv.relu2"  # the second ReLU of the level's DoubleConv (inside Down's)
    sources = [f"e4.{last}", f"e3.{last}", f"e2.{last}", "e1.relu2"] if expand else ["e4", "e3", "e2", "e1"]
    shapes = ["512×32×32", "256×64×64", "128×128×128", "64×256×256"]
    assert skips == [(tail, f"up{level}", shape) for tail, level, shape in zip(sources, (4, 3, 2, 1), shapes, strict=True)]
    assert len(edges) - len(skips) == (68 if expand else 19)  # a chain through every box (with input and output), one edge each
