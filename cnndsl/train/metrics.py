"""What the loss and the scores read from a network's output: its first output, and mean IoU for segmentation.

NumPy only (the NumPy backend trains without torch); `first_output` takes torch tensors as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def first_output(outputs: T | Sequence[T]) -> T:
    """The output the loss trains: the only one, or the first of several (a tuple or list, as a module with several returns)."""
    if isinstance(outputs, (tuple, list)):
        if not outputs:
            raise ValueError("the network returned no outputs")
        return outputs[0]
    return outputs  # type: ignore[return-value]


def iou_per_class(confusion: np.ndarray) -> list[float | None]:
    """Intersection over union of each class from a K x K confusion matrix (rows true, columns predicted).

    None for a class that is neither in the targets nor in the predictions (no union to divide by).
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    return [float(h / u) if u > 0 else None for h, u in zip(hits.tolist(), union.tolist(), strict=True)]


def mean_iou(confusion: np.ndarray) -> float:
    """The mean IoU over the classes present in the targets or the predictions (0.0 for an empty matrix)."""
    present = [iou for iou in iou_per_class(confusion) if iou is not None]
    return float(np.mean(present)) if present else 0.0
