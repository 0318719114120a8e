"""Stop training on a non-finite loss before it changes the weights."""

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN or Inf; raised before that optimizer step."""


class FiniteLossGuard(Callback):
    """Raises NonFiniteLossError before an optimizer step whose loss (one process) or gradients (DDP) are NaN or
    Inf.

    Under DDP it checks the gradients, not the loss: they are already averaged over all processes when this hook
    runs, so every process sees the same verdict at the same step and they stop together (a check of each
    process's own loss could stop one process while the others wait for it in the next collective). With one
    process the loss says the same for less work. With ``16-mixed`` precision the GradScaler already skips
    such steps (an overflow is normal there), so the guard leaves them to it. The CLI adds it to every Trainer.
    """

    def __init__(self):
        self._loss: float | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.precision == "16-mixed" or self._loss is None:
            return
        if trainer.world_size == 1:
            checked = self._loss
        else:
            checked = torch.nn.utils.get_total_norm([p.grad for p in pl_module.parameters() if p.grad is not None])
        if math.isfinite(checked.item()):  # one host sync per step (a Python float: ~0.2 us, torch.isfinite ~7 us)
            return
        loss = float(self._loss) if self._loss is not None else float("nan")
        raise NonFiniteLossError(
            f"training loss is {loss} (gradients not finite) at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); stopped before that step changed the weights, checkpoints kept: "
            "lower the learning rate (--model.optimizer.init_args.lr) or check the data, then resume from a "
            "checkpoint"
        )
