#!/usr/bin/env python3
"""Path (d): the same LightningModule fed the way the usual templates feed it.

torchvision's FashionMNIST + ToTensor + a plain shuffled DataLoader, with the template's own Trainer set-up
(default callbacks, TensorBoard logger, progress bar). Times training epochs with benchmarks/timing.py.
  python benchmarks/peer_path.py --data-dir /usr/share/datasets/fashion-mnist --epochs 2 --batch-size 256
"""

import argparse
import gzip
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch
import torchvision
from lightning import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).parent))
from fashion_mnist_lightning.callbacks import ConfusionMatrixLogger, RunSummaryLogger, SamplePredictionsLogger  # noqa: E402
from fashion_mnist_lightning.data.files import find_raw  # noqa: E402
from fashion_mnist_lightning.module import FashionMNISTClassifier  # noqa: E402
from timing import BenchTimer  # noqa: E402


def torchvision_root(data_dir: Path) -> Path:
    """torchvision expects ROOT/FashionMNIST/raw/<decompressed IDX files>."""
    root = Path(tempfile.mkdtemp(prefix="fmnist-peer-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, path in find_raw(data_dir).items():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--log-dir", default=tempfile.mkdtemp(prefix="peer-logs-"))
    a = p.parse_args()
    torch.manual_seed(0)
    root = torchvision_root(Path(a.data_dir))
    to_tensor = transforms.ToTensor()
    train = torchvision.datasets.FashionMNIST(str(root), train=True, transform=to_tensor)
    val = torchvision.datasets.FashionMNIST(str(root), train=False, transform=to_tensor)
    loader = torch.utils.data.DataLoader(train, batch_size=a.batch_size, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=1000)
    callbacks = [
        ModelCheckpoint(monitor="val/acc", mode="max", save_last=True),
        LearningRateMonitor(),
        ConfusionMatrixLogger(),
        SamplePredictionsLogger(),
        RunSummaryLogger(),
        TQDMProgressBar(refresh_rate=50),
        BenchTimer("peer"),
    ]
    trainer = Trainer(
        max_epochs=a.epochs,
        logger=TensorBoardLogger(a.log_dir, name="peer"),
        callbacks=callbacks,
        log_every_n_steps=50,
        limit_val_batches=1,
    )
    # the default config's module (channels_last, label smoothing, AdamW + OneCycle): only the feeding differs
    model = FashionMNISTClassifier(
        optimizer=partial(torch.optim.AdamW, lr=0.006, weight_decay=0.05),
        label_smoothing=0.1,
        channels_last=True,
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.006, pct_start=0.3, total_steps=None),
    )
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=val_loader)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
