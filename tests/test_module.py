"""The LightningModule: learning, metrics against a manual count, parameter groups, checkpoint round trip, the
logging that only the seen steps pay for."""

from functools import partial

import pytest
import torch
from lightning import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassF1Score

from fashion_mnist_lightning.callbacks import ConfusionMatrixLogger
from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.network import VGGNet


def quiet_trainer(**kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


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


def test_accuracy_loss_and_confusion_equal_a_manual_count():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (200,), generator=generator)
    wrong = torch.randint(0, 10, (200,), generator=generator)
    preds = torch.where(torch.rand(200, generator=generator) < 0.7, labels, wrong)
    images = torch.zeros(200, 1, 28, 28)
    images.view(200, -1)[torch.arange(200), preds] = 1.0  # logits = first ten pixels -> argmax = preds
    model = FashionMNISTClassifier(network=FirstTenPixels())
    confusion = ConfusionMatrixLogger()
    results = quiet_trainer(callbacks=[confusion]).validate(
        model, DataLoader(TensorDataset(images, labels), batch_size=64), verbose=False
    )[0]
    manual = torch.zeros(10, 10, dtype=torch.long)
    for t, p in zip(labels.tolist(), preds.tolist()):
        manual[t, p] += 1
    assert torch.equal(confusion.confusion.compute().cpu(), manual)
    assert results["val/acc"] == pytest.approx((preds == labels).float().mean().item())
    logits = images.flatten(1)[:, :10]
    expected_loss = torch.nn.functional.cross_entropy(logits, labels)  # the mean over all images, not batches
    assert results["val/loss"] == pytest.approx(expected_loss.item(), rel=1e-6)


def test_hparams_stay_primitive_when_objects_are_passed():
    model = FashionMNISTClassifier(network=FirstTenPixels(), optimizer=torch.optim.SGD, label_smoothing=0.1)
    assert "network" not in model.hparams and "optimizer" not in model.hparams
    assert model.hparams["label_smoothing"] == 0.1 and "network" not in model.hparams_initial


def test_no_weight_decay_on_biases_and_normalisation_parameters():
    model = FashionMNISTClassifier(network=VGGNet(width=4))
    decayed, biases, norms = model.parameter_groups()
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in biases["params"] + norms["params"])
    assert biases["weight_decay"] == norms["weight_decay"] == 0.0 and "weight_decay" not in decayed
    batchnorm = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert batchnorm and batchnorm == {id(p) for p in norms["params"]}
    assert sum(len(g["params"]) for g in (decayed, biases, norms)) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(model.parameter_groups(), weight_decay=0.05)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0, 0.0]


def test_norm_lr_scale_multiplies_the_normalisation_groups_lr_with_and_without_onecycle():
    model = FashionMNISTClassifier(
        network=VGGNet(width=4), optimizer=partial(torch.optim.SGD, lr=0.1), norm_lr_scale=64
    )
    optimizer = model.configure_optimizers()
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"weights": 0.1, "biases": 0.1, "norms": 6.4}
    schedule = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.5, total_steps=10, div_factor=5.0)
    model = FashionMNISTClassifier(
        network=VGGNet(width=4), optimizer=torch.optim.SGD, scheduler=schedule, norm_lr_scale=64
    )
    optimizer = model.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.1, 6.4])  # max_lr / 5 to start


@pytest.mark.parametrize("one_pass_up_to", [256, 0])  # the views in one forward pass (a served request), or apart
def test_flip_shift_tta_weights_the_six_views(monkeypatch, one_pass_up_to):
    from fashion_mnist_lightning import module
    from fashion_mnist_lightning.data.augment import shift

    monkeypatch.setattr(module, "ONE_PASS_TTA_IMAGES", one_pass_up_to)
    torch.manual_seed(0)
    model = FashionMNISTClassifier(network=VGGNet(width=4), tta="flip_shift").eval()
    images = torch.rand(3, 1, 28, 28)
    moved = shift(images, 1, 1)
    assert torch.equal(moved[..., 1:, 1:], images[..., :-1, :-1]) and moved[..., 0, :].abs().sum() == 0
    with torch.no_grad():
        views = [images, images.flip(-1)]
        plain = sum(model(v) for v in views) / 4
        shifted = sum(model(shift(v, d, d)) for v in views for d in (-1, 1)) / 8
        assert torch.allclose(model.evaluate(images), plain + shifted, atol=1e-6)


def test_onecycle_total_steps_is_the_run_length():
    schedule = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01, total_steps=None)
    model = FashionMNISTClassifier(scheduler=schedule)
    loader = DataLoader(TensorDataset(torch.rand(40, 1, 28, 28), torch.arange(40) % 10), batch_size=10)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 8
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_flip_tta_is_the_mean_of_the_two_views_in_evaluation_and_off_in_training():
    torch.manual_seed(0)
    model = FashionMNISTClassifier(network=VGGNet(width=4), tta="flip").eval()
    images = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        expected = (model(images) + model(images.flip(-1))) / 2
        assert torch.allclose(model.evaluate(images), expected)
        _, logits, _ = model.model_step((images, torch.zeros(6, dtype=torch.long)))
        assert torch.equal(logits.argmax(1), expected.argmax(1))
        model.train()
        model.network.eval()  # no dropout/BN noise: only the TTA switch differs
        _, train_logits, _ = model.model_step((images, torch.zeros(6, dtype=torch.long)))
        assert torch.equal(train_logits.argmax(1), model(images).argmax(1))  # training: the plain view only


def test_data_that_must_not_be_mirrored_gets_no_mirrored_views_and_the_rest_reweighted():
    from fashion_mnist_lightning.data.augment import shift
    from fashion_mnist_lightning.module import tta_views

    images = torch.rand(3, 1, 28, 28)
    views = tta_views("flip_shift", images, mirror=False)
    assert [w for w, _ in views] == [0.5, 0.25, 0.25]
    assert torch.equal(views[1][1], shift(images, -1, -1)) and torch.equal(views[2][1], shift(images, 1, 1))
    torch.manual_seed(0)
    model = FashionMNISTClassifier(network=VGGNet(width=4), tta="flip", mirror=False).eval()
    with torch.no_grad():
        assert torch.equal(model.evaluate(images), model(images))  # "flip" on unmirrorable data: the image alone


def test_training_metrics_are_in_the_checkpoint_state():
    keys = FashionMNISTClassifier().state_dict().keys()
    assert {"train_loss.mean_value", "train_acc.tp", "val_acc_best.max_value"} <= keys
    assert not any(k.startswith(("val_acc.", "test_acc.")) for k in keys)


class EveryStepLogging(FashionMNISTClassifier):
    """The steps before the cheaper paths: in training the loss metric's forward and a self.log at every step, in
    validation the metrics logged at every batch."""

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self.model_step(batch)
        self.train_loss(loss, len(labels))
        self.train_acc.update(logits.argmax(dim=1), labels)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        outputs = super().validation_step(batch, batch_idx)
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log_dict(self.val_metrics)
        return outputs

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)


class BarRecorder(Callback):
    """What the progress bar shows at each of its refreshes (it refreshes in its own on_train_batch_end, before),
    and a checkpoint in the middle of the second epoch (as a signal's is written)."""

    def __init__(self, folder):
        self.shown: list[tuple[int, dict]] = []
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = trainer.progress_bar_callback
        if (batch_idx + 1) % bar.refresh_rate == 0 or batch_idx + 1 == trainer.num_training_batches:
            self.shown.append((trainer.global_step, dict(bar.get_metrics(trainer, pl_module))))
        if trainer.global_step == 35:
            trainer.save_checkpoint(self.folder / "middle.ckpt")


def logged_run(folder, module_class) -> tuple[dict, list, dict, list[dict]]:
    """Two epochs of 22 batches (the last one partial) logged every 5 steps, the bar refreshed every 3: the
    TensorBoard scalars, what the bar showed, the end's callback metrics and the states of a checkpoint inside the
    second epoch and of the last one."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seed_everything(0)
    images, labels = torch.rand(700, 1, 28, 28), torch.randint(0, 10, (700,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(images[:64], labels[:64]), batch_size=32)
    model = module_class(
        network=VGGNet(width=4),
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        metrics={"f1": partial(MulticlassF1Score, average="macro")},
    )
    bar = BarRecorder(folder)
    trainer = Trainer(
        accelerator="cpu", max_epochs=2, log_every_n_steps=5, logger=TensorBoardLogger(folder, name="", version=0),
        callbacks=[TQDMProgressBar(refresh_rate=3), bar, ModelCheckpoint(folder, filename="last")],
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, loader, val)
    events = EventAccumulator(str(folder / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items()}
    states = [torch.load(folder / name, weights_only=False)["state_dict"] for name in ("middle.ckpt", "last.ckpt")]
    return scalars, bar.shown, metrics, states  # (weights_only=False: the metrics' partial in the hparams)


def test_logging_only_what_is_seen_logs_shows_and_saves_what_logging_every_step_did(tmp_path):
    cheap = logged_run(tmp_path / "cheap", FashionMNISTClassifier)
    every = logged_run(tmp_path / "every", EveryStepLogging)
    scalars, shown, metrics, states = cheap
    assert scalars == every[0]  # every key, step and value
    assert [step for step, _ in scalars["train/loss_step"]] == [4, 9, 14, 19, 24, 29, 34, 39]  # every 5th step
    assert len(scalars["train/loss_epoch"]) == len(scalars["train/acc"]) == 2
    assert shown == every[1] and len(shown) == 2 * 8 and all("train/loss_step" in m for _, m in shown)
    assert metrics == every[2] and {"train/loss", "train/loss_epoch", "train/acc", "val/f1"} <= metrics.keys()
    assert len(scalars["val/acc"]) == len(scalars["val/f1"]) == len(scalars["val/acc_best"]) == 2
    for state, expected in zip(states, every[3]):  # a checkpoint inside an epoch and at its end
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    assert states[0]["train_acc.tp"] + states[0]["train_acc.fn"] == 13 * 32  # the second epoch's 13 steps so far
