"""Reading .npy and .npz files without trusting their headers.

`numpy.load` allocates the array a header describes before reading its data: a 228-byte
file that claims a 70 TiB array is a MemoryError (or, with overcommit, a process killed
later), and a zero-byte file an EOFError that click reports as "Aborted!". Here every
header is read and checked first, against the bytes that follow it in the file and against
a size limit: the shape must be non-negative integers, the dtype plain numbers (no
objects: no pickles), and the array no larger than the data present. Only then is it read.
Every problem is an `ArrayFileError` with one clear sentence.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


class ArrayFileError(ValueError):
    """A file that is not a usable .npy/.npz array file; the message names the file and what is wrong."""


def _gib(size: int) -> str:
    return f"{size / 2**30:,.2f} GiB"


def _read_header(handle: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an .npy header, checked to describe a plain numeric array."""
    start = handle.read(len(NPY_MAGIC) + 2)
    if not start:
        raise ArrayFileError(f"{where} is empty (0 bytes), not an .npy array")
    if not start.startswith(NPY_MAGIC) or len(start) < len(NPY_MAGIC) + 2:
        raise ArrayFileError(f"{where} is not an .npy array (no NUMPY header)")
    version = (start[-2], start[-1])
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ArrayFileError(f"{where} has an unknown .npy format version {version[0]}.{version[1]}")
    except ArrayFileError:
        raise
    except Exception as err:  # numpy raises ValueError, SyntaxError, TypeError, ... for damaged headers
        raise ArrayFileError(f"{where} has a damaged .npy header: {err}") from None
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ArrayFileError(f"{where} has a damaged .npy header: shape {shape!r}")
    if dtype.hasobject or dtype.kind not in "biufcSU" or dtype.fields is not None:
        raise ArrayFileError(f"{where} holds {dtype} values; only plain numbers or text are read (no pickled objects)")
    return shape, fortran, dtype


def _check_size(shape: tuple[int, ...], dtype: np.dtype, available: int, limit: int, where: str) -> None:
    needed = math.prod(shape) * dtype.itemsize
    if needed > available:
        raise ArrayFileError(
            f"{where} is truncated or damaged: its header describes a {'x'.join(map(str, shape)) or 'scalar'} {dtype} array"
            f" ({needed:,} bytes) but only {available:,} bytes of data follow"
        )
    if needed > limit:
        raise ArrayFileError(f"{where} holds a {_gib(needed)} array; the limit is {_gib(limit)}")


def read_npy(path: str | Path, limit: int) -> np.ndarray:
    """One array from an .npy file, at most `limit` bytes; ArrayFileError (or OSError) otherwise."""
    where = str(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        shape, fortran, dtype = _read_header(handle, where)
        _check_size(shape, dtype, size - handle.tell(), limit, where)
        handle.seek(0)
        try:
            return np.lib.format.read_array(handle, allow_pickle=False)
        except (ValueError, EOFError) as err:
            raise ArrayFileError(f"{where} cannot be read as an .npy array: {err}") from None


def read_npz(path: str | Path, limit: int, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of an .npz file by name (`names`, or all), at most `limit` bytes together.

    Every wanted member's header is checked before any array is allocated.
    """
    where = str(path)
    archive = _open_archive(path)
    with archive:
        members = {info.filename[: -len(".npy")]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        wanted = list(members) if names is None else [name for name in names if name in members]
        total = 0
        for name in wanted:
            info = members[name]
            try:
                with archive.open(info) as member:
                    shape, _, dtype = _read_header(member, f"{where}:{name}")
                    header = member.tell() if member.seekable() else 0
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise ArrayFileError(f"{where} is damaged ({name}: {err})") from None
            _check_size(shape, dtype, info.file_size - header, limit, f"{where}:{name}")
            total += math.prod(shape) * dtype.itemsize
            if total > limit:
                raise ArrayFileError(f"{where} holds {_gib(total)} of arrays; the limit is {_gib(limit)}")
        arrays: dict[str, np.ndarray] = {}
        for name in wanted:
            try:
                with archive.open(members[name]) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile) as err:
                raise ArrayFileError(f"{where} is damaged ({name}: {err})") from None
    return arrays


def npz_names(path: str | Path) -> list[str]:
    """The array names in an .npz file (ArrayFileError if it is not one)."""
    with _open_archive(path) as archive:
        return [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]


def _open_archive(path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError):
        with open(path, "rb") as handle:  # an OSError (missing, unreadable) is the caller's to report
            head = handle.read(len(NPY_MAGIC))
        if head.startswith(NPY_MAGIC):
            raise ArrayFileError(f"{path} is a single .npy array, not an .npz archive of named arrays") from None
        raise ArrayFileError(f"{path} is not a readable .npz file ({'empty' if not head else 'not a zip archive'})") from None
