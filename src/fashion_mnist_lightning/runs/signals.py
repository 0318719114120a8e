"""Ctrl-C (SIGINT) or a scheduler's SIGTERM: finish the current batch, checkpoint the exact position, stop.

The signal handler only sets a flag; the checkpoint is written at the next batch boundary, so it holds a
consistent state (weights, optimizer, scheduler, loop counters, RNG states, the position in the epoch).
It goes to the run's ``checkpoints/last.ckpt``, which ``--ckpt_path last`` resumes. A second Ctrl-C stops
at once without a checkpoint (a second SIGTERM changes nothing: schedulers send it twice). The CLI adds this
callback to every Trainer; the exit code is 128 + signal.
"""

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from fashion_mnist_lightning.runs.checkpoint_io import LAST

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Set once a signal has stopped this command: from then on a SIGTERM changes nothing. A Slurm preemption sends
# it twice (slurmstepd, then srun forwarding its own), and the repeat must not turn a clean stop into a traceback
# or run Lightning's SIGTERM handler (a collective inside a signal handler) while the command is ending.
STOPPING = threading.Event()


class TrainingInterrupted(Exception):
    """Raised after the interrupt checkpoint is written; carries the signal for the exit code."""

    def __init__(self, signum: int, path: Path, position: str):
        self.signum, self.path = signum, path
        super().__init__(
            f"{signal.Signals(signum).name} received: saved {position} to {path}; continue exactly "
            "there with the same command plus --ckpt_path last (make: the same make command plus RESUME=1)"
        )


class Terminated(Exception):
    """SIGTERM outside the training loop (set-up, the sanity check, a test after fit): nothing new to save."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(
            f"{signal.Signals(signum).name} received outside the training loop: nothing new was saved; run the same "
            "command again (plus --ckpt_path last if this run has a checkpoint)"
        )


@contextmanager
def stop_on_sigterm():
    """While a command runs, SIGTERM is a clean stop (exit 143 with one line) rather than death by signal; the
    training loop hands it to CheckpointOnSignal, which stops at a batch boundary with a checkpoint instead.
    A Slurm requeue or preemption can come at any moment, set-up included."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame) -> None:
        if not STOPPING.is_set():
            STOPPING.set()
            raise Terminated(signum)

    STOPPING.clear()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if STOPPING.is_set() else previous)


class CheckpointOnSignal(Callback):
    """Under DDP a signal may reach one process only (``kill`` of rank 0) or all at slightly different batches
    (Ctrl-C in a terminal): after every batch the processes agree on the largest signal received anywhere (one
    tiny all-reduce; nothing at all with one process), so they all checkpoint and stop at the same batch."""

    def __init__(self):
        self.received: int | None = None
        self.position = "the end of training"  # where a signal noticed at on_train_end stopped the run
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received, self.position = None, "the end of training"
        STOPPING.clear()
        if threading.current_thread() is threading.main_thread():  # Python only delivers signals there
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}

    def _on_signal(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:  # Ctrl-C twice: stop now
            self._restore_handlers()
            raise KeyboardInterrupt
        # a SIGTERM repeated changes nothing (STOPPING); a scheduler's hard stop is SIGKILL after its grace time
        STOPPING.set()
        self.received = self.received or signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        if not self._agreed_signal(trainer, pl_module):
            return
        if batch_idx + 1 == trainer.num_training_batches:  # the epoch's last batch: let its validation and epoch
            trainer.should_stop = True  # end run (resumed from this batch, Lightning would skip both: no val/acc,
            self.position = f"the end of epoch {trainer.current_epoch}"  # no epoch curves); on_train_end then
            return  # checkpoints. No collective at epoch end: rank 0's progress bar syncs metrics there
        self._checkpoint_and_stop(trainer, f"epoch {trainer.current_epoch} after batch {batch_idx + 1}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self._agreed_signal(trainer, pl_module):  # at an epoch's end, or during the last validation
            self._checkpoint_and_stop(trainer, self.position)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _agreed_signal(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        if trainer.world_size == 1:
            return self.received or 0
        mine = torch.tensor(self.received or 0, device=pl_module.device)
        agreed = int(trainer.strategy.reduce(mine, reduce_op="max"))
        # a signal that arrived during the all-reduce is kept for the next batch, never overwritten
        self.received = agreed or self.received
        return agreed

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            stopped = signum == signal.SIGTERM and STOPPING.is_set()
            signal.signal(signum, signal.SIG_IGN if stopped else handler)  # not Lightning's handler while ending
        self._previous = {}

    def _checkpoint_and_stop(self, trainer: L.Trainer, position: str) -> None:
        signum, self.received = self.received, None
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # every process: it synchronises, rank 0 writes
        raise TrainingInterrupted(signum, path, position)


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where ``--ckpt_path last`` looks: last.ckpt in the run's checkpoint folder. Call it on every process."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath) / LAST
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / LAST
