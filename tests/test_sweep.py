"""`fashion-mnist sweep`: real trials on tiny budgets (fast config, few batches), real worker processes, real
signals, the embedded journal storage and a real PostgreSQL server."""

import csv
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, finish, free_port, progress, wait_for

TINY = {
    "trainer.max_epochs": 2,
    "trainer.limit_train_batches": 8,
    "trainer.limit_val_batches": 2,
    "trainer.limit_test_batches": 2,
}


def sweep_file(workspace, name: str = "tiny", **changes) -> Path:
    """A small sweep on the fast config, changed by ``changes`` (top-level keys of the sweep file)."""
    spec = {
        "configs": ["configs/fast.yaml"],
        "overrides": dict(TINY),
        "space": {
            "model.optimizer.init_args.lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
            "data.batch_size": {"type": "categorical", "choices": [128, 256]},
        },
        "n_trials": 3,
        "sampler": {"type": "tpe", "seed": 0},
        "pruner": {"type": "none"},
        **changes,
    }
    path = workspace.path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def rows(workspace, study: str) -> list[dict]:
    with open(workspace.path / "lightning_logs/sweeps" / study / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def trials(workspace, study: str, storage: str | None = None):
    import optuna

    if storage is None:
        from optuna.storages.journal import JournalFileBackend

        path = workspace.path / "lightning_logs/sweeps" / study / "study.journal"
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def test_a_sweep_completes_writes_results_and_best_yaml_reproduces_the_best_trial(workspace):
    path = sweep_file(workspace, test=True)
    result = workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=600)
    folder = workspace.path / "lightning_logs/sweeps/tiny"
    table = rows(workspace, "tiny")
    assert [r["state"] for r in table] == ["COMPLETE"] * 3 and all(float(r["test/acc"]) > 0.3 for r in table)
    assert all(0 < float(r["cpu_seconds"]) < 2.5 * float(r["seconds"]) for r in table)  # 2 cores, and a bit
    for n in range(3):  # every trial an ordinary run of the template
        run = folder / f"trial_{n}"
        assert (run / "checkpoints/last.ckpt").is_file() and list(run.glob("events.out.tfevents.*"))
    for name in ("optimization_history", "param_importances", "slice"):
        assert (folder / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    best = max(table, key=lambda r: float(r["val/acc"]))
    assert f"best trial {best['number']}: val/acc = {float(best['val/acc']):.4f}" in result.output
    assert "test/acc over 3 trials:" in result.output

    workspace.run("fashion-mnist fit --config lightning_logs/sweeps/tiny/best.yaml", timeout=300)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workspace.runs()[-1]), size_guidance={"scalars": 0})
    events.Reload()
    assert max(e.value for e in events.Scalars("val/acc")) == pytest.approx(float(best["val/acc"]), abs=1e-7)

    summary = workspace.run(f"fashion-mnist sweep --config {path.name} --summary")
    assert f"best trial {best['number']}" in summary.output and "trial 3" not in summary.output


def test_running_the_same_command_again_continues_without_repeating_trials(workspace):
    path = sweep_file(workspace, n_trials=2)
    workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=600)
    first = [(t.number, t.params) for t in trials(workspace, "tiny")]
    again = workspace.run(f"fashion-mnist sweep --config {path.name}")
    assert "already has 2 finished trials" in again.output
    workspace.run(f"fashion-mnist sweep --config {path.name} --n_trials 3", timeout=600)
    after = trials(workspace, "tiny")
    assert [(t.number, t.params) for t in after[:2]] == first and len(after) == 3
    assert all(t.state.name == "COMPLETE" for t in after)


def test_a_trial_that_must_be_pruned_is_pruned_and_its_folder_kept(workspace):
    lrs = [0.004, 0.003, 1e-9]  # the third learns nothing: below the median of the first two after epoch 0
    path = sweep_file(
        workspace,
        space={"model.optimizer.init_args.lr": {"type": "categorical", "choices": lrs}},
        sampler={"type": "grid", "seed": 5},
        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        overrides={**TINY, "trainer.max_epochs": 3},
    )
    workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=600)
    by_lr = {t.params["model.optimizer.init_args.lr"]: t for t in trials(workspace, "tiny")}
    assert [by_lr[lr].number for lr in lrs] == [0, 1, 2], "a grid runs its points in the order written"
    assert by_lr[1e-9].state.name == "PRUNED" and len(by_lr[1e-9].intermediate_values) == 1
    pruned = workspace.path / "lightning_logs/sweeps/tiny/trial_2"  # kept: its config and its curve up to the prune
    assert (pruned / "config.yaml").is_file() and list(pruned.glob("events.out.tfevents.*"))
    assert by_lr[0.004].state.name == by_lr[0.003].state.name == "COMPLETE"


def test_two_workers_share_the_embedded_storage(workspace):
    path = sweep_file(workspace, n_trials=4)
    # as `make sweep WORKERS=2` starts them: together, numbered
    workers = [workspace.start(f"fashion-mnist sweep --config {path.name} --worker {i}") for i in range(2)]
    for process, log in workers:
        assert finish(process, log, timeout=900).returncode == 0
    done = trials(workspace, "tiny")
    assert [t.state.name for t in done] == ["COMPLETE"] * 4  # n_trials exactly: no worker starts one too many
    assert len({t.number for t in done}) == len({tuple(sorted(t.params.items())) for t in done}) == 4  # all differ
    pids = {t.user_attrs["pid"] for t in done}
    assert len(pids) == 2  # both workers ran trials


def test_a_worker_killed_with_kill_9_mid_trial_and_a_rerun_completes_the_study(workspace):
    path = sweep_file(
        workspace, n_trials=2, overrides={**TINY, "trainer.max_epochs": 3, "trainer.limit_train_batches": 60}
    )
    process, log = workspace.start(f"fashion-mnist sweep --config {path.name}")
    wait_for(lambda: progress(log, 1) >= 10, 400, "trial 0's second epoch", process)  # last.ckpt of epoch 0 exists
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert [t.state.name for t in trials(workspace, "tiny")] == ["RUNNING"]  # left behind by the dead worker
    workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=900)
    done = trials(workspace, "tiny")
    assert done[0].state.name == "FAIL" and sum(t.state.name == "COMPLETE" for t in done) == 2
    retry = next(t for t in done if t.user_attrs.get("retry_of") == 0)
    assert retry.params == done[0].params and retry.user_attrs["resume_from"].endswith("trial_0/checkpoints/last.ckpt")


def test_sigterm_stops_a_worker_like_fit_and_the_rerun_continues_that_trial(workspace):
    path = sweep_file(workspace, n_trials=1, overrides={**TINY, "trainer.limit_train_batches": 120})
    process, log = workspace.start(f"fashion-mnist sweep --config {path.name}")
    wait_for(lambda: progress(log, 0) >= 10, 400, "trial 0 mid-epoch", process)
    process.send_signal(signal.SIGTERM)
    result = finish(process, log)
    assert result.returncode == 128 + signal.SIGTERM
    [line] = result.lines("stopped:")
    assert "run the same sweep command again" in line
    workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=600)
    done = trials(workspace, "tiny")
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE"] and done[1].user_attrs["retry_of"] == 0


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"space": {"model.optimizer.init_args.lrr": {"type": "float", "low": 0.001, "high": 0.01}}},
            "did you mean 'model.optimizer.init_args.lr'",
        ),
        ({"space": {"model.label_smoothing": {"type": "float", "low": 0.2, "high": 0.1}}}, "must be below high"),
        ({"space": {"model.label_smoothing": {"type": "uniform", "low": 0.0, "high": 0.1}}}, "unknown distribution"),
        ({"sampler": {"type": "cmaes"}}, "unknown sampler 'cmaes'"),
        ({"pruner": {"type": "hyperband"}}, "unknown pruner 'hyperband'"),
        ({"objective": {"metric": "val/accuracy"}}, "'val/accuracy' is never logged; the runs log"),
    ],
)
def test_sweep_file_mistakes_are_one_line_exit_2_and_write_nothing(workspace, in_process, change, expected):
    path = sweep_file(workspace, **change)
    result = in_process(f"fashion-mnist sweep --config {path.name}", expect=2)
    assert expected in result.error
    assert not (workspace.path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "url, expected",
    [("not-a-url", "is not a database URL"), ("postgresql://nobody@127.0.0.1:9/none", "cannot open the storage")],
)
def test_a_malformed_or_unreachable_storage_is_one_line(workspace, in_process, url, expected):
    path = sweep_file(workspace)
    result = in_process(f"fashion-mnist sweep --config {path.name} --storage {url}", expect=2)
    assert expected in result.error and not (workspace.path / "lightning_logs/sweeps").exists()


def test_multi_seed_statistics(workspace):
    """configs/sweeps/seeds.yaml at toy size: every seed once (grid), mean ± std, min and max of test/acc."""
    seeds = yaml.safe_load((workspace.path / "configs/sweeps/seeds.yaml").read_text())
    seeds["overrides"] = {**seeds.get("overrides", {}), **TINY}
    path = workspace.path / "seeds.yaml"
    path.write_text(yaml.safe_dump(seeds))
    result = workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=900)
    table = rows(workspace, "seeds")
    assert sorted(int(r["seed_everything"]) for r in table) == [0, 1, 2, 3, 4]
    line = next(line for line in result.output.splitlines() if line.startswith("test/acc over 5 trials"))
    values = [100 * float(r["test/acc"]) for r in table]
    assert f"min {min(values):.2f}%" in line and f"max {max(values):.2f}%" in line


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL cluster on a loopback port, started and stopped here (Debian's postgresql)."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed; .ci/run installs Debian's postgresql")
    bin_dir, port = binaries[-1].parent, free_port()
    home = Path(tempfile.mkdtemp(prefix="pg-"))  # not under pytest's root-only tmp: the server's user must reach it
    data, sockets = home / "data", home / "sockets"
    sockets.mkdir()
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the package's postgres user runs the cluster
        as_user = ["runuser", "-u", "postgres", "--"]
        for path in (home, sockets):
            shutil.chown(path, "postgres")

    def run(program: str, *args: str, user: list[str] = as_user) -> None:
        subprocess.run([*user, str(bin_dir / program), *args], check=True, capture_output=True, timeout=120)

    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
        run("pg_ctl", "-D", str(data), "-o", options, "-w", "-t", "60", "start", "-l", str(home / "postgres.log"))
        try:
            run("psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE optuna", user=[])
            yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
        finally:
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=120,
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_real_postgresql_study(workspace, postgres):
    path = sweep_file(workspace, n_trials=4)
    command = f"fashion-mnist sweep --config {path.name} --storage {postgres}"
    workers = [workspace.start(f"{command} --worker {i}") for i in range(2)]
    for process, log in workers:
        assert finish(process, log, timeout=900).returncode == 0
    done = trials(workspace, "tiny", storage=postgres)
    assert [t.state.name for t in done] == ["COMPLETE"] * 4 and len({t.user_attrs["pid"] for t in done}) == 2
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4
    assert not (workspace.path / "lightning_logs/sweeps/tiny/study.journal").exists()  # the database held it
    assert len(rows(workspace, "tiny")) == len(done)


def test_the_dashboard_serves_the_study_and_a_sigterm_mid_request_stops_it(workspace):
    import json
    import threading
    import urllib.request

    path = sweep_file(workspace, n_trials=1)
    workspace.run(f"fashion-mnist sweep --config {path.name}", timeout=600)
    port = free_port()
    url = f"http://localhost:{port}/api/studies"
    process, log = workspace.start(f"fashion-mnist sweep --config {path.name} --dashboard {port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-1500:]
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    studies = json.loads(response.read())["study_summaries"]
                    break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not serve within 90 s"
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["tiny"]
        busy = workspace.run(f"fashion-mnist sweep --config {path.name} --dashboard {port}", timeout=120, expect=2)
        assert f"port {port}" in busy.output

        def load() -> None:  # requests in flight when the signal lands (a stop swallowed there hung the server)
            for _ in range(200):
                try:
                    urllib.request.urlopen(url, timeout=2).read()
                except OSError:
                    return

        clients = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for client in clients:
            client.start()
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()[-1500:]
        assert "stopped: the dashboard" in log.read_text() and "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs/sweeps").glob("*.yaml")))
def test_every_shipped_sweep_file_is_valid_and_its_first_point_trains(workspace, monkeypatch, name):
    import argparse

    from fashion_mnist_lightning.sweep import load_sweep, preflight

    monkeypatch.chdir(workspace.path)
    flags = argparse.Namespace(n_trials=None, timeout=None, storage=None, study_name=None, worker=0)
    sweep = load_sweep(Path("configs/sweeps") / name, flags)
    assert sweep.space and sweep.metric == "val/acc"
    preflight(sweep)  # one batch of the first point of the space: every key exists, the objective is logged
    assert not (workspace.path / "lightning_logs").exists()  # nothing written
