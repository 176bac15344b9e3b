"""The checked network: what `cnndsl.parse` and `cnndsl.load` return, and what backends read."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import zoo
from .checker import Checker, Value
from .errors import CnnDslError, Diagnostic, DiagnosticSink
from .ir import Layer, Sequence
from .parser import check_text, decode_source, parse_program
from .shapes import Pair, Shape
from .summary import DEFAULT_COLUMNS, DEFAULT_DEPTH

if TYPE_CHECKING:
    import graphviz

    from .numpy_backend import NumpyModel
    from .summary import Summary
    from .weights import WeightsSource


class Network:
    """A checked network: shapes, counts and the IR tree, with every leaf in execution order."""

    def __init__(
        self,
        name: str,
        input_shape: Shape,
        root: Sequence,
        parameters: Mapping[str, Value],
        diagnostics: list[Diagnostic],
        filename: str,
        source: str = "",
    ) -> None:
        self.name = name
        self.input_shape = input_shape
        self.root = root
        self.parameters = dict(parameters)
        """The network parameters' values, after overrides."""
        self.diagnostics = diagnostics
        self.filename = filename
        self.source = source
        """The checked text: diagnostics quote its lines, and code generation re-checks it
        with other parameter values to see how each parameter reaches the layers."""
        self.layers: list[Layer] = list(root.leaves())

    @property
    def output_shape(self) -> Shape:
        return self.root.out_shape

    @property
    def params(self) -> int:
        return self.root.params

    @property
    def trainable_params(self) -> int:
        # Every parameter of the v1 layers is trainable; BatchNorm statistics are buffers.
        return self.root.params

    @property
    def buffers(self) -> int:
        return self.root.buffers

    @property
    def macs(self) -> int:
        return self.root.macs

    @property
    def activation_bytes(self) -> int:
        """float32 bytes of the input and of every leaf's output that is not a view, batch 1."""
        return 4 * (self.input_shape.numel + sum(layer.activation_elements for layer in self.layers))

    @property
    def receptive_field(self) -> Pair:
        return self.layers[-1].receptive_field

    @property
    def effective_stride(self) -> Pair:
        return self.layers[-1].jump

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def summary(self, depth: int | None = DEFAULT_DEPTH, columns: Iterable[str] = DEFAULT_COLUMNS) -> Summary:
        """The torchinfo-like table with totals, as `cnndsl check` prints it.

        Containers (block calls, repetitions, labelled groups, merges) deeper than `depth`
        fold into one row with their totals (None: every layer). `columns` chooses among
        input, output, params, macs, rf (receptive field) and kernel. The result is the text
        (a `str`); Jupyter displays it as an HTML table.
        """
        from .summary import Summary

        return Summary(self, depth, tuple(columns))

    def to_json(self) -> dict[str, Any]:
        """docs/LANGUAGE.md's machine-readable schema (with a few extra fields)."""
        from .summary import network_json

        return network_json(self)

    def to_dot(self, expand: bool = False, depth: int | None = None, rankdir: str = "TB") -> graphviz.Digraph:
        """The drawing as a `graphviz.Digraph`: one box per block call and repetition unless
        `depth` opens blocks that deep or `expand` draws every layer."""
        from .graph import build_graph

        return build_graph(self, expand=expand, depth=depth, rankdir=rankdir)

    def render(
        self,
        path: str | Path,
        format: str | None = None,
        *,
        expand: bool = False,
        depth: int | None = None,
        rankdir: str = "TB",
        dpi: float | None = None,
    ) -> Path:
        """Draw into `path` (.svg, .png, .pdf or .dot, or `format`); SVG/PNG/PDF need Graphviz's `dot`.
        `dpi` sets a PNG's resolution (Graphviz's default 96; 192 for slides)."""
        from .graph import render

        return render(self, path, format, expand=expand, depth=depth, rankdir=rankdir, dpi=dpi)

    def _repr_svg_(self) -> str | None:
        # Jupyter shows this without extra calls; None (no `dot`, or no graphviz package)
        # lets it fall back to another representation instead of showing a traceback.
        try:
            from .graph import notebook_svg
        except ImportError:
            return None
        return notebook_svg(self)

    def _repr_html_(self) -> str:
        """The warnings, the drawing and the summary table folded under them (Jupyter prefers
        this to the SVG); without the graphviz package, the warnings and the table."""
        try:
            from .graph import notebook_html
        except ImportError:
            from .summary import warnings_html

            return f'<div class="cnndsl-network">{warnings_html(self)}{self.summary()._repr_html_()}</div>'
        return notebook_html(self)

    def to_torch(
        self,
        seed: int | None = None,
        max_bytes: int | None = None,
        weights: WeightsSource | None = None,
        allow_partial: bool = False,
    ) -> Any:
        """The network as a `torch.nn.Module` whose state_dict keys follow the layer paths.

        `seed` makes the initial weights reproducible without touching the global RNG, and
        equal to `to_numpy(seed=seed)`'s (None: PyTorch's default initialisation from the
        global RNG). `weights` (a .safetensors/.pt/.npz file, a training checkpoint or a
        state_dict; see cnndsl.weights) replaces them; when they carry the input
        normalisation they were trained with, the module applies it to its input first.
        Weights in another module's layout (a torchvision, timm or any other module of the
        same structure) are matched by structure (cnndsl.weights_match): the report is the
        module's `weights_report` (None for weights in cnndsl's layout); a disagreement is a
        CnnDslError unless `allow_partial`.
        Networks whose weights would need more than `max_bytes` (default
        `limits.MAX_WEIGHT_BYTES`) are refused with a CnnDslError before anything is allocated.
        """
        from .torch_backend import build_module

        return build_module(self, seed=seed, max_bytes=max_bytes, weights=weights, allow_partial=allow_partial)

    def torch_source(self) -> str:
        """One standalone Python file (it imports only torch) that defines the network as an nn.Module class."""
        from .codegen_torch import generate_source

        return generate_source(self)

    def to_numpy(
        self, state_dict: WeightsSource | None = None, seed: int = 0, dtype: Any = "float32", allow_partial: bool = False
    ) -> NumpyModel:
        """The network as a NumPy model (forward, backward, SGD), initialised as `to_torch(seed=seed)`
        is, or from `state_dict`: a mapping (keys and shapes as `to_torch().state_dict()`) or a
        weights file (see cnndsl.weights), whose input normalisation, if any, the model applies.
        Weights in another module's layout are matched by structure, as in `to_torch`; the
        report is the model's `weights_report`. Needs no torch (except to read .pt files)."""
        from .numpy_backend import NumpyModel

        return NumpyModel(self, state_dict, seed=seed, dtype=dtype, allow_partial=allow_partial)

    def __repr__(self) -> str:
        return (
            f"<Network {self.name}: {self.input_shape} -> {self.output_shape}, {self.params:,} params, {len(self.layers)} layers>"
        )


def coerce_input(value: Any) -> Shape | None:
    """`(3, 64, 64)`, `[3, 64, 64]`, `"3x64x64"` or a Shape to a Shape; None stays None."""
    if value is None or isinstance(value, Shape):
        return value
    if isinstance(value, str):
        return Shape.parse(value)
    if isinstance(value, int):
        value = (value,)
    dims = tuple(value)
    if len(dims) not in (1, 3) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"input must be (C, H, W) or (N,) with positive integers; got {value!r}")
    return Shape(dims)


def _default_name(filename: str) -> str:
    stem = Path(filename).stem if not filename.startswith("<") else "Network"
    return re.sub(r"\W", "_", stem) or "Network"


def check_source(
    source: str | bytes,
    filename: str = "<string>",
    input: Any = None,
    params: Mapping[str, Value] | None = None,
    strict: bool = False,
) -> tuple[Network | None, list[Diagnostic]]:
    """Check a source text; return the network (None on error) and every diagnostic. Never raises CnnDslError."""
    text = source if isinstance(source, str) else None
    sink = DiagnosticSink(filename, text or "")
    if isinstance(source, bytes):
        text = decode_source(source, sink)
        sink.text = text or sink.text
    elif not check_text(source, sink):
        text = None
    try:
        input_shape = coerce_input(input)
    except ValueError as err:
        sink.error(f"bad input shape: {err}", None, "give it as CxHxW, for example 3x224x224")
        input_shape = None
    if text is None or sink.has_errors:
        return None, sink.diagnostics
    program = parse_program(text, sink)
    if program is None:
        return None, sink.diagnostics
    checker = Checker(program, sink, input_shape, params, strict, _default_name(filename))
    result = checker.run()
    diagnostics = sorted(sink.diagnostics, key=lambda d: (d.position.line, d.position.column) if d.position else (0, 0))
    if result is None or sink.has_errors:
        return None, diagnostics
    network = Network(result.name, result.input_shape, result.root, result.params, diagnostics, filename, text)
    return network, diagnostics


def parse(text: str | bytes, filename: str = "<string>", input: Any = None, *, strict: bool = False, **params: Value) -> Network:
    """Check `.cnn` source text; raise CnnDslError with every diagnostic if it has errors."""
    network, diagnostics = check_source(text, filename, input, params, strict)
    if network is None:
        raise CnnDslError(diagnostics)
    return network


def load(path: str | Path, input: Any = None, *, strict: bool = False, **params: Value) -> Network:
    """Read and check a `.cnn` file or a zoo network by name (`"resnet50"`); raise CnnDslError on errors.

    A path that exists wins over a zoo name.
    """
    path = zoo.find(str(path)) or Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        hint = zoo.missing_hint(str(path)) if isinstance(err, FileNotFoundError) else None
        raise CnnDslError(
            [Diagnostic("error", f"cannot read the file: {err.strerror or err}", None, hint, (), str(path))]
        ) from None
    return parse(data, str(path), input, strict=strict, **params)
