"""The LightningModule: learning, metrics against a manual count, checkpoint round trip."""

import pytest
import torch
from lightning import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fashion_mnist_lightning.module import FashionMNISTClassifier


def quiet_trainer(**kwargs) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **kwargs)


class FirstTenPixels(nn.Module):
    """A 'network' whose logits are the first ten pixels: lets a test choose the predictions."""

    def forward(self, images):
        return images.flatten(1)[:, :10]


def test_overfits_one_batch():
    torch.manual_seed(0)
    images, labels = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    loader = DataLoader(TensorDataset(images, labels), batch_size=64)
    model = FashionMNISTClassifier(optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    trainer = quiet_trainer(max_epochs=150, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.callback_metrics["train/acc"] >= 0.99


def test_accuracy_and_confusion_equal_a_manual_count():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (200,), generator=generator)
    wrong = torch.randint(0, 10, (200,), generator=generator)
    preds = torch.where(torch.rand(200, generator=generator) < 0.7, labels, wrong)
    images = torch.zeros(200, 1, 28, 28)
    images.view(200, -1)[torch.arange(200), preds] = 1.0  # logits = first ten pixels -> argmax = preds
    model = FashionMNISTClassifier(network=FirstTenPixels())
    results = quiet_trainer().validate(model, DataLoader(TensorDataset(images, labels), batch_size=64),
                                       verbose=False)[0]
    manual = torch.zeros(10, 10, dtype=torch.long)
    for t, p in zip(labels.tolist(), preds.tolist()):
        manual[t, p] += 1
    assert torch.equal(model.val_confusion.compute().cpu(), manual)
    assert results["val/acc"] == pytest.approx((preds == labels).float().mean().item())
    per_class = manual.diag().float() / manual.sum(1).clamp(min=1)
    assert results["val/acc_class/T-shirt_top"] == pytest.approx(per_class[0].item())
    assert results["val/acc_class/Ankle_boot"] == pytest.approx(per_class[9].item())


def test_hparams_stay_primitive_when_objects_are_passed():
    model = FashionMNISTClassifier(network=FirstTenPixels(), label_smoothing=0.1)
    assert "network" not in model.hparams and model.hparams["label_smoothing"] == 0.1


def test_onecycle_total_steps_is_the_run_length():
    from functools import partial

    schedule = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01, total_steps=None)
    model = FashionMNISTClassifier(scheduler=schedule)
    loader = DataLoader(TensorDataset(torch.rand(40, 1, 28, 28), torch.arange(40) % 10), batch_size=10)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 8
    assert trainer.lr_scheduler_configs[0].interval == "step"
