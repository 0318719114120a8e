"""Library noise, silenced while a command runs and only then: each filter names one message and why it is safe.

``quiet()`` is a context manager: the warning filters and the logging filter are in force inside it and gone after,
so importing this package changes nothing process-wide.
"""

import logging
import warnings
from contextlib import contextmanager

WARNINGS = (
    # Lightning 2.6's own use of torch's pytree API; nothing a user can change.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # A mid-epoch resume is exact here: the DataModule's checkpoint state puts the sampler back at its batch
    # (datamodule.py, tests/test_resume.py), which Lightning's check for a stateful DataLoader cannot see.
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # --ckpt_path last writes into the run's own, non-empty checkpoint folder on purpose.
    r"Checkpoint directory .* exists and is not empty",
    # bf16-mixed only changes the model summary's size estimate, which then assumes 32-bit weights.
    r"Precision bf16-mixed is not supported by the model summary",
    # val/acc_best is the max of val/acc, which torchmetrics already synced over all processes: syncing it again
    # would only reduce identical values (module.py).
    r".*self\.log\('val/acc_best'.*sync_dist=True",
    # The CLI hands LightningCLI its arguments itself (recipes by name expanded); the note is for Python callers.
    r"LightningCLI's args parameter is intended to run from within Python",
    # A machine with Slurm installed (a cluster's login node) but a command not started by srun: a local run,
    # as meant. Under a job, scripts/slurm/*.sbatch start the tasks with srun.
    r"The `srun` command is available on your system but is not used",
    # Optuna marks the journal-file storage experimental; the sweep's default, chosen on purpose (sweep.py).
    r".* is an experimental feature",
)


def not_noise(record: logging.LogRecord) -> bool:
    """Lightning's advertisement for its cloud loggers; and "`Trainer.fit` stopped: `max_epochs=18` reached.",
    which says what the user asked for and lands glued to the progress bar's last line."""
    text = str(record.getMessage())
    return not text.startswith("💡 Tip") and "` stopped: `" not in text


@contextmanager
def quiet():
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        for message in WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        logger.addFilter(not_noise)
        try:
            yield
        finally:
            logger.removeFilter(not_noise)
