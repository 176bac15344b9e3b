"""Resource checks from the IR, before a backend allocates anything (shared by torch and NumPy)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from .errors import CnnDslError, error
from .limits import MAX_ACTIVATION_BYTES, MAX_WEIGHT_BYTES

if TYPE_CHECKING:
    from .ir import Layer
    from .network import Network

FLOAT_BYTES = 4
"""Parameters and buffers are float32 (num_batches_tracked is int64, but one per BatchNorm)."""


def estimate_bytes(network: Network) -> int:
    """float32 bytes of every parameter and buffer, from the IR, before anything is allocated."""
    return FLOAT_BYTES * (network.params + network.buffers)


def check_size(network: Network, max_bytes: int | None = None) -> None:
    """Refuse networks whose weights would not fit, pointing at the largest layer."""
    limit = MAX_WEIGHT_BYTES if max_bytes is None else max_bytes
    needed = estimate_bytes(network)
    if needed <= limit:
        return
    largest = max(network.layers, key=lambda layer: layer.params + layer.buffers)
    raise error(
        f"the network's parameters and buffers need {_gib(needed)} (float32); the limit is {_gib(limit)}",
        f"the largest layer, `{largest.path}` ({largest.describe}), has {largest.params:,} parameters; "
        "make it smaller (fewer channels or features, or pool before the FC layer)",
        network,
        largest.pos,
    )


def numpy_workspace_bytes(layer: Layer, batch: int, itemsize: int = FLOAT_BYTES) -> int:
    """Temporaries the NumPy backend allocates for one layer beside its input and output (the kind's estimate)."""
    return layer.kind.np_workspace_bytes(layer.args, layer.in_shape, layer.out_shape, batch, itemsize)


def batch_bytes(network: Network, batch: int, itemsize: int = FLOAT_BYTES, backend: str = "numpy") -> tuple[int, Layer | None]:
    """(bytes one forward pass of `batch` samples needs, the layer with the largest temporaries or None).

    Activations as the IR counts them, plus, on the NumPy backend, the largest layer's
    padded copy and im2col columns (they live one layer at a time).
    """
    activations = network.activation_bytes // FLOAT_BYTES * itemsize * batch
    if backend != "numpy" or not network.layers:
        return activations, None
    largest = max(network.layers, key=lambda layer: numpy_workspace_bytes(layer, 1, itemsize))
    workspace = numpy_workspace_bytes(largest, batch, itemsize)
    return activations + workspace, largest if workspace else None


def available_memory() -> int | None:
    """Bytes the system can still give this process without swapping (Linux MemAvailable), or None when unknown."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_batch(
    network: Network, batch: int, itemsize: int = FLOAT_BYTES, backend: str = "numpy", check_free: bool = True
) -> None:
    """Refuse a forward pass over MAX_ACTIVATION_BYTES (or, with `check_free`, over the free memory) before allocating it."""
    needed, layer = batch_bytes(network, batch, itemsize, backend)
    workspace = numpy_workspace_bytes(layer, batch, itemsize) if layer is not None else 0
    # Name the layer when its temporaries (a huge pad) are what the batch costs.
    culprit = layer if layer is not None and workspace * 2 > needed else None
    if needed > MAX_ACTIVATION_BYTES:
        detail = (
            f"; `{culprit.path}` ({culprit.describe}) alone needs {_gib(workspace)} for its padded input and im2col columns"
            if culprit is not None
            else ""
        )
        raise error(
            f"a batch of {batch:,} needs about {_gib(needed)} of activations on the {backend} backend{detail};"
            f" the limit is {_gib(MAX_ACTIVATION_BYTES)}",
            "use less padding, or a smaller input" if culprit is not None else "use a smaller batch or input",
            network,
            culprit.pos if culprit is not None else None,
        )
    free = available_memory() if check_free else None
    if free is not None and needed > free:
        raise memory_error(network, batch, needed, free)


def memory_error(network: Network, batch: int, needed: int | None = None, free: int | None = None) -> CnnDslError:
    """ "not enough memory for batch N (needs X GiB)": what running out of memory becomes, on every backend."""
    needs = f" (needs about {_gib(needed)}" + (f", {_gib(free)} available)" if free is not None else ")") if needed else ""
    return error(f"not enough memory for batch {batch:,}{needs}", "use a smaller batch or input", network, None)


def _gib(size: int) -> str:
    return f"{size / 2**30:,.2f} GiB"
