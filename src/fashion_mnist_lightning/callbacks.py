"""Callbacks that observe training: the confusion-matrix figure in TensorBoard and as PNGs."""

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure


def confusion_figure(matrix: np.ndarray, class_names, normalize: bool = False, title: str = "") -> Figure:
    """Rows = true class, columns = predicted class; counts (or row fractions) in the cells.

    Built on a bare ``Figure`` (no pyplot), so no global figure list grows; callers still close nothing.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", vmin=0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i, j in np.ndindex(matrix.shape):
        text = f"{matrix[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
        ax.text(j, i, text, ha="center", va="center", fontsize=7,
                color="white" if matrix[i, j] > threshold else "black")
    return fig


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the first TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if hasattr(logger.experiment, "add_figure"):
            return logger.experiment
    return None


class ConfusionMatrixLogger(Callback):
    """Each validation epoch: the confusion matrix as a TensorBoard figure. At test: two PNGs in the run folder."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        matrix = pl_module.val_confusion.compute().cpu().numpy()  # every rank computes: it syncs under DDP
        writer = tensorboard(trainer)
        if trainer.is_global_zero and writer is not None:
            fig = confusion_figure(matrix, pl_module.class_names, title=f"validation, epoch {trainer.current_epoch}")
            writer.add_figure("val/confusion_matrix", fig, global_step=trainer.global_step, close=True)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = pl_module.test_confusion.compute().cpu().numpy()  # every rank: compute() syncs under DDP
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)  # every rank: log_dir is a broadcast
        if not trainer.is_global_zero:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savetxt(out_dir / "confusion_matrix_test.csv", matrix, fmt="%d", delimiter=",")
        title = f"test ({int(matrix.sum())} images)"
        normalized = confusion_figure(matrix, pl_module.class_names, normalize=True, title=f"{title}, row-normalised")
        normalized.savefig(out_dir / "confusion_matrix_test_normalized.png", dpi=110)
        counts = confusion_figure(matrix, pl_module.class_names, title=title)
        counts.savefig(out_dir / "confusion_matrix_test.png", dpi=110)
        writer = tensorboard(trainer)
        if writer is not None:  # the same counts figure, not a second rendering of it
            writer.add_figure("test/confusion_matrix", counts, global_step=trainer.global_step, close=True)
