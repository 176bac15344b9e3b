"""Checkpoints that are either complete or absent: write to a temporary file, then rename.

`os.replace` is atomic on POSIX and Windows when source and target are on the same file
system (the temporary file lives beside the target), so a reader, or a run killed at any
moment, sees the previous checkpoint or the new one, never a mixture. The data is flushed
and fsync'ed before the rename so that a crash of the machine cannot leave a renamed but
empty file either.

Two formats, one per backend: torch checkpoints are `torch.save` files read back with
`weights_only=True` (no arbitrary pickles); NumPy checkpoints are `.npz` files (arrays
plus one JSON string) so that the NumPy backend never needs torch.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CnnDslError, Diagnostic
from ..files import atomic_write

TORCH_NAME = "checkpoint.pt"
NUMPY_NAME = "checkpoint.npz"


def checkpoint_error(message: str, hint: str | None = None, where: str = "--checkpoint-dir") -> CnnDslError:
    return CnnDslError([Diagnostic("error", message, None, hint, (), where)])


def checkpoint_path(directory: str | Path, backend: str) -> Path:
    return Path(directory) / (TORCH_NAME if backend == "torch" else NUMPY_NAME)


def save_torch(path: str | Path, state: dict[str, Any]) -> None:
    import torch

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(state, handle))
    except OSError as err:
        raise checkpoint_error(f"cannot write the checkpoint {path}: {err.strerror or err}") from None


def load_torch(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `save_torch`, tensors on the CPU."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise checkpoint_error(f"cannot read the checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise checkpoint_error(
            f"{path} is not a readable torch checkpoint: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            "start again without --resume, or point --checkpoint-dir elsewhere",
        ) from None
    if not isinstance(state, dict) or state.get("format") != "cnndsl-train-torch":
        raise checkpoint_error(f"{path} is not a cnndsl training checkpoint")
    return state


META_KEY = "meta.json"


def save_numpy(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Arrays plus a JSON-able `meta` dict (epoch, history, RNG state, settings)."""
    payload = dict(arrays)
    payload[META_KEY] = np.array(json.dumps(meta))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: np.savez(handle, **payload))
    except OSError as err:
        raise checkpoint_error(f"cannot write the checkpoint {path}: {err.strerror or err}") from None


def load_numpy(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except OSError as err:
        raise checkpoint_error(f"cannot read the checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # zipfile.BadZipFile, ValueError, EOFError for damaged files
        raise checkpoint_error(f"{path} is not a readable NumPy checkpoint: {err}") from None
    if META_KEY not in arrays:
        raise checkpoint_error(f"{path} is not a cnndsl training checkpoint (no {META_KEY})")
    meta = json.loads(str(arrays.pop(META_KEY)))
    if meta.get("format") != "cnndsl-train-numpy":
        raise checkpoint_error(f"{path} is not a cnndsl training checkpoint")
    return arrays, meta


def load_any(path: str | Path) -> dict[str, Any]:
    """Either format, as a dict with at least `epoch` and `history` (used by tests and tools)."""
    if str(path).endswith(".npz"):
        arrays, meta = load_numpy(path)
        meta["arrays"] = arrays
        return meta
    return load_torch(path)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete temporary files that a killed run (SIGKILL, power loss) left beside `path`.

    `atomic_write` removes its temporary file on every failure it sees, but a process that
    is killed outright cannot; the checkpoint itself is never affected. Called once at the
    start of a run, before this run writes anything.
    """
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed.append(leftover)
    return removed
