"""The front end: source text (or a file, or a zoo name) to a checked `Network`.

The only module that drives the parser and the checker; `cnndsl.parse`, `cnndsl.load`
and `cnndsl.check_source` are its functions. Backends never import it: they read the IR.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import zoo
from .checker import Checker, Value
from .errors import CnnDslError, Diagnostic, DiagnosticSink, error
from .network import Network
from .parser import check_text, decode_source, parse_program, read_source_bytes
from .shapes import Shape


def coerce_input(value: Any) -> Shape | None:
    """`(3, 64, 64)`, `[3, 64, 64]`, `"3x64x64"` or a Shape to a Shape; None stays None."""
    if value is None or isinstance(value, Shape):
        return value
    if isinstance(value, str):
        return Shape.parse(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    problem = ValueError(f"input must be (C, H, W) or (N,) with positive integers; got {_short(value)}")
    if not isinstance(value, (tuple, list)):
        raise problem
    dims = tuple(value)
    if len(dims) not in (1, 3) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise problem
    return Shape(dims)


def _short(value: Any) -> str:
    """A value for a message: repr() of a huge int raises, and a huge list floods the screen."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a huge integer"
    if isinstance(value, (tuple, list)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value):,} items"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_short(v) for v in value)
        text = f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


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
    """Check a source text; return the network (None on error) and every diagnostic. Never raises CnnDslError.

    `source` is the text (str) or its UTF-8 bytes (bytes, bytearray or memoryview) and
    `filename` a str or path; anything else raises TypeError. Every problem with the text,
    `input` or `params` is a diagnostic.
    """
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if not isinstance(source, (str, bytes)):
        raise TypeError(f"the source must be str or bytes (the .cnn text); got {type(source).__name__}")
    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    if not isinstance(filename, str):
        raise TypeError(f"filename must be a str (used in messages); got {type(filename).__name__}")
    text = source if isinstance(source, str) else None
    sink = DiagnosticSink(filename, text or "")
    if isinstance(source, bytes):
        text = decode_source(source, sink)
        sink.text = text or sink.text
    elif not check_text(source, sink):
        text = None
    try:
        input_shape = coerce_input(input)
    except ValueError as err:  # Shape.parse and coerce_input say what is wrong
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
    return Network(
        result.name,
        result.input_shape,
        result.root,
        result.params,
        diagnostics,
        filename,
        text,
        result.outputs,
        result.structural,
        result.written_params,
        result.written_input,
    ), diagnostics


def parse(text: str | bytes, filename: str = "<string>", input: Any = None, *, strict: bool = False, **params: Value) -> Network:
    """Check `.cnn` source text; raise CnnDslError with every diagnostic if it has errors.

    TypeError when `text` is not str or bytes-like, or `filename` not a str or path (see check_source).
    """
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
        data = read_source_bytes(path)  # at most one byte over the size limit
    except OSError as err:
        hint = zoo.missing_hint(str(path)) if isinstance(err, FileNotFoundError) else None
        raise error(f"cannot read the file: {err.strerror or err}", hint, str(path)) from None
    return parse(data, str(path), input, strict=strict, **params)
