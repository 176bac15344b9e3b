"""Resource checks from the IR, before a backend allocates anything (shared by torch and NumPy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CnnDslError, DiagnosticSink, Position
from .limits import MAX_WEIGHT_BYTES

if TYPE_CHECKING:
    from .network import Network

FLOAT_BYTES = 4
"""Parameters and buffers are float32 (num_batches_tracked is int64, but one per BatchNorm)."""


def estimate_bytes(network: Network) -> int:
    """float32 bytes of every parameter and buffer, from the IR, before anything is allocated."""
    return FLOAT_BYTES * (network.params + network.buffers)


def network_error(network: Network, message: str, pos: Position | None, hint: str | None = None) -> CnnDslError:
    """A positioned diagnostic that quotes the network's source line."""
    sink = DiagnosticSink(network.filename, network.source)
    sink.error(message, pos, hint)
    return CnnDslError(sink.diagnostics)


def check_size(network: Network, max_bytes: int | None = None) -> None:
    """Refuse networks whose weights would not fit, pointing at the largest layer."""
    limit = MAX_WEIGHT_BYTES if max_bytes is None else max_bytes
    needed = estimate_bytes(network)
    if needed <= limit:
        return
    largest = max(network.layers, key=lambda layer: layer.params + layer.buffers)
    raise network_error(
        network,
        f"the network's parameters and buffers need {_gib(needed)} (float32); the limit is {_gib(limit)}",
        largest.pos,
        f"the largest layer, `{largest.path}` ({largest.describe}), has {largest.params:,} parameters; "
        "make it smaller (fewer channels or features, or pool before the FC layer)",
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:,.2f} GiB"
