"""Callbacks that observe training for TensorBoard: confusion matrix, sample predictions, graph and hparams.

Drawing lives in figures.py; these decide when, and only rank 0 writes.
"""

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from fashion_mnist_lightning.figures import confusion_figure, prediction_grid


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the first TensorBoard logger, or None (no logger, or fast_dev_run's DummyLogger).

    Call it on rank 0 only: elsewhere Lightning hands out a do-nothing experiment.
    """
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
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


class SamplePredictionsLogger(Callback):
    """Each validation epoch: the first ``count`` images of the first validation batch with their predictions.

    The same images every epoch (the validation order is fixed), so the grid shows the model learning them.
    """

    def __init__(self, count: int = 32, columns: int = 8):  # images in the grid, images per grid row
        self.count, self.columns = count, columns
        self._sample = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if batch_idx or dataloader_idx or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if tensorboard(trainer) is None:
            return
        images, labels = batch[0][: self.count], batch[1][: self.count]  # (K, 1, 28, 28) in [0, 1], (K,)
        probabilities = pl_module.evaluate(images).float().softmax(dim=1)  # (K, 10); eval mode, no grad here
        confidence, predicted = probabilities.max(dim=1)
        self._sample = [t.cpu().numpy() for t in (images[:, 0].float(), labels, predicted, confidence)]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if self._sample is None or writer is None or not trainer.is_global_zero:
            return
        images, labels, predicted, confidence = self._sample
        title = f"validation, epoch {trainer.current_epoch}: {int((predicted == labels).sum())}/{len(labels)} right"
        fig = prediction_grid(images, labels, predicted, confidence, pl_module.class_names, self.columns, title)
        writer.add_figure("val/sample_predictions", fig, global_step=trainer.global_step, close=True)
        self._sample = None


class RunSummaryLogger(Callback):
    """The network's graph when fit starts; the hyper-parameters with the final metrics when fit or test ends.

    TensorBoard's HPARAMS tab keeps the first hparams record of a run, so the record is written once per run and
    declares every final metric; values arrive as ``hp/...`` scalars (the tab shows the latest), which also keeps
    the ``val/`` and ``test/`` curves free of extra points. A fit followed by a test fills all four columns.
    """

    FINAL = {"val/acc_best": "hp/val_acc_best", "val/loss": "hp/val_loss", "test/acc": "hp/test_acc",
             "test/loss": "hp/test_loss"}

    def __init__(self):
        self._declared_in: str | None = None  # the log_dir whose hparams record this process wrote

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if not trainer.is_global_zero or writer is None:
            return
        network, was_training = pl_module.network, pl_module.network.training
        network.eval()  # trace without touching BatchNorm statistics or drawing dropout masks
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's deprecation and shape notes
                writer.add_graph(network, torch.zeros(1, 1, 28, 28, device=pl_module.device))  # raw images in
        except Exception as err:  # noqa: BLE001  a compiled or untraceable network must not stop training
            warnings.warn(f"model graph not logged to TensorBoard: {err}", stacklevel=1)
        finally:
            network.train(was_training)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_final(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_final(trainer, pl_module)

    def _log_final(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        metrics = {hp: float(trainer.callback_metrics[key]) for key, hp in self.FINAL.items()
                   if key in trainer.callback_metrics}
        if not trainer.is_global_zero or writer is None or not metrics:
            return
        if self._declared_in != writer.log_dir:
            from torch.utils.tensorboard.summary import hparams

            run = {"max_epochs": trainer.max_epochs, "precision": str(trainer.precision),
                   "world_size": trainer.world_size}
            params = {"model": dict(pl_module.hparams), "trainer": run}
            if trainer.datamodule is not None:
                params["data"] = dict(trainer.datamodule.hparams)
            file_writer = writer._get_file_writer()
            for summary in hparams(flat_params(params), dict.fromkeys(self.FINAL.values(), 0.0)):  # names only
                file_writer.add_summary(summary)
            self._declared_in = writer.log_dir
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, global_step=trainer.global_step)
        writer.flush()


def flat_params(params: dict, prefix: str = "") -> dict[str, int | float | str | bool]:
    """{'model': {'lr': 0.1}} -> {'model/lr': 0.1}; values TensorBoard cannot show (None, lists) become text."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
