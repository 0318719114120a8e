"""A callback that times what the benchmark reports, written as JSON lines to $BENCH_OUT.

Training epoch: from on_train_epoch_start to the first of validation start / train epoch end, so the figure
covers the training batches only (the anchors' loops time the same thing). Whole epoch: from one
on_train_epoch_start to the next (the training batches, validation, the epoch-end hooks: checkpoints, figures,
logs), as benchmarks/bare_step.py times its own; the last epoch has none. Time to first step: from the
launch of the process (BENCH_T0, set by the parent) to the first training batch. Predict: images per second.
With --trainer.profiler=simple, the end of fit also writes Lightning's SimpleProfiler records: {action: [calls,
seconds, median seconds of a call]}.
"""

import json
import os
import statistics
import time

from lightning.pytorch.callbacks import Callback


def emit(record: dict) -> None:
    with open(os.environ["BENCH_OUT"], "a") as f:
        f.write(json.dumps(record) + "\n")


def profiled(trainer) -> dict[str, list] | None:
    """{action: [calls, seconds in all, median seconds of a call]} of the trainer's SimpleProfiler so far, or None
    without one."""
    durations = getattr(trainer.profiler, "recorded_durations", None)
    if durations is None:
        return None
    return {action: [len(d), sum(d), statistics.median(d)] for action, d in durations.items()}


class BenchTimer(Callback):
    def __init__(self, label: str = "template"):
        self.label, self.start, self.first_step_seen = label, None, False
        self.epoch_began: float | None = None  # the previous on_train_epoch_start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.first_step_seen and "BENCH_T0" in os.environ:
            self.first_step_seen = True
            emit({"loop": self.label, "first_step_s": time.time() - float(os.environ["BENCH_T0"])})

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()
        if self.epoch_began is not None:
            emit({"loop": self.label, "epoch": trainer.current_epoch - 1, "whole_s": self.start - self.epoch_began})
        self.epoch_began = self.start

    def _stop(self, trainer):
        if self.start is not None:
            emit({"loop": self.label, "epoch": trainer.current_epoch, "epoch_s": time.perf_counter() - self.start})
            self.start = None

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop(trainer)

    def on_fit_end(self, trainer, pl_module):
        if (profile := profiled(trainer)) is not None:
            emit({"loop": self.label, "profile": profile})

    def on_predict_epoch_start(self, trainer, pl_module):
        self.predict_start = time.perf_counter()

    def on_predict_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self.predict_start
        images = sum(len(batch) for batch in trainer.predict_loop.predictions)
        emit({"loop": self.label, "predict_images": images, "predict_s": seconds, "images_per_s": images / seconds})
