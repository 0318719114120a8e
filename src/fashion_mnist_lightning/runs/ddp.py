"""DDP's process group at the end of a command: left cleanly, and a collective that failed named as such."""

import torch.distributed as dist


def distributed_failure(err: RuntimeError) -> bool:
    """A collective that failed because a peer is gone or stuck: torch's distributed errors, and gloo's timeouts
    and lost connections, which reach Python as a plain RuntimeError that only its words tell apart."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(w in text for w in ("timed out", "connection closed", "reset"))


def leave_process_group(finished: bool) -> None:
    """Shut DDP's process group down before the interpreter exits.

    Lightning leaves it open; gloo's worker threads then die in static destructors and the process can abort
    ("terminate called without an active exception", exit -6) after a run that succeeded. The barrier makes
    sure no rank is still inside a collective; after an error the peers may be gone, so no barrier then.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
