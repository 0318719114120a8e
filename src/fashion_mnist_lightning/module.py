"""The LightningModule: one shared step, cross-entropy, torchmetrics, logging, optimizer and schedule."""

from collections.abc import Callable
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from fashion_mnist_lightning.network import SeedCNN
from fashion_mnist_lightning.rng import collect_rng_states, restore_rng_states

NUM_CLASSES = 10
PRIMITIVE = (bool, int, float, str, type(None), list, tuple, dict)


def metric_key(class_name: str) -> str:
    """'T-shirt/top' -> 'T-shirt_top': a '/' would split the TensorBoard tag."""
    return class_name.replace("/", "_").replace(" ", "_")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; raised before that step's backward, so the weights are the last good ones."""


class FashionMNISTClassifier(L.LightningModule):
    """Trains any network that maps raw images (N, 1, 28, 28) in [0, 1] to logits (N, 10).

    Hyper-parameters are saved primitive, so checkpoints load with ``weights_only=True``: through the CLI
    the network, optimizer and scheduler are saved as their config (class_path + init_args); objects
    passed in Python are not saved and must be passed again to ``load_from_checkpoint``.
    """

    def __init__(
        self,
        network: nn.Module | None = None,  # default: SeedCNN()
        optimizer: OptimizerCallable | None = None,  # default: AdamW(lr=1e-3)
        scheduler: LRSchedulerCallable | None = None,  # stepped every optimizer step; OneCycleLR's total_steps
        # may be left null and is then the run's length
        label_smoothing: float = 0.0,  # cross-entropy target smoothing, 0 = plain cross-entropy
        class_names: list[str] | None = None,  # default: data.CLASS_NAMES
        compile: bool = False,  # torch.compile the network in place (GPU: faster; this tiny CPU net: slower)
        channels_last: bool = False,  # NHWC memory format. CPU: max-pool runs 2x faster (SeedCNN epoch -15 %);
        # with bf16 autocast, VGGNet steps 2-5x faster on a CPU with AVX-512-BF16/AMX
        tta_flip: bool = False,  # evaluation (val/test/predict): average the logits of each image and its mirror
    ):
        super().__init__()
        self.save_hyperparameters()
        self._drop_unsaveable_hparams()
        self.network = network if network is not None else SeedCNN()
        self.optimizer_factory: Callable = optimizer or partial(torch.optim.AdamW, lr=1e-3)
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.compile_network = compile
        self.channels_last = channels_last
        self.tta_flip = tta_flip
        if class_names is None:
            from fashion_mnist_lightning.data import CLASS_NAMES

            class_names = list(CLASS_NAMES)
        self.class_names = list(class_names)

        accuracy = partial(MulticlassAccuracy, num_classes=NUM_CLASSES, average="micro")
        per_class = partial(MulticlassAccuracy, num_classes=NUM_CLASSES, average=None)
        confusion = partial(MulticlassConfusionMatrix, num_classes=NUM_CLASSES)
        self.train_acc, self.val_acc, self.test_acc = accuracy(), accuracy(), accuracy()
        self.val_acc_class, self.test_acc_class = per_class(), per_class()
        self.val_confusion, self.test_confusion = confusion(), confusion()
        self.val_acc_best = MaxMetric()

    def _drop_unsaveable_hparams(self) -> None:
        """Keep only primitive hyper-parameters (Lightning 2.6 loads checkpoints with weights_only=True)."""
        unsaveable = [k for k, v in self.hparams.items() if not isinstance(v, PRIMITIVE)]
        for store in (self._hparams, self._hparams_initial):
            for key in unsaveable:
                store.pop(key, None)

    def configure_model(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        if self.compile_network:
            self.network.compile()  # in place: state_dict keys stay as they are, checkpoints stay portable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)  # (N, 1, 28, 28) float in [0, 1] -> (N, 10) logits

    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation: with ``tta_flip``, the mean of the image's and its mirror image's logits."""
        logits = self(images)  # (N, 10)
        return (logits + self(images.flip(-1))) / 2 if self.tta_flip else logits

    # ------------------------------------------------------------------------------------------------
    # steps

    def model_step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images) if self.training else self.evaluate(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, logits.argmax(dim=1), labels

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, preds, labels = self.model_step(batch)
        self.train_acc.update(preds, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,  # 1 process: free
                 batch_size=len(labels))
        return loss

    def on_before_backward(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):  # one host sync per step: free on a CPU, microseconds on a GPU
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}); "
                "stopped before that step changed the weights, checkpoints kept: lower the learning rate "
                "(--model.optimizer.init_args.lr) or check the data, then resume from a checkpoint")

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, labels = self.model_step(batch)
        self._update_eval_metrics(preds, labels, self.val_acc, self.val_acc_class, self.val_confusion)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(labels))

    def test_step(self, batch, batch_idx: int) -> None:
        loss, preds, labels = self.model_step(batch)
        self._update_eval_metrics(preds, labels, self.test_acc, self.test_acc_class, self.test_confusion)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.evaluate(images).softmax(dim=1)  # (N, 10) class probabilities

    @staticmethod
    def _update_eval_metrics(preds, labels, accuracy, per_class, confusion) -> None:
        accuracy.update(preds, labels)
        per_class.update(preds, labels)
        confusion.update(preds, labels)

    # ------------------------------------------------------------------------------------------------
    # epoch hooks: metrics are updated per step and computed (and synced) once per epoch

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # the sanity check's validation does not count

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_acc.compute(), prog_bar=True, sync_dist=True)  # equal on all ranks already
        self.train_acc.reset()

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def on_validation_epoch_end(self) -> None:
        accuracy = self.val_acc.compute()
        self.log("val/acc", accuracy, prog_bar=True, sync_dist=True)
        self._log_per_class("val", self.val_acc_class.compute())
        self.val_acc.reset()
        self.val_acc_class.reset()
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(accuracy)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute(), sync_dist=True)
        self._log_per_class("test", self.test_acc_class.compute())
        self.test_acc.reset()
        self.test_acc_class.reset()

    def _log_per_class(self, stage: str, values: torch.Tensor) -> None:
        named = {f"{stage}/acc_class/{metric_key(n)}": v for n, v in zip(self.class_names, values)}
        self.log_dict(named, sync_dist=True)

    # ------------------------------------------------------------------------------------------------
    # checkpoints carry the RNG states, so a resumed fit draws the same dropout masks and crops

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        resuming_fit = self._trainer is not None and self.trainer.state.fn == "fit"
        if resuming_fit and "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])

    # ------------------------------------------------------------------------------------------------

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        run_length = {}
        if getattr(self.scheduler_factory, "keywords", {}).get("total_steps", 0) is None:
            run_length["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **run_length)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
