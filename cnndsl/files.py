"""The one writer of output files, and the rules every output follows.

- Atomic: readers, and a run killed at any moment, see the old file or the whole new one,
  never a torn one. The data goes to a temporary file beside the target (`.NAME.XXXX.tmp`,
  so that `os.replace` is a rename on one file system), is flushed and fsync'ed, and is
  renamed over the target; the directory is fsync'ed so that the rename itself survives a
  crash. On any failure or interruption the temporary file is removed.
- What the user pointed at: a symbolic link is followed and its target replaced (the link
  stays a link); an existing file keeps its permission bits (and, where allowed, its owner);
  a new one gets what a plain `open()` would give. Something that is not a regular file and
  cannot be replaced by one (a character device such as /dev/null, a FIFO, a pipe such as
  /dev/stdout) is written through, not replaced; a directory, block device or socket is refused.
- Together: `write_outputs` stages every file of a command before renaming any, so a
  command that writes several files leaves all of them or none (D16).
- Never over an input: `refuse_inputs` compares outputs with every input of the command
  (by device and inode, so hard links and symbolic links are caught too).

`compile -o`, `compile --weights-out`, `render -o`, `run -o`, checkpoints and metrics all
write through here.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

Content = bytes | Callable[[IO[bytes]], None]
"""What to write: bytes, or a function that writes to a binary handle."""


class OutputConflict(ValueError):
    """An output would replace an input of the same command, or two outputs name one file."""


def atomic_write(path: str | Path, content: Content) -> None:
    """Write `content` (bytes, or a function that writes to a binary handle) to `path` atomically.

    Raises OSError (with the temporary file removed) when the file cannot be written.
    """
    write_outputs({path: content})


@dataclass
class _Staged:
    """One output of `write_outputs` on its way: where it goes and, for regular files, its temporary file."""

    target: Path
    content: Content
    temporary: Path | None = None
    backup: Path | None = None
    existed: bool = False


def write_outputs(outputs: Mapping[str | Path, Content]) -> None:
    """Write several outputs as one: every file is complete and fsync'ed before any is renamed into place.

    On failure no output is left half-written: temporaries are removed, and files already
    renamed when a later rename fails are put back as they were. Raises OSError.
    """
    staged = [_Staged(_writable_target(Path(path)), content) for path, content in outputs.items()]
    regular = [item for item in staged if not _is_write_through(item.target)]
    through = [item for item in staged if _is_write_through(item.target)]
    try:
        for item in regular:
            with _naming(item.target):
                item.temporary = _stage(item.target, item.content)
        # Devices and pipes cannot be staged: written after every file is safely staged,
        # so that a failure here (ENOSPC from /dev/full) still leaves no file behind.
        for item in through:
            with _naming(item.target):
                _write_through(item.target, item.content)
        _commit(regular)
    except BaseException:
        for item in regular:
            if item.temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(item.temporary)
        raise
    for folder in {item.target.parent for item in regular}:
        _fsync_directory(folder)


@contextlib.contextmanager
def _naming(target: Path) -> Iterator[None]:
    """OSErrors raised while writing `target` name the output, not its temporary file (`err.filename`)."""
    try:
        yield
    except OSError as err:
        if err.filename == str(target) or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(target)) from err


def _writable_target(path: Path) -> Path:
    """The path to write: symbolic links followed to their target; refuses what cannot hold a file's bytes."""
    try:
        info = os.stat(path)  # follows links, also /proc's (/dev/stdout -> pipe:[N])
    except FileNotFoundError:
        # A new file, or a dangling link: the link's target is created, the link kept.
        return Path(os.path.realpath(path)) if os.path.islink(path) else path
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISREG(info.st_mode):
        return Path(os.path.realpath(path))
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
        return path
    raise OSError(f"{path} is not a regular file, character device or pipe; refusing to write to it")


def _is_write_through(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _write_through(path: Path, content: Content) -> None:
    # Writers such as numpy.save and torch.save ask for the position or seek, which a pipe
    # cannot do: they write to memory first. O_TRUNC means nothing to a device or a pipe.
    if not isinstance(content, bytes):
        buffer = io.BytesIO()
        content(buffer)
        content = buffer.getvalue()
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()


def _fill(handle: IO[bytes], content: Content) -> None:
    if isinstance(content, bytes):
        handle.write(content)
    else:
        content(handle)


def _stage(target: Path, content: Content) -> Path:
    """Write `content` to a temporary file beside `target` with the target's permissions; return its path."""
    folder = target.parent if str(target.parent) else Path(".")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            _fill(handle, content)
            handle.flush()
            os.fsync(handle.fileno())
            _copy_permissions(handle.fileno(), target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


def _copy_permissions(fd: int, target: Path) -> None:
    """The replaced file's mode and owner, or what a plain open() gives a new file (mkstemp makes it 0600)."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        return
    if hasattr(os, "fchown"):
        with contextlib.suppress(OSError):  # only root may give a file away; others keep their own
            os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))  # after chown, which may clear set-id bits


def _commit(items: list[_Staged]) -> None:
    """Rename every staged file into place; if one rename fails, undo the ones before it."""
    if len(items) > 1:
        # Keep the old versions reachable until every rename succeeded, so they can be put back.
        for item in items:
            item.existed = item.target.exists()
            if item.existed:
                backup = Path(f"{item.temporary}.old")
                try:
                    os.link(item.target, backup)
                    item.backup = backup
                except OSError:  # no hard links on this file system: that file cannot be put back
                    pass
    done: list[_Staged] = []
    try:
        for item in items:
            assert item.temporary is not None
            os.replace(item.temporary, item.target)
            item.temporary = None
            done.append(item)
    except BaseException:
        for item in done:
            with contextlib.suppress(OSError):
                if item.backup is not None:
                    os.replace(item.backup, item.target)
                    item.backup = None
                elif not item.existed:
                    os.unlink(item.target)
        raise
    finally:
        for item in items:
            if item.backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(item.backup)


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when `a` and `b` name one file (same device and inode, or the same real path when `b` does not exist yet)."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def refuse_inputs(outputs: Iterable[str | Path | None], inputs: Iterable[str | Path | None]) -> None:
    """Raise OutputConflict when an output is one of the inputs, or two outputs coincide.

    `-` and names in angle brackets (`<stdin>`) are not files and are skipped; so are None
    entries, and outputs that are devices or pipes (/dev/null twice is no conflict).
    """
    real_inputs = [Path(p) for p in inputs if p is not None and _is_path(p)]
    seen: dict[str, str] = {}
    for output in outputs:
        if output is None or not _is_path(output) or _is_write_through(Path(output)):
            continue  # a device or a pipe is written through: nothing there can be overwritten
        for source in real_inputs:
            if same_file(source, output):
                raise OutputConflict(f"refusing to overwrite the input file {source} with the output {output}")
        resolved = os.path.realpath(output)
        if resolved in seen or any(same_file(other, output) for other in seen.values()):
            first = seen.get(resolved) or next(other for other in seen.values() if same_file(other, output))
            raise OutputConflict(f"{first} and {output} are the same file; give each output its own path")
        seen[resolved] = str(output)


def _is_path(value: str | Path) -> bool:
    text = str(value)
    return text != "-" and not (text.startswith("<") and text.endswith(">"))


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
