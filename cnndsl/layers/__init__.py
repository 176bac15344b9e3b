"""Every layer kind of the language, registered on import."""

from . import activation, channel, conv, dense, dropout, merge, norm, normalization, pool, upsample  # noqa: F401  (registration)
from .base import KINDS, REGISTRY, ArgSpec, LayerError, LayerKind, MergeKind, lookup

__all__ = ["KINDS", "REGISTRY", "ArgSpec", "LayerError", "LayerKind", "MergeKind", "lookup"]
