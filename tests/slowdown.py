"""A callback for tests/test_resilience.py, loaded by a training subprocess (tests/ on PYTHONPATH).

From global step ``after`` on, it touches ``marker`` and sleeps ``pause`` seconds after every batch, so the
test can see that training is mid-epoch and send a real signal from outside before the epoch ends.
The sleep changes timing only, never the numbers.
"""

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class MarkAndSlowDown(Callback):
    def __init__(self, marker: str, after: int = 10, pause: float = 0.1):
        self.marker, self.after, self.pause = Path(marker), after, pause

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.after:
            self.marker.touch()
            time.sleep(self.pause)
