"""What a training run writes, kept apart from what it reads, and one run per checkpoint directory.

- `refuse_overwrite`: the metrics file and the checkpoint are never one of the run's inputs
  (the .cnn file, the --data file or a file inside the --data folder), nor each other
  (`train net.cnn --metrics-json net.cnn` would replace the network with JSON).
- `checkpoint_lock`: a run holds an exclusive `flock` on `D/.cnndsl-train.lock` while it
  uses checkpoint directory D, so a second run cannot delete the first one's checkpoint
  temporary at start-up, nor race it for the checkpoint. The lock file records the holder's
  pid for the message; the kernel releases the lock when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import error
from ..files import OutputConflict, refuse_inputs
from .checkpoint import checkpoint_path
from .config import TrainConfig
from .data import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from ..network import Network

LOCK_NAME = ".cnndsl-train.lock"


def refuse_overwrite(network: Network, config: TrainConfig) -> None:
    """Refuse outputs that would replace an input of the run, or each other, before anything is read or written."""
    checkpoint = checkpoint_path(config.checkpoint_dir, config.backend) if config.checkpoint_dir else None
    data = config.data if Path(config.data).exists() else None  # `digits`, `synthetic:N` are not files
    outputs = [config.metrics_json, checkpoint]
    try:
        refuse_inputs(outputs, [network.filename, data])
    except OutputConflict as err:
        raise error(str(err), "choose another --metrics-json or --checkpoint-dir", "cnndsl train") from None
    if data is not None and Path(data).is_dir():
        # An image folder's inputs are its images: an output may live there, but not be one of them.
        root = os.path.realpath(data)
        for output in outputs:
            if output is not None and Path(output).suffix.lower() in IMAGE_SUFFIXES:
                if os.path.commonpath([os.path.realpath(output), root]) == root:
                    raise error(
                        f"refusing to overwrite {output}, an image inside the --data folder {data}",
                        "choose another --metrics-json or --checkpoint-dir",
                        "cnndsl train",
                    )


@contextlib.contextmanager
def checkpoint_lock(directory: str | Path | None) -> Iterator[None]:
    """Hold checkpoint directory `directory` for this run (nothing when None); a clear error if another run holds it."""
    if directory is None:
        yield
        return
    directory = Path(directory)
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no advisory locks to take
        yield
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        raise error(f"cannot use the checkpoint directory {directory}: {err.strerror or err}", where="--checkpoint-dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise error(
                f"checkpoint directory {directory} is in use by another training run (pid {holder})",
                "wait for it to finish, or give this run another --checkpoint-dir",
                "--checkpoint-dir",
            ) from None
        with contextlib.suppress(OSError):  # the pid only informs the message; a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would let two runs lock two different files)
