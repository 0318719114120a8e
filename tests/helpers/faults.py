"""Fault injection for the multi-process tests, loaded by a training subprocess (tests/helpers on PYTHONPATH)
through `--trainer.callbacks+=faults.HangOnRank`: it changes timing only, never the numbers."""

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
