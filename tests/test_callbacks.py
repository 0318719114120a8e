"""The figure callbacks: every logger gets the images through its own image API (or as PNGs), under the same tags
and file names as before; the images of every validation epoch are drawn without matplotlib, the test PNGs with it."""

from types import SimpleNamespace

import numpy as np
import torch
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fashion_mnist_lightning import figures
from fashion_mnist_lightning.callbacks import ConfusionMatrixLogger, SamplePredictionsLogger, log_image
from fashion_mnist_lightning.data.files import CLASS_NAMES
from fashion_mnist_lightning.module import FashionMNISTClassifier


class Calls:
    """An experiment object that records the calls of its one image method."""

    def __init__(self, method: str):
        self.calls = []
        setattr(self, method, lambda *args, **kwargs: self.calls.append((args, kwargs)))


def test_log_image_hands_the_pixels_to_each_loggers_own_image_api_or_writes_a_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    tensorboard, mlflow = Calls("add_image"), Calls("log_image")
    other = SimpleNamespace(experiment=object(), version=3, save_dir=str(tmp_path), name="runs")  # CSV's, say
    loggers = [SimpleNamespace(experiment=tensorboard), SimpleNamespace(experiment=mlflow, run_id="abc"), other]
    log_image(SimpleNamespace(global_step=7, loggers=loggers, logger=other), "val/confusion_matrix", image)
    assert tensorboard.calls == [(("val/confusion_matrix", image), {"global_step": 7, "dataformats": "HWC"})]
    assert mlflow.calls == [(("abc", image, "val/confusion_matrix/step_000007.png"), {})]
    written = np.asarray(Image.open(tmp_path / "runs/version_3/figures/val_confusion_matrix_step000007.png"))
    assert np.array_equal(written, image)  # PNG: the same pixels


def test_the_callbacks_keep_their_tags_files_and_metrics_and_draw_matplotlib_only_for_the_test_pngs(
    tmp_path, monkeypatch
):
    made = []  # the matplotlib figures drawn

    class CountedFigure(figures.Figure):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("figsize"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(figures, "Figure", CountedFigure)
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.rand(64, 1, 28, 28), torch.arange(64) % 10), batch_size=32)
    model = FashionMNISTClassifier(network=nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), class_names=CLASS_NAMES)
    trainer = Trainer(
        accelerator="cpu",
        logger=[CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tensorboard")],
        callbacks=[ConfusionMatrixLogger(), SamplePredictionsLogger()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, loader, verbose=False)
    assert made == []  # a validation epoch's images: numpy and Pillow
    trainer.test(model, loader, verbose=False)
    assert len(made) == 2  # confusion_matrix_test.png and its row-normalised twin

    run = tmp_path / "csv/version_0"  # the first logger's folder: the run's
    assert {p.name for p in run.iterdir()} >= {
        "confusion_matrix_test.png",
        "confusion_matrix_test_normalized.png",
        "confusion_matrix_test.csv",
        "metrics.csv",
    }
    pngs = sorted(p.name for p in (run / "figures").iterdir())
    expected = ["test_confusion_matrix", "val_confusion_matrix", "val_sample_predictions"]
    assert pngs == [f"{name}_step000000.png" for name in expected]  # CSV: PNGs
    for name in pngs:
        with Image.open(run / "figures" / name) as png:
            assert png.mode == "RGB" and min(png.size) > 200
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/acc_class/T-shirt_top", "test/acc_class/Ankle_boot"} <= set(header)
    events = EventAccumulator(str(tmp_path / "tensorboard/version_0"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == [
        "test/confusion_matrix",
        "val/confusion_matrix",
        "val/sample_predictions",
    ]
    assert events.Images("val/sample_predictions")[0].width > 8 * 84  # TensorBoard: its own images
