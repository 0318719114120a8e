"""A throw-away one-node Slurm cluster for the tests: Debian's ``slurm-wlm`` and ``munge``, every file in one
temporary folder, loopback ports, started and stopped by the test session (like the PostgreSQL fixture).

The settings are the few a one-node cluster without systemd needs (root, no cgroups, no accounting): process
tracking by the parent-process tree, no task binding, ``JobRequeue=1``, and a short credential lifetime, without
which a requeued job waits two minutes before it runs again. Two partitions on the node: jobs go to ``batch``; a
job in ``urgent`` preempts them (requeued, as a cluster's preemptible partitions do). ``squeue``/``scontrol`` read
the same ``SLURM_CONF``.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CONF = """\
ClusterName=fml
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={home}/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/spool
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/slurmctld.log
SlurmdLogFile={home}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
JobRequeue=1
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
KillWait=30
MinJobAge=600
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=batch Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """``with Slurm() as slurm:`` a running cluster; ``slurm.env`` for the commands that talk to it."""

    def __init__(self, cpus: int = 2):
        self.cpus = cpus
        self.home = Path(tempfile.mkdtemp(prefix="slurm-"))
        self.env = {**os.environ, "SLURM_CONF": str(self.home / "slurm.conf")}
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> "Slurm":
        missing = [p for p in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(p) is None]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not installed; .ci/run installs Debian's slurm-wlm and munge")
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        home = self.home
        for sub in ("state", "spool"):
            (home / sub).mkdir()
        munge = home / "munge"  # its socket's folder must be open to all; the key's (keys/) to munge only
        (munge / "keys").mkdir(parents=True)
        shutil.copy("/etc/munge/munge.key", munge / "keys" / "munge.key")
        for path in (munge, munge / "keys", munge / "keys" / "munge.key"):
            shutil.chown(path, "munge", "munge")
        os.chmod(home, 0o755)
        os.chmod(munge, 0o755)
        os.chmod(munge / "keys", 0o700)
        os.chmod(munge / "keys" / "munge.key", 0o600)
        (home / "slurm.conf").write_text(
            CONF.format(home=home, ctld_port=free_port(), slurmd_port=free_port(), cpus=self.cpus)
        )
        (home / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", f"--socket={munge}/munge.socket",
             f"--key-file={munge}/keys/munge.key", f"--pid-file={munge}/keys/munged.pid",
             f"--log-file={munge}/keys/munged.log", f"--seed-file={munge}/keys/munged.seed"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for daemon in ("slurmctld", "slurmd"):
            log = open(home / f"{daemon}.out", "w")
            self.processes.append(subprocess.Popen([daemon, "-D"], env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited: {self.logs()}")
            state = self.ctl("show", "node", "localhost", check=False)
            if re.search(r"State=IDLE", state):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm node is not idle after 60 s: {state}\n{self.logs()}")
            time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        pid = self.home / "munge" / "keys" / "munged.pid"
        if pid.is_file():
            try:
                os.kill(int(pid.read_text()), 15)
            except (ValueError, ProcessLookupError):
                pass
        shutil.rmtree(self.home, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.home.glob("*.log*"))
        )

    def run(self, *argv: str, check: bool = True, cwd: Path | None = None) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60, cwd=cwd)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout + done.stderr

    def ctl(self, *args: str, check: bool = True) -> str:
        return self.run("scontrol", *args, check=check)

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> str:
        """Submit; the job id (for an array, the array's id)."""
        done = subprocess.run(
            ["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields of one job (the first, for an array id)."""
        text = self.ctl("show", "job", "-o", job_id)
        line = text.strip().splitlines()[0]
        return dict(re.findall(r"(\w[\w:/]*)=(\S*)", line))

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """Every job ``job_id`` names (an array's tasks), each as ``scontrol show job`` fields."""
        text = self.ctl("show", "job", "-o", job_id)
        return [dict(re.findall(r"(\w[\w:/]*)=(\S*)", line)) for line in text.strip().splitlines()]

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float) -> list[dict[str, str]]:
        """Until every task of ``job_id`` is in one of ``states``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(job_id)
            if jobs and all(j.get("JobState") in states for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not {states} after {timeout} s: {jobs}")
            time.sleep(0.5)
