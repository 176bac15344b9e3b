"""The checked network: what `cnndsl.parse` and `cnndsl.load` return, and what backends read.

It imports no part of the front end (`cnndsl.frontend`, the parser, the checker), so a
backend that needs a `Network` does not load Lark and cannot call back into checking."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .errors import Diagnostic, SourceText, error
from .ir import Layer, Program, Reference, Sequence, program, walk
from .shapes import Shape, Sizes
from .summary import DEFAULT_COLUMNS, DEFAULT_DEPTH

if TYPE_CHECKING:
    import graphviz

    from .checker import Value
    from .numpy_backend import NumpyModel
    from .summary import Summary
    from .terms import NetworkTerms
    from .weights import WeightsSource


MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1
"""The seeds `torch.manual_seed` takes; the NumPy backend draws from the same generator (numpy_ops.TorchRandom)."""


@overload
def check_seed(seed: object, where: str | SourceText, optional: Literal[False] = False) -> int: ...
@overload
def check_seed(seed: object, where: str | SourceText, optional: bool) -> int | None: ...
def check_seed(seed: object, where: str | SourceText, optional: bool = False) -> int | None:
    """`seed` as an int in torch.manual_seed's range (MIN_SEED..MAX_SEED; NumPy integers too), None
    when `optional` allows it; anything else, which torch or NumPy would reject with an exception
    of their own, is a CnnDslError about `where`."""
    if seed is None and optional:
        return None
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = None
    if value is None or not MIN_SEED <= value <= MAX_SEED:
        shown = f"{seed!r}"[:40] if value is None or abs(value) < 10**30 else "a huge integer"
        raise error(
            f"the seed must be an integer from -2^63 to 2^64 - 1{' or None' if optional else ''}; got {shown}", where=where
        )
    return value


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
        outputs: list[Reference] | None = None,
        structural_parameters: frozenset[str] = frozenset(),
        written_parameters: Mapping[str, Value] | None = None,
        written_input: Shape | None = None,
    ) -> None:
        self.name = name
        self.input_shape = input_shape
        self.root = root
        self.parameters = dict(parameters)
        """The network parameters' values, after overrides."""
        self.diagnostics = diagnostics
        self.filename = filename
        self.source = source
        """The checked text: diagnostics quote its lines."""
        self.structural_parameters = structural_parameters
        """Parameters that the IR's expressions (`Network.terms`) cannot follow: they decide which
        layers exist (a repetition count) or another parameter's default."""
        self.written_parameters = dict(parameters if written_parameters is None else written_parameters)
        """The parameters' values as the source writes them (their defaults; one without a default is
        absent): with `parameters`, which ones a setting changed (cnndsl.weights_match)."""
        self.written_input = input_shape if written_input is None else written_input
        """The `input` line's shape, which an --input override may have replaced (equal to `input_shape` otherwise)."""
        self.layers: list[Layer] = list(root.leaves())
        self.outputs: list[Reference] | None = outputs
        """The `output` line's tensors, in order; None when the network returns its last element's."""
        self._program: Program | None = None

    @property
    def output_shape(self) -> Shape:
        """The (first) output's shape."""
        return self.output_shapes[0]

    @property
    def output_shapes(self) -> list[Shape]:
        """Every output's shape, in order (one, unless an `output` line lists several)."""
        return [ref.out_shape for ref in self.outputs] if self.outputs else [self.root.out_shape]

    @property
    def output_names(self) -> list[str]:
        """Every output's label (`output` for a network without an `output` line)."""
        return [ref.name for ref in self.outputs] if self.outputs else ["output"]

    @cached_property
    def is_graph(self) -> bool:
        """Whether the data flow leaves the tree: a reference (`@name`) or an `output` line."""
        return self.outputs is not None or any(isinstance(node, Reference) for node, _ in walk(self.root))

    @cached_property
    def reads_shapes(self) -> bool:
        """Whether a layer takes a size from another tensor (`Upsample(like=@x)`): a data edge outside
        the tree, which summaries and drawings show and no backend needs at run time (the size is static)."""
        return any(layer.arg_refs for layer in self.layers)

    @cached_property
    def terms(self) -> NetworkTerms:
        """How the network's parameters reach each layer and block call, over them alone (cnndsl.terms):
        composed from the terms the checker recorded (`Layer.terms`, `Sequence.call_terms`) on first use,
        not while checking. Empty for a network without parameters."""
        from .terms import NetworkTerms, network_terms

        return network_terms(self.root) if self.parameters else NetworkTerms({}, {})

    def program(self) -> Program:
        """The data flow as steps on registers, with the outputs' registers (see cnndsl.ir.program); made once."""
        if self._program is None:
            self._program = program(self.root, self.outputs)
        return self._program

    @property
    def params(self) -> int:
        return self.root.params

    @property
    def trainable_params(self) -> int:
        """Parameters that training updates: all of them, since the language cannot freeze one.

        What PyTorch does not train (BatchNorm's running statistics) are buffers, counted in
        `buffers`, not parameters. The count stays in the summary and the JSON, as torchinfo
        and Keras print it, and is where frozen layers would be subtracted.
        """
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
    def receptive_field(self) -> Sizes:
        return self.layers[-1].receptive_field

    @property
    def effective_stride(self) -> tuple[Fraction, ...]:
        return self.layers[-1].effective_stride

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

        `seed` (None, or an integer from -2^63 to 2^64 - 1, as `torch.manual_seed` takes) makes the initial weights reproducible
        without touching the global RNG, and equal to `to_numpy(seed=seed)`'s (None: PyTorch's
        default initialisation from the global RNG). `weights` (a .safetensors/.pt/.npz file, a
        training checkpoint or a state_dict; see cnndsl.weights) replaces them; when they carry
        the input normalisation they were trained with, the module applies it to its input
        first. Weights in another module's layout (a torchvision, timm or any other module of
        the same structure) are matched by structure (cnndsl.weights_match): the report is the
        module's `weights_report` (None for weights in cnndsl's layout); a disagreement is a
        CnnDslError unless `allow_partial`. Networks whose weights would need more than
        `max_bytes` (default `limits.MAX_WEIGHT_BYTES`) are refused with a CnnDslError before
        anything is allocated, and so is a seed out of range.
        """
        from .torch_backend import build_module

        check_seed(seed, self.filename, optional=True)

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
        report is the model's `weights_report`. Needs no torch (except to read .pt files).

        `seed` is an integer from -2^63 to 2^64 - 1 and `dtype` a NumPy floating-point type; other
        values raise CnnDslError."""
        from .numpy_backend import NumpyModel

        check_seed(seed, self.filename)

        return NumpyModel(self, state_dict, seed=seed, dtype=dtype, allow_partial=allow_partial)

    def __repr__(self) -> str:
        return (
            f"<Network {self.name}: {self.input_shape} -> {self.output_shape}, {self.params:,} params, {len(self.layers)} layers>"
        )
