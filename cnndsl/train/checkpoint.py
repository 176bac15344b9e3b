"""Checkpoints that are either complete or absent: write to a temporary file, then rename.

`os.replace` is atomic on POSIX and Windows when source and target are on the same file
system (the temporary file lives beside the target), so a reader, or a run killed at any
moment, sees the previous checkpoint or the new one, never a mixture. The data is flushed
and fsync'ed before the rename so that a crash of the machine cannot leave a renamed but
empty file either.

Two formats, one per backend: torch checkpoints are `torch.save` files read back with
`weights_only=True` (no arbitrary pickles); NumPy checkpoints are `.npz` files (arrays
plus one JSON string) so that the NumPy backend never needs torch.

Each checkpoint carries a SHA-256 of its content (`sha256`: every tensor's dtype, shape and
bytes, and every other value), verified when it is read: bytes changed inside a tensor
would otherwise load silently and resume a different run. Before a run uses a checkpoint,
`validate_state` checks its structure (types of the epoch, history, settings, RNG and
optimiser state) so that a damaged one is a clear error naming what is wrong, not a
traceback from deep inside torch or NumPy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import ArrayFileError, read_npz
from ..errors import CnnDslError, error
from ..files import atomic_write

TORCH_NAME = "checkpoint.pt"
NUMPY_NAME = "checkpoint.npz"


def checkpoint_path(directory: str | Path, backend: str) -> Path:
    return Path(directory) / (TORCH_NAME if backend == "torch" else NUMPY_NAME)


MAX_CHECKPOINT_BYTES = 64 * 2**30
"""Largest total of arrays a NumPy checkpoint may hold (checked from the headers before reading)."""
DIGEST_KEY = "sha256"
DAMAGED_HINT = "start again without --resume, or point --checkpoint-dir elsewhere"


def _digest_value(value: Any, digest: Any) -> None:
    """Feed `value` (nested dicts, lists, tensors, arrays, scalars) into `digest`, types and structure included."""
    if isinstance(value, dict):
        digest.update(b"{%d" % len(value))
        for key, item in value.items():
            _digest_value(key, digest)
            _digest_value(item, digest)
    elif isinstance(value, (list, tuple)):
        digest.update(b"[%d" % len(value))
        for item in value:
            _digest_value(item, digest)
    elif isinstance(value, np.ndarray):
        digest.update(f"a{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).view(np.uint8).reshape(-1).data if value.size else b"")
    elif type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        import torch  # only torch checkpoints hold tensors: the NumPy backend never gets here

        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"t{tensor.dtype}{tuple(value.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy().data)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def content_digest(state: Any) -> str:
    """The SHA-256 of a checkpoint's content, as stored under `sha256`."""
    digest = hashlib.sha256()
    _digest_value(state, digest)
    return digest.hexdigest()


def _verify_digest(path: str | Path, stored: Any, content: Any) -> None:
    if not isinstance(stored, str):
        raise error(
            f"{path} has no checksum ({DIGEST_KEY}); it was not written by this version of cnndsl",
            DAMAGED_HINT,
            "--checkpoint-dir",
        )
    if stored != content_digest(content):
        raise error(
            f"{path} is damaged: its content does not match its SHA-256 checksum (changed after it was written)",
            DAMAGED_HINT,
            "--checkpoint-dir",
        )


def save_torch(path: str | Path, state: dict[str, Any]) -> None:
    import torch

    checked = {**state, DIGEST_KEY: content_digest(state)}
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(checked, handle))
    except OSError as err:
        raise error(f"cannot write the checkpoint {path}: {err.strerror or err}", where="--checkpoint-dir") from None


def load_torch(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `save_torch`, tensors on the CPU."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise error(f"cannot read the checkpoint {path}: {err.strerror or err}", where="--checkpoint-dir") from None
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise error(
            f"{path} is not a readable torch checkpoint: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            DAMAGED_HINT,
            "--checkpoint-dir",
        ) from None
    if not isinstance(state, dict) or state.get("format") != "cnndsl-train-torch":
        raise error(f"{path} is not a cnndsl training checkpoint", where="--checkpoint-dir")
    stored = state.pop(DIGEST_KEY, None)
    _verify_digest(path, stored, state)
    return state


META_KEY = "meta.json"


def save_numpy(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Arrays plus a JSON-able `meta` dict (epoch, history, RNG state, settings), with the SHA-256 of both."""
    payload: dict[str, Any] = dict(arrays)  # Any: numpy's stubs read `**payload` as possibly savez's allow_pickle
    meta = {**meta, DIGEST_KEY: content_digest([arrays, meta])}
    payload[META_KEY] = np.array(json.dumps(meta))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: np.savez(handle, **payload))
    except OSError as err:
        raise error(f"cannot write the checkpoint {path}: {err.strerror or err}", where="--checkpoint-dir") from None


def load_numpy(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the meta dict of a NumPy checkpoint, headers checked before reading and the checksum verified."""
    try:
        arrays = read_npz(path, MAX_CHECKPOINT_BYTES)
    except OSError as err:
        raise error(f"cannot read the checkpoint {path}: {err.strerror or err}", where="--checkpoint-dir") from None
    except ArrayFileError as err:
        raise error(f"{path} is not a readable NumPy checkpoint: {err}", DAMAGED_HINT, "--checkpoint-dir") from None
    if META_KEY not in arrays:
        raise error(f"{path} is not a cnndsl training checkpoint (no {META_KEY})", where="--checkpoint-dir")
    record = arrays.pop(META_KEY)
    try:
        if record.shape != () or record.dtype.kind != "U":
            raise ValueError(f"a {record.dtype} array of shape {record.shape}, not one string")
        meta = json.loads(str(record))
    except ValueError as err:
        raise error(f"{path} is damaged: its {META_KEY} record is not JSON ({err})", DAMAGED_HINT, "--checkpoint-dir") from None
    if not isinstance(meta, dict) or meta.get("format") != "cnndsl-train-numpy":
        raise error(f"{path} is not a cnndsl training checkpoint", where="--checkpoint-dir")
    stored = meta.pop(DIGEST_KEY, None)
    _verify_digest(path, stored, [arrays, meta])
    return arrays, meta


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # NaN too: a diverged run's loss


HISTORY_NUMBERS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "images", "seconds")
"""Fields of each epoch record that a resumed run reads (its final metrics sum them)."""


def validate_state(path: str | Path, state: dict[str, Any]) -> None:
    """The fields every checkpoint shares (epoch, history, settings), as the run uses them; a clear error otherwise."""
    problems = []
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        problems.append(f"`epoch` is {epoch!r}, not a whole number of epochs")
    history = state.get("history")
    if not isinstance(history, list):
        problems.append(f"`history` is {type(history).__name__}, not a list of epoch records")
    else:
        if _is_int(epoch) and len(history) != epoch:
            problems.append(f"`history` has {len(history)} records for {epoch} epochs")
        for index, record in enumerate(history):
            if not isinstance(record, dict) or not all(_is_number(record.get(k)) for k in HISTORY_NUMBERS):
                problems.append(f"`history` record {index} is not an epoch record ({', '.join(HISTORY_NUMBERS)})")
                break
    config = state.get("config")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        problems.append(f"`config` is {type(config).__name__}, not the run's settings")
    if problems:
        raise error(f"{path} is damaged: {'; '.join(problems)}", DAMAGED_HINT, "--checkpoint-dir")


def validate_buffers(
    path: str | Path, buffers: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], complete: bool, what: str = "momentum"
) -> None:
    """Optimiser buffers: one per parameter (every one when `complete`), each of its parameter's shape."""
    problems = []
    extra = sorted(set(buffers) - set(shapes))
    missing = sorted(set(shapes) - set(buffers)) if complete else []
    if extra:
        problems.append(f"{what} buffers for unknown parameters: {', '.join(extra[:4])}")
    if missing:
        problems.append(
            f"no {what} buffer for: {', '.join(missing[:4])}" + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        )
    for key, value in buffers.items():
        if isinstance(value, np.ndarray) and value.dtype.kind != "f":
            problems.append(f"the {what} buffer of {key} holds {value.dtype}, not floating point")
        elif key in shapes and tuple(np.shape(value)) != tuple(shapes[key]):
            problems.append(f"the {what} buffer of {key} is {tuple(np.shape(value))}, the parameter {tuple(shapes[key])}")
    if problems:
        raise error(f"{path} is damaged: {'; '.join(problems)}", DAMAGED_HINT, "--checkpoint-dir")


@contextlib.contextmanager
def restoring(path: str | Path) -> Iterator[None]:
    """Errors raised while loading a validated checkpoint's state into the model become one clear checkpoint error."""
    try:
        yield
    except CnnDslError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(f"{path} is damaged: {detail}", DAMAGED_HINT, "--checkpoint-dir") from None


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
