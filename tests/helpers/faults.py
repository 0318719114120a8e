"""Fault injection for the tests, loaded by a training subprocess through `--trainer.callbacks+=faults.HangOnRank`
(tests/helpers on PYTHONPATH, or this file copied into the folder the command runs in): it changes timing only,
never the numbers."""

import os
import signal
import time

from lightning.pytorch.callbacks import Callback


class HangOnRank(Callback):
    """After global step ``after``, process ``rank`` stops taking part for ``seconds`` (a stuck peer): the
    others wait for it in the next collective."""

    def __init__(self, rank: int = 1, after: int = 5, seconds: float = 120):
        self.rank, self.after, self.seconds = rank, after, seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.after:
            time.sleep(self.seconds)


class SignalAt(Callback):
    """SIGTERM to this process after optimizer step ``step``: a scheduler's preemption at a known batch."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class StallSetup(Callback):
    """Waits ``seconds`` in ``setup``, before training begins, saying so: a signal can arrive there."""

    def __init__(self, seconds: float = 60):
        self.seconds = seconds

    def setup(self, trainer, pl_module, stage: str) -> None:
        print("stalling in setup", flush=True)
        time.sleep(self.seconds)
