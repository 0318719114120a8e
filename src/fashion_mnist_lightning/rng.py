"""The random number generators' states as checkpoint-safe values (tensors, ints, tuples: ``weights_only=True``).

Stock Lightning checkpoints do not carry them, so a resumed run draws different dropout masks and random crops
than the uninterrupted one. The template's LightningModule saves them with every checkpoint and restores them
when ``fit`` resumes.
"""

import random

import numpy as np
import torch


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
