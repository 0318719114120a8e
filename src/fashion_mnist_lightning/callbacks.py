"""Callbacks that observe training for any logger: confusion matrix, sample predictions, run summary, and the
CSV writer behind ``predict``.

Drawing lives in figures.py: the images of every validation epoch are drawn with numpy and Pillow (a few
milliseconds), the test PNGs in the run folder with matplotlib. An image goes through the logger's own image API
where it has one (TensorBoard ``add_image``, MLflow ``log_image``); for other loggers (CSV) it is a PNG under
``<run>/figures/``. Every process runs the hooks (a metric's ``compute()`` syncs under DDP); only rank 0 draws and
writes.
"""

import csv
import io
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torchmetrics.classification import MulticlassConfusionMatrix

from fashion_mnist_lightning.figures import confusion_figure, confusion_image, prediction_grid_image
from fashion_mnist_lightning.runs.checkpoint_io import atomic_write, atomic_write_text
from fashion_mnist_lightning.runs.folders import run_dir


def metric_key(class_name: str) -> str:
    """'T-shirt/top' -> 'T-shirt_top': a '/' would split the metric name into another section."""
    return class_name.replace("/", "_").replace(" ", "_")


def log_image(trainer: L.Trainer, tag: str, image: np.ndarray) -> None:
    """Hand an RGB image (H, W, 3) uint8 to every logger of the run (call on rank 0)."""
    step = trainer.global_step
    for logger in trainer.loggers:
        experiment = logger.experiment
        if hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
            experiment.add_image(tag, image, global_step=step, dataformats="HWC")
        elif hasattr(experiment, "log_image") and getattr(logger, "run_id", None):  # MLflow
            experiment.log_image(logger.run_id, image, f"{tag}/step_{step:06d}.png")
        else:
            path = run_dir(trainer) / "figures" / f"{tag.replace('/', '_')}_step{step:06d}.png"
            atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))


class ConfusionMatrixLogger(Callback):
    """Keeps its own confusion matrix of the validation and test predictions (the ``preds`` the steps return).

    Each validation epoch: the matrix as an image and the per-class accuracies ``val/acc_class/<class>``.
    At test: the same as ``test/...``, plus ``confusion_matrix_test.{png,csv}`` and the row-normalised PNG in
    the run folder (matplotlib figures: drawn once a test, so their cost does not matter).
    """

    def __init__(self):
        self.confusion: MulticlassConfusionMatrix | None = None  # sized by the model's classes in setup
        self.test_images = 0  # images in the last test confusion matrix

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        num_classes = len(pl_module.class_names)  # linked from the DataModule by the CLI
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes).to(pl_module.device)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion.reset()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self.confusion.update(outputs["preds"], batch[1])

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._publish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = self._publish(trainer, pl_module, "test")
        self.test_images = int(matrix.sum())
        if trainer.is_global_zero:
            out_dir, names = run_dir(trainer), pl_module.class_names
            counts = confusion_figure(matrix, names, title=f"test ({self.test_images} images)")
            normalized = confusion_figure(
                matrix, names, normalize=True, title=f"test ({self.test_images} images), row-normalised"
            )
            atomic_write_text(out_dir / "confusion_matrix_test.csv", matrix_csv(matrix))
            pngs = {"confusion_matrix_test.png": counts, "confusion_matrix_test_normalized.png": normalized}
            for name, figure in pngs.items():
                atomic_write(out_dir / name, lambda f, figure=figure: figure.savefig(f, format="png", dpi=110))

    def _publish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> np.ndarray:
        """Per-class accuracies and the counts image to the loggers; returns the matrix."""
        matrix = self.confusion.compute().cpu().numpy()  # every process: compute() syncs under DDP
        if trainer.is_global_zero:
            per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
            names = pl_module.class_names
            values = {f"{stage}/acc_class/{metric_key(n)}": float(v) for n, v in zip(names, per_class)}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
            title = (
                f"validation, epoch {trainer.current_epoch}" if stage == "val" else f"test ({int(matrix.sum())} images)"
            )
            log_image(trainer, f"{stage}/confusion_matrix", confusion_image(matrix, names, title))
        return matrix


def matrix_csv(matrix: np.ndarray) -> str:
    buffer = io.StringIO()
    np.savetxt(buffer, matrix, fmt="%d", delimiter=",")
    return buffer.getvalue()


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
        images, labels = batch[0][: self.count], batch[1][: self.count]  # (K, C, H, W) in [0, 1], (K,)
        probabilities = pl_module.evaluate(images).float().softmax(dim=1)  # (K, classes); eval mode, no grad here
        confidence, predicted = probabilities.max(dim=1)
        self._sample = [t.cpu().numpy() for t in (images.float(), labels, predicted, confidence)]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sample is None or not trainer.is_global_zero:
            return
        images, labels, predicted, confidence = self._sample
        title = f"validation, epoch {trainer.current_epoch}: {int((predicted == labels).sum())}/{len(labels)} right"
        image = prediction_grid_image(images, labels, predicted, confidence, pl_module.class_names, self.columns, title)
        log_image(trainer, "val/sample_predictions", image)
        self._sample = None


class RunSummaryLogger(Callback):
    """The network's graph (TensorBoard) and the hyper-parameters with the run's final metrics, through each
    logger's ``log_hyperparams`` / ``log_metrics`` (CSV: hparams.yaml and metrics.csv; MLflow: params, metrics).

    The hyper-parameter record is written once, when a new run starts; for TensorBoard it declares the final
    metrics ``hp/...`` with a placeholder 0 at step 0 (its HPARAMS tab keeps a run's first record and shows each
    metric's latest value). The values follow at the end of fit and of test. A fit followed by a test fills all four.
    """

    FINAL = {
        "val/acc_best": "hp/val_acc_best",
        "val/loss": "hp/val_loss",
        "test/acc": "hp/test_acc",
        "test/loss": "hp/test_loss",
    }

    def __init__(self):
        self._fitted = False  # this process ran a fit: a test that follows belongs to that run's record

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fitted = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0 and trainer.is_global_zero:  # a new run (a resume has restored its step here)
            self._declare(trainer, pl_module)
            self._log_graph(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._fitted and trainer.is_global_zero:  # `fashion-mnist test`: its own evaluation folder
            self._declare(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_final(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_final(trainer, pl_module)

    @classmethod
    def final_metrics(cls, pl_module: L.LightningModule) -> dict[str, str]:
        """Logged key -> HPARAMS key: the fixed ones and the model's own extra metrics (``model.metrics``)."""
        extra = getattr(pl_module, "metric_names", [])
        return {**cls.FINAL, **{f"{stage}/{name}": f"hp/{stage}_{name}" for stage in ("val", "test") for name in extra}}

    def _declare(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = {"max_epochs": trainer.max_epochs, "precision": str(trainer.precision), "world_size": trainer.world_size}
        params = {"model": dict(pl_module.hparams), "trainer": run}
        if trainer.datamodule is not None:
            params["data"] = dict(trainer.datamodule.hparams)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # the only logger whose hparams take metrics
                logger.log_hyperparams(
                    params, metrics=dict.fromkeys(self.final_metrics(pl_module).values(), 0.0), step=0
                )
            else:
                logger.log_hyperparams(params)

    def _log_final(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            hp: float(trainer.callback_metrics[key])
            for key, hp in self.final_metrics(pl_module).items()
            if key in trainer.callback_metrics
        }  # every process: reading the metrics may sync them
        if trainer.is_global_zero and metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=max(trainer.global_step, 1))
                logger.save()

    @staticmethod
    def _log_graph(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.compile_network:  # tracing a torch.compile'd network is not supported
            return
        for logger in trainer.loggers:
            if not hasattr(logger.experiment, "add_graph"):
                continue
            network, was_training = pl_module.network, pl_module.network.training
            network.eval()  # trace without touching BatchNorm statistics or drawing dropout masks
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the tracer's deprecation and shape notes
                    logger.experiment.add_graph(network, pl_module.example_input_array.to(pl_module.device))
            finally:
                network.train(was_training)


class PredictionCSV(BasePredictionWriter):
    """``predict`` -> ``predictions.csv``: one row per image file (or test image), unreadable files included.

    Columns: file, predicted (class name), probability (of that class), one probability column per class, error
    (why a file could not be read; empty otherwise). Written atomically to the run folder, or to ``output``.
    A file name that is not valid UTF-8 is written with backslash escapes for its undecodable bytes.
    """

    def __init__(self, output: str | None = None):  # default: <run folder>/predictions.csv
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices):
        probabilities = torch.cat(predictions).float()  # (n, classes): this process's share
        batches = batch_indices[0]  # one list per dataloader (there is one), each a list of per-batch indices
        indices = torch.tensor([i for batch in batches for i in batch], device=probabilities.device)  # (n,)
        if trainer.world_size > 1:  # every process: gather the shares, then rank 0 puts them in file order
            probabilities, indices = gather_shares(pl_module, probabilities, indices)
        if not trainer.is_global_zero:
            return
        count = int(indices.max()) + 1 if len(indices) else 0
        names = getattr(trainer.datamodule, "predict_names", None) or [str(i) for i in range(count)]  # a DataModule
        skipped = getattr(trainer.datamodule, "predict_skipped", {})  # of your own may name its images, or not
        ordered = torch.empty(len(names), probabilities.shape[1])
        ordered[indices.cpu()] = probabilities.cpu()  # (N, classes) in file order (DDP padding repeats rows)
        path = Path(self.output) if self.output else run_dir(trainer) / "predictions.csv"
        text = predictions_csv(names, ordered, pl_module.class_names, skipped)
        atomic_write(path, lambda f: f.write(text.encode("utf-8", errors="backslashreplace")))
        print(f"predictions for {len(ordered):,} images: {path}", file=sys.stderr, flush=True)


def gather_shares(pl_module: L.LightningModule, values: torch.Tensor, indices: torch.Tensor):
    """All processes' (values (n, C), indices (n,)), padded to the longest share with index -1 and dropped."""
    longest = int(pl_module.all_gather(torch.tensor(len(indices), device=values.device)).max())
    pad = longest - len(indices)
    values = torch.cat([values, values.new_zeros(pad, values.shape[1])])
    indices = torch.cat([indices, indices.new_full((pad,), -1)])
    values, indices = pl_module.all_gather(values).flatten(0, 1), pl_module.all_gather(indices).flatten(0, 1)
    keep = indices >= 0
    return values[keep], indices[keep]


def predictions_csv(
    names: list[str], probabilities: torch.Tensor, class_names: list[str], skipped: dict[str, str]
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "predicted", "probability", *class_names, "error"])
    best, predicted = probabilities.max(dim=1)  # (N,), (N,)
    for name, p, k, row in zip(names, best.tolist(), predicted.tolist(), probabilities.tolist()):
        writer.writerow([name, class_names[k], f"{p:.6f}", *(f"{q:.6f}" for q in row), ""])
    for name, why in skipped.items():
        writer.writerow([name, "", "", *([""] * len(class_names)), why])
    return buffer.getvalue()
