"""For tests/test_checkpoint_io.py: writes, at setup, which of the template's pieces the CLI's Trainer carries."""

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from fashion_mnist_lightning.runs.checkpoint_io import AtomicCheckpointIO
from fashion_mnist_lightning.runs.guards import FiniteLossGuard
from fashion_mnist_lightning.runs.rng import RNGStates
from fashion_mnist_lightning.runs.signals import CheckpointOnSignal


class ReportTrainer(Callback):
    def setup(self, trainer, pl_module, stage: str) -> None:
        found = [
            type(trainer.strategy.checkpoint_io).__name__
            if isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
            else "-"
        ]
        found += sorted(
            type(c).__name__
            for c in trainer.callbacks
            if isinstance(c, (CheckpointOnSignal, FiniteLossGuard, RNGStates))
        )
        Path("trainer.txt").write_text(" ".join(found))
