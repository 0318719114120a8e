"""A callback that times what the benchmark reports, written as JSON lines to $BENCH_OUT.

Training epoch: from on_train_epoch_start to the first of validation start / train epoch end, so the figure
covers the training batches only (the anchors' loops time the same thing). Time to first step: from the
launch of the process (BENCH_T0, set by the parent) to the first training batch. Predict: images per second.
"""

import json
import os
import time

from lightning.pytorch.callbacks import Callback


def emit(record: dict) -> None:
    with open(os.environ["BENCH_OUT"], "a") as f:
        f.write(json.dumps(record) + "\n")


class BenchTimer(Callback):
    def __init__(self, label: str = "template"):
        self.label, self.start, self.first_step_seen = label, None, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.first_step_seen and "BENCH_T0" in os.environ:
            self.first_step_seen = True
            emit({"loop": self.label, "first_step_s": time.time() - float(os.environ["BENCH_T0"])})

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def _stop(self, trainer):
        if self.start is not None:
            emit({"loop": self.label, "epoch": trainer.current_epoch, "epoch_s": time.perf_counter() - self.start})
            self.start = None

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop(trainer)

    def on_predict_epoch_start(self, trainer, pl_module):
        self.predict_start = time.perf_counter()

    def on_predict_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self.predict_start
        images = sum(len(batch) for batch in trainer.predict_loop.predictions)
        emit({"loop": self.label, "predict_images": images, "predict_s": seconds, "images_per_s": images / seconds})
