"""A Slurm job, as the template sees it: one signal path, and whether a job is still alive.

Lightning's ``SLURMEnvironment`` comes with its own requeue on SIGUSR1: a handler that writes ``hpc_ckpt_N.ckpt``
from inside the signal handler (mid-batch, possibly mid-collective) and calls ``scontrol requeue``. The template's
own path is the one every command already has (runs/signals.py): a SIGTERM, from ``scontrol requeue``, a preemption
or ``--signal=TERM@S`` before the time limit, stops every rank at the same batch boundary with one ``last.ckpt``,
and scripts/slurm/*.sbatch requeue the job when only its tasks were signalled. So Lightning's handler is off:
never two handlers racing, never an ``hpc_ckpt_N`` that ``--ckpt_path last`` would not read.
"""

import os
import shutil
import subprocess

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING"}


def with_cluster_environment(plugins: list) -> list:
    """The Trainer's plugins plus, inside a Slurm job started by srun, Slurm's environment with Lightning's
    auto-requeue off (unless the config names a cluster environment itself)."""
    if any(isinstance(p, ClusterEnvironment) for p in plugins) or not SLURMEnvironment.detect():
        return plugins
    return [*plugins, SLURMEnvironment(auto_requeue=False)]


def job() -> str | None:
    """This process's Slurm job id (an array task's own id), or None outside a job."""
    return os.environ.get("SLURM_JOB_ID")


def restarts() -> int:
    """How often this job was requeued before this start."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def job_alive(job_id: str) -> bool | None:
    """Whether Slurm still runs (or will run) ``job_id``; None when Slurm cannot be asked (no squeue here)."""
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(
            ["squeue", "--noheader", "--jobs", job_id, "--format=%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return False if "Invalid job id" in done.stderr else None  # gone from the controller's memory
    states = set(done.stdout.split())
    return bool(states & ALIVE)
