"""Training techniques from the CIFAR-10 speedruns (airbench) as Lightning callbacks for strong.yaml.

- ``DataDependentInit``: before the first step, a network that has ``init_from_data(images)`` (AirNet's patch
  whitening) gets it called with training images.
- ``FreezeWhiteningBias`` (optional, not in strong.yaml): AirNet's whitening bias learns in the first part of the
  run only; frozen, backward skips the gradient of the largest activations.
- ``Lookahead``: every few steps in the second part of the run, an exponential average of the weights is
  taken and the live weights are reset to it (torch's ``AveragedModel`` of the network, a plain callback).
"""

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel


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
    if hasattr(datamodule, "train_set") and hasattr(datamodule.train_set, "first"):
        images = datamodule.train_set.first(count)  # (N, C, H, W) uint8
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


class Lookahead(L.Callback):
    """airbench's lookahead: from ``start`` (fraction of the run's steps), every ``every_n_steps`` steps the
    average is moved towards the live weights, ``avg <- d * avg + (1 - d) * live`` with
    ``d = decay ** every_n_steps * (step / total_steps) ** 3``, and the live weights are then reset to ``avg``.
    At the end of training the live weights are the average.

    The average is torch's ``AveragedModel`` of the network (buffers included: BatchNorm's running statistics are
    averaged too) with this step-dependent decay; the copy-back is this callback's. Because the live weights are
    reset to the average after every update, validation runs on the live weights. A checkpoint holds the average as
    the model's weights (what validate/test/predict load) and the live weights and the average under
    ``lookahead``, from which a resumed fit continues exactly; before the first update it is left as it is.
    """

    def __init__(self, decay: float = 0.95, every_n_steps: int = 5, start: float = 0.25):
        if not 0 < decay <= 1 or every_n_steps < 1 or not 0 <= start <= 1:
            raise ValueError(
                "Lookahead needs 0 < decay <= 1, every_n_steps >= 1 and 0 <= start <= 1, got "
                f"decay={decay}, every_n_steps={every_n_steps}, start={start}"
            )
        self.decay, self.every_n_steps, self.start = decay, every_n_steps, start
        self.total_steps = 1
        self.average: AveragedModel | None = None  # of the network, made at the first update
        self.updated_at = -1  # the optimizer step of the newest update (gradient accumulation calls the hook more)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total_steps = max(1, int(trainer.estimated_stepping_batches))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step  # optimizer steps taken
        if step == self.updated_at or step < self.start * self.total_steps or step % self.every_n_steps:
            return
        self.updated_at = step
        self._averaged(pl_module.network).update_parameters(pl_module.network)  # the first copies the live weights
        self._copy_back(pl_module.network)

    def _averaged(self, network: torch.nn.Module) -> AveragedModel:
        """The average, made on the network's device the first time it is needed."""
        if self.average is None:
            self.average = AveragedModel(network, use_buffers=True, multi_avg_fn=self._average)
        return self.average

    @torch.no_grad()
    def _average(self, averages: list[torch.Tensor], currents: list[torch.Tensor], _) -> None:
        weight = self.decay**self.every_n_steps * (self.updated_at / self.total_steps) ** 3
        for average, current in zip(averages, currents):
            if average.is_floating_point():
                average.lerp_(current, 1 - weight)
            else:  # BatchNorm's num_batches_tracked
                average.copy_(current)

    @torch.no_grad()
    def _copy_back(self, network: torch.nn.Module) -> None:
        averaged = (*self.average.module.parameters(), *self.average.module.buffers())
        for average, current in zip(averaged, (*network.parameters(), *network.buffers())):
            current.copy_(average)

    def _started(self) -> bool:
        return self.average is not None and int(self.average.n_averaged) > 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started():
            self._copy_back(pl_module.network)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if not self._started():
            return
        state = checkpoint["state_dict"]
        checkpoint["lookahead"] = {
            "live": {k: v for k, v in state.items() if k.startswith("network.")},
            "average": self.average.state_dict(),
        }
        state.update({f"network.{k}": v for k, v in self.average.module.state_dict().items()})

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # validate/test/predict load the average, stored as the model's weights: nothing to restore. A fit resumed
        # from before the first update has no average yet.
        if "lookahead" in checkpoint and trainer.state.fn == "fit":
            self._averaged(pl_module.network).load_state_dict(checkpoint["lookahead"]["average"])
            pl_module.load_state_dict(checkpoint["lookahead"]["live"], strict=False)
