"""`fashion-mnist report --ckpt_path X`: a visual report of one run, written into the run's folder.

    <run>/report/learning_curves.png        train/val loss and accuracy per epoch (from the run's logger records)
    <run>/report/confusion_matrix.png       test set, counts
    <run>/report/confusion_matrix_normalized.png   test set, each row divided by its class size
    <run>/report/per_class.csv              precision, recall, F1, one-vs-rest accuracy per class
    <run>/report/confident_mistakes.png     the test images the model got wrong with the highest probability
    <run>/report/report.md                  ties them together

The checkpoint is evaluated on the test split of the data set it was trained on (Fashion-MNIST's 10,000 test
images, or your own), as `fashion-mnist test` would (with the model's test-time augmentation). A report is derived
output: running it again replaces the files in <run>/report/ and nothing else.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from fashion_mnist_lightning.errors import UserError
from fashion_mnist_lightning.extras.loading import load_classifier, load_datamodule
from fashion_mnist_lightning.figures import confusion_figure, learning_curves, prediction_grid
from fashion_mnist_lightning.runs.checkpoint_io import run_folder
from fashion_mnist_lightning.runs.folders import resolve_checkpoint

CURVE_TAGS = ("train/loss_epoch", "val/loss", "train/acc", "val/acc")


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(epoch, value), ...]} for CURVE_TAGS from the records the run's logger left in ``run``: TensorBoard
    event files (a resumed run has several), CSVLogger's metrics.csv or MLflow's file store (``metrics/<tag>``).

    Epoch-level values are logged at the step an epoch ended; Lightning's ``epoch`` metric maps that step to
    its epoch. A step written twice (a resume repeats no step, but a re-run test might) keeps its last value.
    """
    for reader in (tensorboard_scalars, csv_scalars, mlflow_scalars):
        scalars = reader(run)
        if scalars:
            break
    epoch_at = {step: int(value) for step, value in scalars.get("epoch", {}).items()}
    curves = {}
    for tag in CURVE_TAGS:
        points = sorted(scalars.get(tag, {}).items())
        if points:
            curves[tag] = [(epoch_at.get(step, i) + 1, value) for i, (step, value) in enumerate(points)]
    return curves


def tensorboard_scalars(run: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from the event files directly in ``run``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})  # 0 = keep every point
    events.Reload()
    logged = set(events.Tags().get("scalars", []))
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in ("epoch", *CURVE_TAGS) if tag in logged}


def csv_scalars(run: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from CSVLogger's metrics.csv: a row per logging call, empty where a metric was not
    part of that call."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    scalars: dict[str, dict[int, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for tag in ("epoch", *CURVE_TAGS):
                if row.get(tag):
                    scalars.setdefault(tag, {})[int(row["step"])] = float(row[tag])
    return scalars


def mlflow_scalars(run: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from an MLflow file-store run: ``metrics/<tag>`` holds 'timestamp value step' lines."""
    scalars = {}
    for tag in ("epoch", *CURVE_TAGS):
        path = run / "metrics" / tag
        if path.is_file():
            lines = (line.split() for line in path.read_text().splitlines() if line.strip())
            scalars[tag] = {int(step): float(value) for _, value, step in lines}
    return scalars


@torch.inference_mode()
def predict_test_set(model, datamodule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The test split as the DataModule hands it out: images (N, C, H, W) as batched (uint8 or float), labels (N,),
    and the model's class probabilities (N, classes)."""
    datamodule.prepare_data()
    datamodule.setup("test")
    images, labels, probabilities = [], [], []
    for batch in datamodule.test_dataloader():
        batch_images, batch_labels = datamodule.on_after_batch_transfer(batch, 0)  # float in [0, 1] on the CPU
        images.append(batch[0])
        labels.append(batch_labels)
        probabilities.append(model.evaluate(batch_images.float()).float().softmax(dim=1))
    return torch.cat(images), torch.cat(labels), torch.cat(probabilities)


def as_float(images: torch.Tensor) -> np.ndarray:
    return (images.float().div(255) if images.dtype == torch.uint8 else images.float()).numpy()


def class_statistics(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> tuple[np.ndarray, dict]:
    """The confusion matrix (C, C) (rows = true class, columns = predicted) and, per class, support, precision,
    recall (= the class's own accuracy), F1 and one-vs-rest accuracy ((TP + TN) / all), all from torchmetrics.
    A class never predicted gets precision 0."""
    from torchmetrics.functional.classification import (
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
        multiclass_stat_scores,
    )

    per_class = dict(num_classes=num_classes, average=None)
    tp, fp, tn, fn, support = multiclass_stat_scores(predicted, labels, **per_class).T  # (C,) each
    table = {
        "support": support.numpy(),
        "precision": multiclass_precision(predicted, labels, **per_class).numpy(),
        "recall": multiclass_recall(predicted, labels, **per_class).numpy(),
        "f1": multiclass_f1_score(predicted, labels, **per_class).numpy(),
        "accuracy_ovr": ((tp + tn) / (tp + fp + tn + fn)).numpy(),
    }
    return multiclass_confusion_matrix(predicted, labels, num_classes=num_classes).numpy(), table


def most_confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, count: int) -> np.ndarray:
    """Indices of the wrong predictions, highest predicted probability first."""
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:count]


def write_table(path: Path, class_names, table: dict[str, np.ndarray]) -> None:
    lines = ["class,support,precision,recall,f1,accuracy_ovr"]
    for i, name in enumerate(class_names):
        lines.append(
            f"{name},{table['support'][i]},{table['precision'][i]:.4f},{table['recall'][i]:.4f},"
            f"{table['f1'][i]:.4f},{table['accuracy_ovr'][i]:.4f}"
        )
    path.write_text("\n".join(lines) + "\n")


def markdown(
    ckpt_path: Path, checkpoint_epoch: int, class_names, matrix: np.ndarray, table: dict, curves: dict, tta: str
) -> str:
    accuracy = np.trace(matrix) / matrix.sum()
    views = "" if tta == "none" else f", test-time augmentation {tta}"
    rows = "\n".join(
        f"| {name} | {table['support'][i]} | {100 * table['precision'][i]:.1f} | "
        f"{100 * table['recall'][i]:.1f} | {100 * table['f1'][i]:.1f} | "
        f"{100 * table['accuracy_ovr'][i]:.2f} |"
        for i, name in enumerate(class_names)
    )
    off_diagonal = matrix - np.diag(np.diag(matrix))
    pairs = sorted(np.ndindex(matrix.shape), key=lambda ij: -off_diagonal[ij])[:5]
    confused = "\n".join(
        f"- {class_names[i]} taken for {class_names[j]}: {off_diagonal[i, j]} images"
        for i, j in pairs
        if off_diagonal[i, j]
    )
    val = curves.get("val/acc", [])
    best = max(val, key=lambda point: point[1]) if val else None
    best_val = f"{100 * best[1]:.2f} % (epoch {best[0]})" if best else "not logged"
    curves_part = (
        "![learning curves](learning_curves.png)"
        if curves
        else "No epoch metrics (TensorBoard events, metrics.csv or MLflow metrics) were found in the run folder."
    )
    return f"""# Report: {ckpt_path.name}

- checkpoint: `{ckpt_path}` (after epoch {checkpoint_epoch + 1})
- test accuracy: **{100 * accuracy:.2f} %** on {int(matrix.sum()):,} test images{views}
  (float32 on the CPU; the test of a bf16 run may differ in the last digit)
- best validation accuracy during training: {best_val}

## Learning curves

{curves_part}

## Confusion matrix (test)

Rows are the true class, columns the predicted one.

![confusion matrix, counts](confusion_matrix.png)
![confusion matrix, row-normalised](confusion_matrix_normalized.png)

Most confused:

{confused or "- none"}

## Per class (test)

Recall is the class's own accuracy (the share of its images named right); accuracy (one-vs-rest) also counts
the images of other classes correctly not given this name. Also in `per_class.csv`.

| class | images | precision % | recall % | F1 % | accuracy (one-vs-rest) % |
|---|---:|---:|---:|---:|---:|
{rows}

## Most confident mistakes (test)

Title: predicted class and its probability, then the true class.

![most confident mistakes](confident_mistakes.png)
"""


def write_report(ckpt_path: Path, data_dir: Path | None = None, output: Path | None = None, mistakes: int = 24) -> Path:
    """Evaluate the checkpoint on its data set's test split and write every report file; returns the report folder.
    ``data_dir``: where a data set with that argument (Fashion-MNIST) finds its files, None = as trained."""
    model, checkpoint = load_classifier(ckpt_path)
    datamodule = load_datamodule(checkpoint, data_dir=None if data_dir is None else str(data_dir), download=False)
    images, labels, probabilities = predict_test_set(model, datamodule)  # (N, C, H, W), (N,), (N, classes)
    labels, probabilities = labels.long().numpy(), probabilities.numpy()
    names = model.class_names
    matrix, table = class_statistics(
        torch.from_numpy(labels), torch.from_numpy(probabilities.argmax(axis=1)), len(names)
    )
    run = run_folder(ckpt_path)
    curves = read_curves(run)

    output = output or run / "report"
    output.mkdir(parents=True, exist_ok=True)
    figures = {
        "learning_curves.png": learning_curves(curves, title=run.name) if curves else None,
        "confusion_matrix.png": confusion_figure(matrix, names, title=f"test ({len(labels):,} images), counts"),
        "confusion_matrix_normalized.png": confusion_figure(
            matrix, names, normalize=True, title=f"test ({len(labels):,} images), row-normalised"
        ),
    }
    worst = most_confident_mistakes(labels, probabilities, mistakes)
    figures["confident_mistakes.png"] = prediction_grid(
        as_float(images[worst]),
        labels[worst],
        probabilities[worst].argmax(axis=1),
        probabilities[worst].max(axis=1),
        names,
        title=f"the {len(worst)} most confident mistakes (test)",
    )
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(output / name, dpi=110)
    write_table(output / "per_class.csv", names, table)
    epoch = int(checkpoint.get("epoch", -1))
    views = model.tta if model.tta_below >= 1 else f"{model.tta} where the top probability < {model.tta_below}"
    (output / "report.md").write_text(markdown(ckpt_path, epoch, names, matrix, table, curves, views))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fashion-mnist report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt_path", required=True, help="a .ckpt written by `fashion-mnist fit`, or best / last of the newest run"
    )
    parser.add_argument(
        "--data_dir",
        type=Path,
        help="where the data set finds its files (Fashion-MNIST's data_dir); default: as trained",
    )
    parser.add_argument("--output", type=Path, help="default: <run folder>/report")
    parser.add_argument("--mistakes", type=int, default=24, help="images in the confident-mistakes grid")
    args = parser.parse_args(argv)
    try:
        output = write_report(resolve_checkpoint(args.ckpt_path), args.data_dir, args.output, args.mistakes)
    except OSError as err:
        raise UserError(
            f"cannot write the report to {err.filename or args.output} ({err.strerror or err}); "
            "pass --output with a writable folder"
        ) from None
    print(f"report: {output / 'report.md'}")
    return 0


if __name__ == "__main__":  # errors are printed by the command's one path: run it as `fashion-mnist report`
    from fashion_mnist_lightning.cli import main as command

    sys.exit(command(["report", *sys.argv[1:]]))
