"""The random number generators' states in every checkpoint, restored when ``fit`` resumes (exact resume).

Stock Lightning checkpoints do not carry them, so a resumed run would draw other dropout masks and random crops
than the uninterrupted one. The states are checkpoint-safe values (tensors, ints, tuples), so checkpoints still
load with ``weights_only=True``. The CLI adds this callback to every Trainer.
"""

import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def collect_rng_states() -> dict:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),  # uint8 tensor
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian),
        "python": random.getstate(),  # (version, tuple of 625 ints, None)
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStates(Callback):
    """Saves the torch, NumPy and Python RNG states with each checkpoint; restores them when ``fit`` resumes.

    The states are restored in ``on_train_start``, after everything a resumed run does that the uninterrupted
    one did not do at that point (rebuilding the model, the model summary's forward pass, the sanity check),
    and right before the next training step draws a random number. ``validate``/``test``/``predict`` leave
    the generators alone.
    """

    def __init__(self):
        self._saved: dict | None = None

    def state_dict(self) -> dict:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict or None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved is not None:
            restore_rng_states(self._saved)
            self._saved = None
