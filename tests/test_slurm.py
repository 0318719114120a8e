"""scripts/slurm/*.sbatch on a real one-node Slurm cluster (Debian's slurm-wlm and munge, started here; see
tests/helpers/slurm.py), submitted as a user submits them: a 2-task DDP job stopped mid-epoch three times (by
`scontrol requeue`, by a preempting job, by the tasks' own signal as `--signal` sends it before the time limit)
ends COMPLETED in its own run folder, bit-identical to the job never interrupted, curves included; a 3-task
array of sweep workers over seeds, one of them requeued or killed mid-trial, completes the study with every seed
once; a typo fails once, in one line."""

import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from conftest import FASHION_MNIST, ROOT, TRACEBACK, epoch_scalars, progress, same_weights, weights
from helpers.slurm import Slurm

pytestmark = pytest.mark.slow
ENV = {"PATH": f"{FASHION_MNIST.parent}:{os.environ['PATH']}"}  # fashion-mnist on PATH, as in an activated venv
LONG = "--trainer.max_epochs=3 --trainer.limit_train_batches=200 --trainer.limit_val_batches=2"
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.fixture(scope="module")
def slurm():
    with Slurm(cpus=2) as cluster:
        yield cluster


@pytest.fixture
def project(workspace) -> Path:
    """The workspace with the scripts, as a clone has them; jobs are submitted from here."""
    (workspace.path / "scripts").symlink_to(ROOT / "scripts")
    return workspace.path


def submit(slurm: Slurm, project: Path, *args: str) -> str:
    return slurm.sbatch(*args, cwd=project, env=ENV)


def output(project: Path, name: str) -> str:
    path = project / name
    return path.read_text(errors="replace") if path.is_file() else ""


def after_start(text: str, start: int) -> str:
    """The part of a job's output since its start number ``start`` (0: the first run, 1: after one requeue)."""
    parts = re.split(r"^\S+ job \S+ start \d+ on ", text, flags=re.M)
    return parts[start + 1] if len(parts) > start + 1 else ""


def wait_until(condition, timeout: float, what: str, slurm: Slurm) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{slurm.logs()[-3000:]}")
        time.sleep(0.2)


def finished(slurm: Slurm, job: str, timeout: float = 400) -> list[dict]:
    try:
        return slurm.wait(job, DONE, timeout)
    except TimeoutError as err:
        slurm.run("scancel", job, check=False)
        pytest.fail(f"{err}\n{slurm.logs()[-3000:]}")


def batches(text: str, epoch: int) -> int:
    """The newest batch count the progress bar printed for ``epoch`` in ``text`` (see conftest.progress)."""
    counts = re.findall(rf"Epoch {epoch}: +\d+%\|[^|]*\| (\d+)/", text)
    return int(counts[-1]) if counts else 0


def test_a_job_requeued_preempted_and_signalled_mid_epoch_ends_as_if_never_interrupted(slurm, project, workspace):
    fit = f"scripts/slurm/fit.sbatch --config configs/ddp_cpu.yaml {LONG}".split()
    straight = submit(slurm, project, *fit)
    [done] = finished(slurm, straight)
    assert (done["JobState"], done["Restarts"]) == ("COMPLETED", "0"), output(project, f"slurm-{straight}.out")

    job = submit(slurm, project, *fit)
    out = lambda: output(project, f"slurm-{job}.out")  # noqa: E731
    interruptions = [
        ["scontrol", "requeue", job],  # an administrator's requeue: SIGTERM to the whole job, Slurm requeues it
        ["sbatch", "--partition=urgent", "--ntasks=2", "--output=/dev/null", "--wrap=sleep 1"],  # preempts this one
        ["scancel", "--signal=TERM", job],  # what --signal=TERM@90 sends before the time limit: the tasks only
    ]
    for start, command in enumerate(interruptions):  # in epoch 0 of the first start, epoch 1 of the second, ...
        mid_epoch = lambda n=start: batches(after_start(out(), n), n) >= 50  # noqa: E731
        wait_until(mid_epoch, 300, f"batch 50 of epoch {start} in start {start}", slurm)
        slurm.run(*command, cwd=project)
    [done] = finished(slurm, job)
    text = out()
    assert (done["JobState"], done["Restarts"], done["ExitCode"]) == ("COMPLETED", "3", "0:0"), text[-3000:]
    assert not TRACEBACK.search(text), text[-3000:]
    stops = [line for line in text.splitlines() if line.startswith("stopped: SIGTERM received: saved")]
    assert [f"epoch {n} after batch" in line for n, line in enumerate(stops)] == [True] * 3, stops
    assert text.count("requeued (its tasks were signalled") == 1  # only the third: the script requeued the job
    assert f"starting lightning_logs/slurm_{job}:" in after_start(text, 0)  # the first start began fresh...
    assert [after_start(text, n).count(f"resuming lightning_logs/slurm_{job}/") for n in (1, 2, 3)] == [1, 1, 1]
    runs = sorted(p.name for p in (project / "lightning_logs").iterdir())
    assert runs == sorted([f"slurm_{straight}", f"slurm_{job}"])  # one folder per job, however many starts
    assert not list(project.rglob("hpc_ckpt_*.ckpt"))  # Lightning's own requeue is off: one signal path
    a, b = (project / "lightning_logs" / f"slurm_{j}" for j in (straight, job))
    assert same_weights(weights(a / "checkpoints/last.ckpt"), weights(b / "checkpoints/last.ckpt"))
    assert epoch_scalars(a) == epoch_scalars(b)
    # README: a job's run evaluated from the login node by its config.yaml, into the run's own evaluations/
    workspace.run(f"fashion-mnist test --config lightning_logs/slurm_{job}/config.yaml --ckpt_path best", env=ENV)
    assert list((b / "evaluations").glob("test_*/events.out.tfevents.*"))


def study_trials(project: Path) -> list:
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(project / "lightning_logs/sweeps/seeds3/study.journal"))
    )
    return optuna.load_study(study_name="seeds3", storage=storage).get_trials()


@pytest.mark.parametrize("how", ["requeue", "kill -9"])
def test_an_array_of_sweep_workers_runs_every_seed_once_though_one_is_stopped_mid_trial(slurm, project, how):
    seeds = yaml.safe_load((ROOT / "configs/sweeps/seeds.yaml").read_text())
    seeds["space"]["seed_everything"]["choices"] = [0, 1, 2]
    seeds["test"] = False
    seeds["overrides"] = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 150, "trainer.limit_val_batches": 2}
    (project / "seeds3.yaml").write_text(yaml.safe_dump(seeds))
    array = submit(slurm, project, "--array=0-2", "scripts/slurm/sweep.sbatch", "--config", "seeds3.yaml")
    log = project / f"slurm-{array}_1.out"
    wait_until(lambda: log.is_file() and progress(log, 0) >= 50, 400, "array task 1 mid-trial", slurm)
    task = next(j["JobId"] for j in slurm.jobs(array) if j.get("ArrayTaskId") == "1")
    if how == "requeue":  # SIGTERM: the trial stops with its last.ckpt, fails, and is queued again by its worker
        slurm.ctl("requeue", task)
    else:  # the task's process dies (the OOM killer, a segfault): its trial stays RUNNING until another worker
        [running] = [t for t in study_trials(project) if t.user_attrs.get("slurm_job") == task]  # sees via squeue
        os.kill(running.user_attrs["pid"], signal.SIGKILL)  # that the job is gone
    tasks = finished(slurm, array, timeout=600)
    texts = {j["ArrayTaskId"]: output(project, f"slurm-{array}_{j['ArrayTaskId']}.out") for j in tasks}
    states = {j["ArrayTaskId"]: (j["JobState"], j["Restarts"]) for j in tasks}
    stopped = ("COMPLETED", "1") if how == "requeue" else ("FAILED", "0")  # killed: its job ends, the study not
    assert states == {"0": ("COMPLETED", "0"), "1": stopped, "2": ("COMPLETED", "0")}, texts
    assert not any(TRACEBACK.search(t) for t in texts.values()), texts

    trials = study_trials(project)
    complete = sorted(t.params["seed_everything"] for t in trials if t.state.name == "COMPLETE")
    assert complete == [0, 1, 2], [(t.number, t.state.name, t.params, t.user_attrs) for t in trials]
    [failed] = [t for t in trials if t.state.name == "FAIL"]  # the stopped one, continued by its retry
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == failed.number)
    assert retry.state.name == "COMPLETE"
    # requeued: resumed from the checkpoint the stop wrote; killed in its only epoch: no checkpoint yet, run afresh
    assert retry.user_attrs.get("resume_from", "").endswith("checkpoints/last.ckpt") == (how == "requeue")
    assert len(trials) == 4


def test_a_job_with_a_typo_fails_once_in_one_line(slurm, project):
    job = submit(
        slurm, project, "scripts/slurm/fit.sbatch", "--config", "configs/ddp_cpu.yaml", "--trainer.max_epoch=1"
    )
    [done] = finished(slurm, job, timeout=200)
    text = output(project, f"slurm-{job}.out")
    assert (done["JobState"], done["Restarts"], done["ExitCode"]) == ("FAILED", "0", "2:0"), text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did you mean 'trainer.max_epochs'" in errors[0], text[-3000:]
    assert not TRACEBACK.search(text) and "requeued" not in text
    assert not (project / "lightning_logs").exists() or not any((project / "lightning_logs").rglob("*.ckpt"))
