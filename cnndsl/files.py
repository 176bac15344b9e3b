"""Writing output files atomically: readers, and a run killed at any moment, see the old file
or the whole new one, never a torn one.

The data goes to a temporary file beside the target (`.NAME.XXXX.tmp`, so that `os.replace`
is a rename on one file system), is flushed and fsync'ed, gets the permissions a plain
`open()` would give, and is renamed over the target; the directory is fsync'ed so that the
rename itself survives a crash. On any failure or interruption the temporary file is removed.
`compile -o`, `render -o`, checkpoints and metrics all write through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | Path, content: bytes | Callable[[IO[bytes]], None]) -> None:
    """Write `content` (bytes, or a function that writes to a binary handle) to `path` atomically.

    Raises OSError (with the temporary file removed) when the file cannot be written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(folder)


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when `a` and `b` name one file (same real path, or hard links to it): outputs must never replace their input."""
    try:
        return os.path.realpath(a) == os.path.realpath(b) or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))
    except OSError:
        return False


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
