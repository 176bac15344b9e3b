"""`cnndsl compile`: a checked network to PyTorch source, ONNX, and initial weights, written atomically."""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import error, needs_torch
from .files import Content, OutputConflict, refuse_inputs, write_outputs

if TYPE_CHECKING:
    from .network import Network

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


def export_onnx(network: Network, seed: int | None = None) -> bytes:
    """The network as an ONNX model (batch dimension dynamic), via torch.onnx.export.

    The TorchScript-based exporter comes first: it is deprecated but needs nothing beyond
    torch, and the tests cover it. The torch.export-based one (it needs onnxscript) is the
    fallback for PyTorch releases that have dropped the first.
    """
    torch = _require_torch(network, "the onnx target")
    module = network.to_torch(seed=seed).eval()
    example = torch.zeros(2, *network.input_shape)  # batch 2: a batch of 1 would be specialised
    names = {"input_names": ["input"], "output_names": ["output"]}
    errors: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice is not the user's concern
        try:
            buffer = io.BytesIO()
            torch.onnx.export(
                module, (example,), buffer, dynamo=False, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names
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
                    module, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), **names
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


def initial_weights(network: Network, seed: int | None) -> bytes:
    """`torch.save` of the freshly initialised module's state_dict (the generated class's keys)."""
    torch = _require_torch(network, "saving the initial weights (a torch state_dict)")
    buffer = io.BytesIO()
    torch.save(network.to_torch(seed=seed).state_dict(), buffer)
    return buffer.getvalue()


def compile_network(
    network: Network,
    target: Target = "torch",
    output: str | Path | None = None,
    weights_out: str | Path | None = None,
    seed: int | None = None,
    protected: list[str | Path] | None = None,
) -> str | None:
    """Compile for `target`: write `output` (or return the torch source when it is None) and `weights_out`.

    Nothing is written when anything fails; `protected` paths (the input file) are never overwritten.
    """
    refuse_overwrite([output, weights_out], list(protected or []))
    if target == "onnx" and output is None:
        raise error(
            "the onnx target writes a binary file and needs an output path", "for example: -o model.onnx", network.filename
        )
    if target == "torch":
        data = network.torch_source().encode("utf-8")
    elif target == "onnx":
        data = export_onnx(network, seed)
    else:
        raise error(f"unknown target {target!r}", "choose torch or onnx", network.filename)
    outputs: dict[str | Path, Content] = {}
    if weights_out is not None:
        outputs[weights_out] = initial_weights(network, seed)
    if output is not None:
        outputs[output] = data
    write_files(outputs)
    return data.decode("utf-8") if output is None else None
