"""`fashion-mnist predict` -> predictions.csv: one row per image file (or test image), unreadable files included.

Columns: file, predicted (class name), probability (of that class), one probability column per class, error
(why a file could not be read; empty otherwise). Written to the run folder, or to ``output`` if given.
"""

import csv
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionCSV(BasePredictionWriter):
    def __init__(self, output: str | None = None):  # default: <run folder>/predictions.csv
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices):
        probabilities = torch.cat(predictions).float()  # (N, 10), in file order
        datamodule = trainer.datamodule
        path = Path(self.output or Path(trainer.log_dir or ".") / "predictions.csv")
        write_csv(path, datamodule.predict_names, probabilities, pl_module.class_names, datamodule.predict_skipped)
        print(f"predictions for {len(probabilities):,} images: {path}", file=sys.stderr)


def write_csv(path: Path, names: list[str], probabilities: torch.Tensor, class_names: list[str],
              skipped: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    best, predicted = probabilities.max(dim=1)  # (N,), (N,)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", "probability", *class_names, "error"])
        for name, p, k, row in zip(names, best.tolist(), predicted.tolist(), probabilities.tolist()):
            writer.writerow([name, class_names[k], f"{p:.6f}", *(f"{q:.6f}" for q in row), ""])
        for name, why in skipped.items():
            writer.writerow([name, "", "", *([""] * len(class_names)), why])
