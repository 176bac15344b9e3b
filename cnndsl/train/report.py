"""What a training run shows: a progress bar per epoch, a summary line per epoch, the final
test accuracy (for segmentation: mean IoU and pixel accuracy) and confusion matrix. Only the
main process (rank 0) shows anything.

Progress bars go to standard error and vanish when the epoch ends (its summary line, on
standard output, replaces them), so logs and pipes get one line per epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MAX_MATRIX_CLASSES = 20
"""Above this many classes the confusion matrix is only written to --metrics-json."""


@dataclass
class EpochProgress:
    """Updates one epoch's bar; `update` is cheap, so the loops may call it every step."""

    progress: Any = None
    task: Any = None
    images: int = 0
    start: float = 0.0
    loss: float | None = None
    """The running loss last reported (None until the first batch has been)."""
    accuracy: float | None = None

    def update(self, images: int, loss: float | None = None, accuracy: float | None = None) -> None:
        self.images += images
        if self.progress is None:
            return
        self.loss = self.loss if loss is None else loss
        self.accuracy = self.accuracy if accuracy is None else accuracy
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=1, metrics=metrics_text(self.loss, self.accuracy, rate))


def metrics_text(loss: float | None, accuracy: float | None, rate: float | None) -> str:
    """The bar's figures; a dash for what no batch has measured yet (never `loss nan`)."""
    loss_text = "-" if loss is None else f"{loss:.4f}"
    accuracy_text = "-" if accuracy is None else f"{accuracy:.3f}"
    rate_text = "-" if rate is None else f"{rate:,.0f}"
    return f"loss {loss_text}  acc {accuracy_text}  {rate_text} img/s"


class Reporter:
    """Console output of a run; silent on ranks other than 0 (and for `enabled=False`)."""

    def __init__(self, enabled: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.show_progress = enabled and progress
        self._out: Any = None
        self._err: Any = None
        if enabled:
            from rich.console import Console

            self._out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
            self._err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
            # Bars only on a terminal: in logs and pipes they would be noise (the epoch lines remain).
            self.show_progress = self.show_progress and self._err.is_terminal

    def line(self, text: str) -> None:
        if self._out is not None:
            self._out.print(text, markup=False)

    def note(self, text: str) -> None:
        """A remark about the run (resumed, skipped, ...), on standard error."""
        if self._err is not None:
            self._err.print(text, markup=False, highlight=False)

    @contextmanager
    def epoch(self, epoch: int, epochs: int, steps: int) -> Iterator[EpochProgress]:
        tracker = EpochProgress(start=time.perf_counter())
        if not self.show_progress:
            yield tracker
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self._err, transient=True) as progress:
            tracker.progress = progress
            tracker.task = progress.add_task("train", total=steps, metrics=metrics_text(None, None, None))
            yield tracker

    def epoch_summary(self, record: dict[str, Any], epochs: int) -> None:
        self.line(
            f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}"
            f" | test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}"
            + (f" mIoU {record['test_mean_iou']:.4f}" if "test_mean_iou" in record else "")  # segmentation: accuracies per pixel
            + f" | {record['images_per_second']:,.0f} img/s, {record['seconds']:.1f} s"
        )

    def final(self, metrics: dict[str, Any]) -> None:
        if self._out is None:
            return
        correct = sum(row[i] for i, row in enumerate(metrics["confusion_matrix"]))
        if metrics.get("task") == "segmentation":
            self.line(
                f"test mean IoU {metrics['mean_iou']:.4f}, pixel accuracy {metrics['test_accuracy']:.4f}"
                f" ({correct:,}/{metrics['test_pixels']:,} pixels of {metrics['test_samples']:,} images)"
                f" after {metrics['epochs']} epochs; {metrics['images_per_second']:,.0f} img/s"
                f" on {metrics['device']} x {metrics['world_size']}"
            )
            scores = zip(metrics["class_names"], metrics["iou_per_class"], strict=True)
            self.line("IoU per class: " + ", ".join(f"{name} {'-' if iou is None else f'{iou:.3f}'}" for name, iou in scores))
            self.confusion(metrics["confusion_matrix"], metrics["class_names"], "pixels")
            return
        self.line(
            f"test accuracy {metrics['test_accuracy']:.4f} ({correct}/{metrics['test_samples']})"
            f" after {metrics['epochs']} epochs; {metrics['images_per_second']:,.0f} img/s"
            f" on {metrics['device']} x {metrics['world_size']}"
        )
        self.confusion(metrics["confusion_matrix"], metrics["class_names"])

    def confusion(self, matrix: list[list[int]], names: list[str], counted: str = "") -> None:
        if self._out is None:
            return
        if len(names) > MAX_MATRIX_CLASSES:
            self.line(f"({len(names)} classes: the confusion matrix is in --metrics-json)")
            return
        from rich.markup import escape
        from rich.table import Table

        of = f" of {counted}" if counted else ""
        table = Table(title=f"confusion matrix{of} (rows: true class, columns: predicted)", title_justify="left")
        table.add_column("true \\ pred", justify="right", style="bold")
        for name in names:
            table.add_column(escape(name[:8]), justify="right")
        for diagonal, (name, row) in enumerate(zip(names, matrix, strict=True)):
            cells = [f"[bold]{v}[/bold]" if i == diagonal else (str(v) if v else "·") for i, v in enumerate(row)]
            table.add_row(escape(name[:12]), *cells)
        self._out.print(table)
