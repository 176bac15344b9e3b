"""Diagnostics: positioned errors and warnings, and the exception that carries them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

Severity = Literal["error", "warning"]


class Position(NamedTuple):
    """A 1-based line and column in a source file."""

    line: int
    column: int


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a source file."""

    severity: Severity
    message: str
    position: Position | None = None
    hint: str | None = None
    notes: tuple[str, ...] = ()
    filename: str = "<string>"
    source_line: str | None = None

    def format(self, color: bool = False) -> str:
        """Render as `FILE:LINE:COL: severity: message`, the source line, a caret and hints."""
        where = self.filename
        if self.position is not None:
            where += f":{self.position.line}:{self.position.column}"
        sev: str = self.severity
        if color:
            code = "31" if sev == "error" else "33"
            sev = f"\x1b[1;{code}m{sev}\x1b[0m"
            where = f"\x1b[1m{where}\x1b[0m"
        lines = [f"{where}: {sev}: {self.message}"]
        if self.source_line is not None and self.position is not None:
            text, caret_at = _excerpt(self.source_line.expandtabs(1), self.position.column - 1)
            lines.append(f"    {text}")
            lines.append("    " + " " * caret_at + "^")
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_json(self) -> dict[str, object]:
        """The diagnostic as docs/LANGUAGE.md's machine-readable schema, with hint and notes."""
        return {
            "severity": self.severity,
            "line": self.position.line if self.position else 0,
            "column": self.position.column if self.position else 0,
            "message": self.message,
            "hint": self.hint,
            "notes": list(self.notes),
        }


EXCERPT_WIDTH = 100


def _excerpt(line: str, index: int) -> tuple[str, int]:
    """At most EXCERPT_WIDTH characters of a long line around `index`, and the caret's offset in them."""
    if len(line) <= EXCERPT_WIDTH:
        return line, index
    start = max(0, min(index - EXCERPT_WIDTH // 2, len(line) - EXCERPT_WIDTH))
    text = line[start : start + EXCERPT_WIDTH]
    prefix = "..." if start > 0 else ""
    suffix = "..." if start + EXCERPT_WIDTH < len(line) else ""
    return prefix + text + suffix, index - start + len(prefix)


class CnnDslError(Exception):
    """Raised for any problem in a .cnn program; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(self.format())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def format(self, color: bool = False) -> str:
        return "\n".join(d.format(color) for d in self.diagnostics)

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this exception in a notebook: the diagnostics, without a
        traceback through cnndsl's internals (the mistake is in the .cnn text, not there)."""
        errors = len(self.errors)
        title = f"CnnDslError: {errors} error{'s' if errors != 1 else ''}" if errors else "CnnDslError"
        # Notebooks render ANSI colours in tracebacks; NO_COLOR turns them off as on a terminal.
        return [title, *self.format(color="NO_COLOR" not in os.environ).splitlines()]


class TooManyErrors(Exception):
    """The sink reached its `max_errors`: the last diagnostic says so; stop checking."""


@dataclass
class DiagnosticSink:
    """Collects diagnostics for one source text, each location reported once."""

    filename: str
    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    max_errors: int | None = None
    """When set, the error after this many is replaced by a "too many errors" one and TooManyErrors is raised."""
    _seen: set[tuple[int, int, str]] = field(default_factory=set)
    _lines: list[str] | None = None
    _error_count: int = 0

    def source_line(self, line: int) -> str | None:
        if self._lines is None:
            self._lines = self.text.splitlines()
        if 1 <= line <= len(self._lines):
            return self._lines[line - 1]
        return None

    def add(
        self,
        severity: Severity,
        message: str,
        position: Position | None,
        hint: str | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        key = (position.line, position.column, severity) if position else (0, 0, message)
        if key in self._seen:
            return
        self._seen.add(key)
        if severity == "error":
            self._error_count += 1
            if self.max_errors is not None and self._error_count > self.max_errors:
                self._append("error", f"too many errors; stopping after {self.max_errors}", position, "fix these first", ())
                raise TooManyErrors
        self._append(severity, message, position, hint, notes)

    def _append(
        self, severity: Severity, message: str, position: Position | None, hint: str | None, notes: Iterable[str]
    ) -> None:
        self.diagnostics.append(
            Diagnostic(
                severity,
                message,
                position,
                hint,
                tuple(notes),
                self.filename,
                self.source_line(position.line) if position else None,
            )
        )

    def error(self, message: str, position: Position | None, hint: str | None = None, notes: Iterable[str] = ()) -> None:
        self.add("error", message, position, hint, notes)

    def warning(self, message: str, position: Position | None, hint: str | None = None, notes: Iterable[str] = ()) -> None:
        self.add("warning", message, position, hint, notes)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


class SourceText(Protocol):
    """A checked text, such as a Network: errors about it quote its lines."""

    filename: str
    source: str


def error(
    message: str, hint: str | None = None, where: str | SourceText = "<string>", position: Position | None = None
) -> CnnDslError:
    """The one way to build an error outside the checker's sink.

    `where` is what the error is about: the name of a file or an option (`--data`), or a
    checked network, whose line at `position` the diagnostic quotes with a caret.
    """
    if isinstance(where, str):
        return CnnDslError([Diagnostic("error", message, position, hint, (), where)])
    sink = DiagnosticSink(where.filename, where.source)
    sink.error(message, position, hint)
    return CnnDslError(sink.diagnostics)


TORCH_INSTALL = "pip install 'cnndsl[torch]'"


def needs_torch(what: str, where: str | SourceText, instead: str | None = None) -> CnnDslError:
    """The one "needs PyTorch" error: `what` cannot be done without it; `instead` is a way around, if any."""
    hint = f"{TORCH_INSTALL}, or {instead}" if instead else TORCH_INSTALL
    return error(f"{what} needs PyTorch, which is not installed", hint, where)


def use_color(stream: object = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ
