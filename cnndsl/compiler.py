"""`cnndsl compile`: a checked network to PyTorch source, ONNX, and initial weights, written atomically."""

from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import error, needs_torch
from .files import Content, OutputConflict, refuse_inputs, write_outputs
from .weights import Weights, WeightsSource, format_for, read_weights, weights_content

if TYPE_CHECKING:
    from .network import Network
    from .weights_match import MatchReport

Target = Literal["torch", "onnx"]


def write_files(outputs: dict[str | Path, Content]) -> None:
    """Write every output of the command together (all or none), or raise a CnnDslError naming the failure."""
    try:
        write_outputs(outputs)
    except OSError as err:
        where = err.filename or ", ".join(str(p) for p in outputs)
        raise error(f"cannot write {where}: {err.strerror or err}", where=str(where)) from None


def refuse_overwrite(outputs: list[str | Path | None], protected: list[str | Path]) -> None:
    """Refuse to write over a protected (input) file, or to write two outputs to one path."""
    try:
        refuse_inputs(outputs, protected)
    except OutputConflict as err:
        raise error(str(err), "choose another output path", "cnndsl") from None


def export_onnx(
    network: Network,
    seed: int | None = None,
    weights: Weights | None = None,
    opset: int | None = None,
    allow_partial: bool = False,
) -> bytes:
    """The network as an ONNX model (batch dimension dynamic), via torch.onnx.export; `opset` None: torch's default.

    The initializers are named by the module's state_dict keys: the module's eval mode is
    exported as it is (`TrainingMode.PRESERVE`), not as `EVAL`, whose peephole pass folds each
    BatchNorm into its convolution under a generated name; BatchNorm runs on its running
    statistics either way. (Tensors with equal values share one initializer, aliased by
    Identity nodes: untrained BatchNorm's ones and zeros.)

    The TorchScript-based exporter comes first: it is deprecated but needs nothing beyond
    torch, and the tests cover it. The torch.export-based one (it needs onnxscript) is the
    fallback for PyTorch releases that have dropped the first.
    """
    torch = _require_torch(network, "the onnx target")
    module = network.to_torch(seed=seed, weights=weights, allow_partial=allow_partial).eval()
    example = torch.zeros(2, *network.input_shape)  # batch 2: a batch of 1 would be specialised
    # One graph output per network output, named by its label (`output` without an `output` line).
    outputs = [name if name != "input" else "input_output" for name in network.output_names]
    names = {"input_names": ["input"], "output_names": outputs}
    errors: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice is not the user's concern
        try:
            buffer = io.BytesIO()
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                dynamic_axes={name: {0: "batch"} for name in ["input", *outputs]},
                opset_version=opset,
                training=torch.onnx.TrainingMode.PRESERVE,
                **names,
            )
            return buffer.getvalue()
        except Exception as err:  # exporter failures come in many types; each becomes one message
            errors.append(_first_line(err))
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            errors.append("the torch.export-based exporter needs the onnxscript package")
        else:
            try:
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=opset,
                    do_constant_folding=False,
                    **names,
                )
                with tempfile.TemporaryDirectory() as folder:
                    target = Path(folder) / "model.onnx"
                    program.save(str(target))
                    return target.read_bytes()
            except Exception as err:
                errors.append(_first_line(err))
    raise error(f"ONNX export failed: {'; '.join(errors)}", "the torch target (`--target torch`) still works", network.filename)


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _require_torch(network: Network, what: str) -> Any:
    try:
        import torch
    except ImportError:
        raise needs_torch(what, network.filename) from None
    return torch


def module_weights(
    network: Network, seed: int | None, weights: Weights | None, allow_partial: bool = False
) -> tuple[dict[str, Any], MatchReport | None]:
    """The state_dict the generated class loads (its keys): `weights`, checked against the network (matched by
    structure when they are in another module's layout: the report), or seeded initial ones."""
    _require_torch(network, "writing the weights")
    module = network.to_torch(seed=seed, weights=weights, allow_partial=allow_partial)
    return dict(module.state_dict()), getattr(module, "weights_report", None)


@dataclass
class Compiled:
    """What `compile_network` made besides its files."""

    source: str | None
    """The torch source when no output path was given."""
    report: MatchReport | None = None
    """How weights in another module's layout were matched by structure (cnndsl.weights_match)."""


def compile_network(
    network: Network,
    target: Target = "torch",
    output: str | Path | None = None,
    weights_out: str | Path | None = None,
    seed: int | None = None,
    protected: list[str | Path] | None = None,
    weights: WeightsSource | None = None,
    allow_partial: bool = False,
    weights_layout: str | None = None,
    opset: int | None = None,
) -> Compiled:
    """Compile for `target`: write `output` (or return the torch source when it is None) and `weights_out`.

    `weights` (trained weights, see cnndsl.weights; in another module's layout they are
    matched by structure, see cnndsl.weights_match) are checked against the network; the
    input normalisation stored with them becomes the module's first step (in the source,
    and in the ONNX graph, whose initializers are named by the state_dict keys; `opset`
    chooses its version), and `weights_out` gets them instead of initial weights. It is a
    state_dict file whose format follows its suffix (.safetensors, .pt, .npz; any other:
    .safetensors), keyed as the generated class's state_dict or, with `weights_layout` (a
    template: weights file or module:callable), as the template's. Nothing is written when
    anything fails; `protected` paths (the input file) are never overwritten.
    """
    refuse_overwrite([output, weights_out], [*(protected or []), *([weights] if isinstance(weights, (str, Path)) else [])])
    loaded = read_weights(weights) if weights is not None else None
    if loaded is not None and loaded.preprocess is not None:
        loaded.preprocess.check_for(network, loaded.source)
    if target == "onnx" and output is None:
        raise error(
            "the onnx target writes a binary file and needs an output path", "for example: -o model.onnx", network.filename
        )
    # Built first when there are weights: it checks them against the network before anything is written.
    state, report = (
        module_weights(network, seed, loaded, allow_partial) if weights_out is not None or loaded is not None else (None, None)
    )
    if target == "torch":
        from .codegen_torch import generate_source

        data = generate_source(network, loaded.preprocess if loaded is not None else None).encode("utf-8")
    elif target == "onnx":
        data = export_onnx(network, seed, loaded, opset, allow_partial)
    else:
        raise error(f"unknown target {target!r}", "choose torch or onnx", network.filename)
    outputs: dict[str | Path, Content] = {}
    if weights_out is not None and state is not None:
        if weights_layout is not None:
            from .weights_match import to_layout

            state, _ = to_layout(network, state, weights_layout, allow_partial)
        outputs[weights_out] = weights_content(state, None, format_for(weights_out, default="safetensors"), str(weights_out))
    if output is not None:
        outputs[output] = data
    write_files(outputs)
    return Compiled(data.decode("utf-8") if output is None else None, report)
