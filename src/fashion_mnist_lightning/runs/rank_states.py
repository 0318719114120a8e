"""Each DDP process's own running metric state in a checkpoint, so an epoch resumed mid-way logs what the epoch
never interrupted logs.

A torchmetrics state (a running loss sum, accuracy counts) is per process until the epoch's ``compute()`` syncs
it; a checkpoint holds rank 0's alone, so after a resume every process would continue from rank 0's counts. At
save, every process's state is gathered (every process saves, at the same batch, as Lightning requires); at load,
each takes its own. Resumed on another number of processes, the sums go to rank 0 and the others start empty.
"""

import lightning as L
import torch
from torchmetrics import Metric

KEY = "metric_states_by_rank"


def save(module: L.LightningModule, metrics: dict[str, Metric], checkpoint: dict) -> None:
    """Into ``checkpoint``: {metric.state: (world size, *shape) tensor}, one row per process. One collective per
    state under DDP; nothing with one process, whose own state is the checkpoint's."""
    if module.trainer.world_size == 1:
        return
    checkpoint[KEY] = {
        f"{name}.{state}": module.all_gather(value).cpu()
        for name, metric in metrics.items()
        for state, value in metric.metric_state.items()
    }


def load(checkpoint: dict, rank: int, world_size: int) -> None:
    """Put this process's own rows into the checkpoint's state_dict, before Lightning loads it."""
    states = checkpoint.get(KEY)
    if not states:
        return
    for key, rows in states.items():
        if rows.shape[0] == world_size:
            mine = rows[rank]
        else:  # another number of processes: the totals on rank 0, nothing on the others
            mine = rows.sum(0) if rank == 0 else torch.zeros_like(rows[0])
        checkpoint["state_dict"][key] = mine.clone()
