"""Training techniques from the CIFAR-10 speedruns (airbench) as Lightning callbacks for strong.yaml.

- ``DataDependentInit``: before the first step, a network that has ``init_from_data(images)`` (AirNet's patch
  whitening) gets it called with training images.
- ``FreezeWhiteningBias`` (optional, not in strong.yaml): AirNet's whitening bias learns in the first part of the
  run only; frozen, backward skips the gradient of the largest activations.
- ``Lookahead``: every few steps in the second part of the run, an exponential average of the weights is
  taken and the live weights are reset to it.
"""

import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

# WeightAveraging warns about any module with a configure_model hook because sharded layers would not be averaged;
# this module's hook only sets the memory format (and optionally compiles), so the warning does not apply.
warnings.filterwarnings("ignore", message=r"You're using the WeightAveraging callback with a model that overrides")


class DataDependentInit(L.Callback):
    """Calls ``network.init_from_data(images)`` with the first ``num_images`` training images (float in [0, 1],
    (N, C, H, W)) at the start of a new fit; a resumed fit keeps the values its checkpoint holds.

    Every process computes the same values from the same images, so DDP needs no broadcast.
    """

    def __init__(self, num_images: int = 5000):
        self.num_images = num_images

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        network = getattr(pl_module, "network", None)
        if trainer.ckpt_path is not None or not hasattr(network, "init_from_data"):
            return
        network.init_from_data(first_training_images(trainer, self.num_images).to(pl_module.device))


def first_training_images(trainer: L.Trainer, count: int) -> torch.Tensor:
    """Up to ``count`` training images, float in [0, 1] (N, C, H, W): from the template's in-memory set, or from
    the batches of any other DataModule's train_dataloader."""
    datamodule = trainer.datamodule
    if hasattr(datamodule, "train_set") and hasattr(datamodule.train_set, "images"):
        images = datamodule.train_set.images[:count]  # (N, C, H, W) uint8
    else:
        batches, images = iter(datamodule.train_dataloader()), []
        while sum(map(len, images)) < count and (batch := next(batches, None)) is not None:
            images.append(batch[0] if isinstance(batch, (tuple, list)) else batch)
        images = torch.cat(images)[:count]
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


class FreezeWhiteningBias(L.Callback):
    """airbench's whitening-bias schedule: the bias of the network's whitening conv (``network.whiten.bias``) is
    trained for the first ``until`` fraction of the run's optimizer steps and frozen after.

    The whitening conv's weights are fixed, so once its bias is too nothing before the first residual group needs a
    gradient and backward skips the input gradient of that group's first conv, on the largest maps (27x27): about
    5 % of a training step on 2 CPU cores (``benchmarks/step_time.py``). Not in strong.yaml: frozen after 3 of 24
    epochs it scored 95.02 / 94.87 % on seeds 1 / 2 against 95.13 / 95.09 % trained throughout (README "What
    mattered"); add it with ``--trainer.callbacks+=fashion_mnist_lightning.speedrun.FreezeWhiteningBias``.

    A frozen parameter gets no gradient, so the optimizer leaves it alone (``zero_grad`` sets gradients to None).
    Whether it trains is decided from the step count before every batch, so a resumed run freezes at the same
    step. Under DDP the bias keeps training (DDP expects a gradient for every parameter it was built with).
    """

    def __init__(self, until: float = 0.125):
        self.until = until

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        whiten = getattr(getattr(pl_module, "network", None), "whiten", None)
        if whiten is None or whiten.bias is None or trainer.world_size > 1:
            return
        whiten.bias.requires_grad_(trainer.global_step < self.until * trainer.estimated_stepping_batches)


class Lookahead(WeightAveraging):
    """airbench's lookahead: from ``start`` (fraction of the run's steps), every ``every_n_steps`` steps the
    average is moved towards the live weights, ``avg <- d * avg + (1 - d) * live`` with
    ``d = decay ** every_n_steps * (step / total_steps) ** 3``, and the live weights are then reset to ``avg``.
    At the end of training the live weights are the average (as with any ``WeightAveraging``).

    Built on Lightning's ``WeightAveraging``, which keeps the averaged copy (torch's ``AveragedModel``, buffers
    included: BatchNorm's running statistics are averaged too) and checkpoints it; the library has no step-dependent
    decay and no copy-back, which this subclass adds. Because the live weights are reset to the average after every
    update, validation runs on the live weights (no swap), and checkpoints taken before the first update are left
    as they are (the base class would store the never-updated copy, i.e. the initial weights, as the model).
    """

    def __init__(self, decay: float = 0.95, every_n_steps: int = 5, start: float = 0.25):
        super().__init__(use_buffers=True, multi_avg_fn=self._average)
        self.decay, self.every_n_steps, self.start = decay, every_n_steps, start
        self.total_steps = 1
        self.step = 0  # the optimizer step the average is being updated at

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total_steps = max(1, int(trainer.estimated_stepping_batches))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False
        self.step = step_idx + 1  # optimizer steps taken
        return self.step >= self.start * self.total_steps and self.step % self.every_n_steps == 0

    @torch.no_grad()
    def _average(self, averages: list[torch.Tensor], currents: list[torch.Tensor], _) -> None:
        weight = self.decay**self.every_n_steps * (self.step / self.total_steps) ** 3
        for average, current in zip(averages, currents):
            if average.is_floating_point():
                average.lerp_(current, 1 - weight)
            else:  # BatchNorm's num_batches_tracked
                average.copy_(current)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        updates = self._started_updates()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._started_updates() != updates:
            self._copy_average_to_current(pl_module)  # the base class's copy

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        pass  # the live weights are the average: no swap

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pass

    def on_train_end(self, trainer, pl_module) -> None:
        if self._started_updates():
            self._copy_average_to_current(pl_module)  # the base class's copy

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._started_updates():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # validate/test/predict load the averaged weights, stored as the model's: nothing to restore. A fit resumed
        # from before the first update has no average yet.
        if self._average_model is not None and "averaging_state" in checkpoint:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def _started_updates(self) -> int:
        return 0 if self._average_model is None else int(self._average_model.n_averaged)
