"""`fashion-mnist sweep --config configs/sweeps/NAME.yaml`: an Optuna study whose trials are ordinary fits.

A sweep file names the run config(s) every trial starts from, fixed overrides, and a search space by the same
dotted keys the CLI uses:

    configs: [configs/default.yaml]               # after configs/base.yaml, like --config
    overrides: {trainer.max_epochs: 6}            # the same for every trial
    space:
      model.optimizer.init_args.weight_decay: {type: float, low: 0.001, high: 0.2, log: true}
      data.batch_size: {type: categorical, choices: [128, 256, 512]}
      trainer.max_epochs: {type: int, low: 4, high: 8}
    objective: {metric: val/acc, direction: maximize}   # the best value over the trial's validations
    n_trials: 20                                  # and/or timeout: seconds for this worker
    sampler: {type: tpe, seed: 0}                 # tpe | random | grid (every combination of the choices, once,
                                                  # in the order written: a queue the workers share)
    pruner: {type: median, n_warmup_steps: 1}     # median | none; Optuna's Lightning pruning callback
    storage: null                                 # default: a journal file in the sweep folder; or a URL
    test: false                                   # also test each trial's best checkpoint (test/acc)

Each trial is the same LightningCLI fit as `fashion-mnist fit` (callbacks, checkpoints, TensorBoard events) in
lightning_logs/sweeps/<study>/trial_<n>/. Results beside them: trials.csv, plots/*.png, best.yaml (a complete run
config: `fashion-mnist fit --config best.yaml` retrains the best trial). Running the same command again, or in
several processes or on several machines sharing the storage, continues the same study; workers started together
take --worker 0, 1, ... (each adds its index to the sampler's seed, so they search different points).
"""

import argparse
import csv
import io
import itertools
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, make_server

import yaml
from lightning.pytorch.callbacks import Callback

from fashion_mnist_lightning.errors import UserError
from fashion_mnist_lightning.runs import slurm
from fashion_mnist_lightning.runs.checkpoint_io import LAST

SWEEPS = Path("lightning_logs") / "sweeps"
KINDS = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")


class SweepError(UserError, ValueError):
    """A mistake in a sweep file or its flags, in one line with the fix."""


# ----------------------------------------------------------------------------------------------------
# The sweep file


@dataclass
class Param:
    key: str  # a dotted CLI key, e.g. model.optimizer.init_args.lr
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None

    def suggest(self, trial):
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def first(self):
        """A value inside the range: what the pre-flight run uses."""
        return self.choices[0] if self.kind == "categorical" else (int(self.low) if self.kind == "int" else self.low)


@dataclass
class Sweep:
    file: Path
    study_name: str
    configs: list[str]
    overrides: dict
    space: list[Param]
    metric: str = "val/acc"
    direction: str = "maximize"
    n_trials: int | None = None
    timeout: float | None = None
    sampler: dict = field(default_factory=lambda: {"type": "tpe"})
    pruner: dict = field(default_factory=lambda: {"type": "median"})
    storage: str | None = None
    test: bool = False
    worker: int = 0  # this worker's index: its sampler's seed is the file's seed + worker

    @property
    def folder(self) -> Path:
        return SWEEPS / self.study_name


def load_sweep(path: Path, flags: argparse.Namespace) -> Sweep:
    """Read and check a sweep file; flags override it. Raises SweepError (one line) for every mistake."""
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist; pass one of configs/sweeps/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    known = {
        "study_name",
        "configs",
        "overrides",
        "space",
        "objective",
        "n_trials",
        "timeout",
        "sampler",
        "pruner",
        "storage",
        "test",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r}; a sweep file has {', '.join(sorted(known))}")
    objective = raw.get("objective") or {}
    sweep = Sweep(
        file=path,
        study_name=flags.study_name or raw.get("study_name") or path.stem,
        configs=list(raw.get("configs") or []),
        overrides=dict(raw.get("overrides") or {}),
        space=[parse_param(path, key, spec) for key, spec in (raw.get("space") or {}).items()],
        metric=objective.get("metric", "val/acc"),
        direction=objective.get("direction", "maximize"),
        n_trials=flags.n_trials if flags.n_trials is not None else raw.get("n_trials"),
        timeout=flags.timeout if flags.timeout is not None else raw.get("timeout"),
        sampler=dict(raw.get("sampler") or {"type": "tpe"}),
        pruner=dict(raw.get("pruner") or {"type": "median"}),
        storage=flags.storage or raw.get("storage"),
        test=bool(raw.get("test", False)),
        worker=flags.worker,
    )
    for config in sweep.configs:
        if not Path(config).is_file():
            raise SweepError(f"{path}: run config {config} does not exist (paths are relative to where you run)")
    if sweep.direction not in ("maximize", "minimize"):
        raise SweepError(f"{path}: objective.direction is {sweep.direction!r}; use maximize or minimize")
    if sweep.sampler.get("type") not in SAMPLERS:
        raise SweepError(f"{path}: unknown sampler {sweep.sampler.get('type')!r}; use one of {', '.join(SAMPLERS)}")
    if sweep.pruner.get("type") not in PRUNERS:
        raise SweepError(f"{path}: unknown pruner {sweep.pruner.get('type')!r}; use one of {', '.join(PRUNERS)}")
    if sweep.sampler["type"] == "grid" and any(p.kind != "categorical" for p in sweep.space):
        raise SweepError(f"{path}: the grid sampler needs every space entry as {{type: categorical, choices: [...]}}")
    if not sweep.space:
        raise SweepError(f"{path}: the space is empty; name at least one dotted key to search")
    if sweep.n_trials is None and sweep.timeout is None and sweep.sampler["type"] != "grid":
        raise SweepError(f"{path}: set n_trials or timeout (or pass --n_trials / --timeout)")
    return sweep


def parse_param(path: Path, key: str, spec) -> Param:
    where = f"{path}: space.{key}"
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise SweepError(f"{where}: unknown distribution type {kind!r}; use one of {', '.join(KINDS)}")
    extra = sorted(set(spec) - {"type", "low", "high", "log", "step", "choices"})
    if extra:
        raise SweepError(f"{where}: unknown setting {extra[0]!r}; use low/high/log/step, or choices")
    if spec["type"] == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise SweepError(f"{where}: a categorical needs a non-empty list of choices")
        return Param(key, "categorical", choices=spec["choices"])
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise SweepError(f"{where}: a {spec['type']} needs numbers low and high") from None
    if not low < high:
        raise SweepError(f"{where}: low ({spec['low']}) must be below high ({spec['high']})")
    if spec.get("log") and low <= 0:
        raise SweepError(f"{where}: a log range needs low > 0, got {spec['low']}")
    return Param(key, spec["type"], low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))


# ----------------------------------------------------------------------------------------------------
# Study: storage, sampler, pruner


def open_study(sweep: Sweep, create: bool = True, storage=None):
    """The sweep's study (created unless ``create`` is False), on ``storage`` or the one the sweep names."""
    import optuna

    # ERROR: Optuna logs a failed trial's traceback as a warning before re-raising the exception, which this
    # command then reports in one line itself (an interrupt) or lets through (a bug).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = storage or make_storage(sweep)
    options = {k: v for k, v in sweep.sampler.items() if k != "type"}  # seed, n_startup_trials, ...
    if options.get("seed") is not None:  # workers started together would otherwise draw the same points
        options["seed"] += sweep.worker
    try:
        if sweep.sampler["type"] == "grid":
            sampler = optuna.samplers.GridSampler({p.key: p.choices for p in sweep.space}, **options)
        elif sweep.sampler["type"] == "random":
            sampler = optuna.samplers.RandomSampler(**options)
        else:
            sampler = optuna.samplers.TPESampler(**options)
    except TypeError as err:
        raise SweepError(f"{sweep.file}: sampler: {err}") from None
    pruner = optuna.pruners.NopPruner()
    if sweep.pruner["type"] == "median":
        try:
            pruner = optuna.pruners.MedianPruner(**{k: v for k, v in sweep.pruner.items() if k != "type"})
        except TypeError as err:
            raise SweepError(f"{sweep.file}: pruner: {err}") from None
    try:
        if create:
            study = optuna.create_study(
                study_name=sweep.study_name, storage=storage, sampler=sampler, pruner=pruner, direction=sweep.direction
            )
            if sweep.sampler["type"] == "grid":  # its creator, exactly one worker, queues every point once
                for number, point in enumerate(grid_points(sweep)):
                    study.enqueue_trial(point, user_attrs={"grid_point": number})
            return study
    except optuna.exceptions.DuplicatedStudyError:
        pass  # another worker, or an earlier run, created it: continue it
    try:
        study = optuna.load_study(study_name=sweep.study_name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise SweepError(
            f"no study {sweep.study_name!r} in {sweep.storage or 'the sweep folder'} yet; run the sweep first"
        ) from None
    wanted = (
        optuna.study.StudyDirection.MAXIMIZE if sweep.direction == "maximize" else optuna.study.StudyDirection.MINIMIZE
    )
    if create and study.direction != wanted:
        raise SweepError(
            f"study {sweep.study_name!r} in the storage optimises the other way ({study.direction.name.lower()}); "
            "keep its objective.direction, or pass another --study_name"
        )
    if create and sweep.sampler["type"] == "grid":
        wait_for_the_grid(study, sweep)
    return study


def wait_for_the_grid(study, sweep: Sweep, timeout: float = 60) -> None:
    """A worker that found the grid's study created waits (bounded) until its creator has queued every point."""
    deadline, last = time.monotonic() + timeout, len(grid_points(sweep)) - 1
    while not any(t.user_attrs.get("grid_point") == last for t in study.get_trials(deepcopy=False)):
        if time.monotonic() > deadline:
            raise SweepError(
                f"study {sweep.study_name!r} does not hold its grid's points (created by another version of this "
                "command, or its creator stopped while queueing them); pass another --study_name"
            )
        time.sleep(0.5)


def make_storage(sweep: Sweep):
    """The embedded journal file in the sweep folder by default (no server; several local processes share it
    through a file lock), or any SQLAlchemy URL Optuna accepts (PostgreSQL for many machines), with heartbeats
    so a worker that died is noticed by the others."""
    import optuna

    if sweep.storage is None:
        from optuna.storages.journal import JournalFileBackend

        sweep.folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(sweep.folder / "study.journal")))
    if "://" not in sweep.storage:
        raise SweepError(
            f"--storage {sweep.storage!r} is not a database URL; use e.g. "
            "postgresql://user@host:5432/db or sqlite:///sweeps.db (or leave it out for a local file)"
        )
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                sweep.storage, heartbeat_interval=10, grace_period=60, engine_kwargs={"pool_pre_ping": True}
            )
        except Exception as err:  # noqa: BLE001 - SQLAlchemy's many connection errors: one line for all of them
            if "already exists" in str(err) and attempt < 4:  # workers started together both create the tables
                time.sleep(1 + attempt)
                continue
            fault = err
            break
    detail = " ".join(str(fault).split())[:200]
    raise SweepError(
        f"cannot open the storage {sweep.storage} ({type(fault).__name__}: {detail}); check the "
        "URL, that the server runs and accepts this user, and that the driver is installed "
        "(psycopg for PostgreSQL: pip install -e '.[postgres]')"
    ) from None


# ----------------------------------------------------------------------------------------------------
# A trial: an ordinary fit through the same CLI, in its own folder


def flag(key: str, value) -> str:
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"  # JSON is YAML: lists, dicts


def fit_args(sweep: Sweep, params: dict, version: str | None) -> list[str]:
    """The `fashion-mnist fit` arguments of one trial. Trials run inside the sweep's own process, one device each:
    parallelism comes from several workers (Lightning's DDP launcher would re-run the sweep command itself)."""
    args = ["fit"]
    for config in sweep.configs:
        args += ["--config", config]
    args += [
        flag(k, v) for k, v in {"trainer.devices": 1, "trainer.strategy": "auto", **sweep.overrides, **params}.items()
    ]
    if version is not None:
        args += [
            flag("trainer.logger.init_args.save_dir", str(SWEEPS)),
            flag("trainer.logger.init_args.name", sweep.study_name),
            flag("trainer.logger.init_args.version", version),
        ]
    return args


class BestValue(Callback):
    """Records the best value of ``metric`` over the validations of a fit: the trial's objective."""

    def __init__(self, metric: str, direction: str, best: float | None = None):
        self.metric, self.direction, self.best = metric, direction, best  # best: of the run this one continues

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None:
            return
        value = float(value)
        if self.best is None or (value > self.best if self.direction == "maximize" else value < self.best):
            self.best = value


def preflight(sweep: Sweep) -> None:
    """One batch of training and validation with the first point of the space (fast_dev_run: no files): a key
    typo becomes the CLI's one-line error with its suggestion, and the objective must be among the metrics."""
    from fashion_mnist_lightning.cli import FashionMNISTCLI

    params = {p.key: p.first() for p in sweep.space}
    args = [
        *fit_args(sweep, params, None),
        "--trainer.fast_dev_run=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    cli = FashionMNISTCLI(args=args)
    logged = sorted(k for k in cli.trainer.callback_metrics if "/" in k)
    if sweep.metric not in logged:
        raise SweepError(f"objective metric {sweep.metric!r} is never logged; the runs log {', '.join(logged)}")


def objective(sweep: Sweep):
    from optuna import TrialPruned
    from optuna_integration import PyTorchLightningPruningCallback

    from fashion_mnist_lightning.cli import FashionMNISTCLI
    from fashion_mnist_lightning.runs.signals import Terminated, TrainingInterrupted

    def run(trial) -> float:
        if sweep.sampler["type"] == "grid" and not ({"grid_point", "retry_of"} & trial.user_attrs.keys()):
            trial.set_user_attr("surplus", True)  # the last queued point went to another worker a moment ago
            trial.study.stop()
            raise TrialPruned("every grid point is taken")
        params = {p.key: p.suggest(trial) for p in sweep.space}
        version = f"trial_{trial.number}"
        trial.set_user_attr("run_folder", str(sweep.folder / version))
        for key, value in worker_identity().items():
            trial.set_user_attr(key, value)
        args = fit_args(sweep, params, version)
        if sweep.test:
            args += ["--test_after_fit=true"]
        resume = trial.user_attrs.get("resume_from")
        if resume:
            args += [f"--ckpt_path={resume}"]
        best = BestValue(sweep.metric, sweep.direction, best_before(trial, sweep.direction))
        print(f"\ntrial {trial.number}: {params}", flush=True)
        cpu = time.process_time()  # this process's CPU seconds, every thread's
        try:
            cli = FashionMNISTCLI(
                args=args, extra_callbacks=(PyTorchLightningPruningCallback(trial, sweep.metric), best)
            )
        except (TrainingInterrupted, Terminated):  # a signal, not the trial's fault: queue it again, once, here
            retry(trial.study, trial)
            raise
        trial.set_user_attr("cpu_seconds", time.process_time() - cpu)
        if best.best is None:
            raise SweepError(f"trial {trial.number} logged no {sweep.metric}")
        if "test/acc" in cli.trainer.callback_metrics and sweep.test:
            trial.set_user_attr("test_acc", float(cli.trainer.callback_metrics["test/acc"]))
        return best.best

    return run


def best_before(trial, direction: str) -> float | None:
    """A retry continues its interrupted trial (and that one's, for a retry of a retry): the best value their
    validations reported, which a retry resumed after the last validation would otherwise not know."""
    trials, values, number = trial.study.get_trials(deepcopy=False), [], trial.user_attrs.get("retry_of")
    while number is not None:
        values += trials[number].intermediate_values.values()
        number = trials[number].user_attrs.get("retry_of")
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def worker_identity() -> dict:
    """Who runs a trial, so another worker can tell when it is gone: host and pid, and in a Slurm job its id."""
    identity = {"host": socket.gethostname(), "pid": os.getpid()}
    if slurm.job() is not None:
        identity.update(slurm_job=slurm.job(), slurm_start=slurm.restarts())
    return identity


def retry(study, trial) -> None:
    """Queue ``trial`` again with its parameters, from its last.ckpt if it has one (exact resume). Called by the
    one process that ends the trial (its own worker on a signal, or the worker whose tell() failed it), so a
    trial is never queued twice."""
    last = Path(trial.user_attrs.get("run_folder", "")) / "checkpoints" / LAST
    attrs = {"retry_of": trial.number, **({"resume_from": str(last)} if last.is_file() else {})}
    study.enqueue_trial(trial.params, user_attrs=attrs)


def recover(study, *_) -> None:
    """Trials left RUNNING by a worker that is gone (kill -9, a node lost, a Slurm job requeued or cancelled
    before its trial could stop) are failed and queued again once, resuming from their last.ckpt: the study
    completes without losing or repeating a trial. Gone: a pid that no longer runs on this host, an earlier start
    of this very Slurm job (requeued), or a Slurm job that squeue no longer lists as running. Runs when a worker
    starts and after each of its trials (an Optuna callback, hence the extra arguments)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not worker_gone(trial.user_attrs):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker failed it first: that one queues it again
            continue
        if trial.params:
            retry(study, trial)


def worker_gone(attrs: dict) -> bool:
    job = attrs.get("slurm_job")
    if job is not None and job == slurm.job():  # this job's earlier start (requeued), or a task beside this one
        return attrs.get("slurm_start", 0) < slurm.restarts()
    if job is not None:
        return slurm.job_alive(job) is False
    pid = attrs.get("pid")
    return attrs.get("host") == socket.gethostname() and pid is not None and not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def grid_points(sweep: Sweep) -> list[dict]:
    """Every combination of a grid's choices, in the order the sweep file writes them."""
    return [
        dict(zip([p.key for p in sweep.space], values))
        for values in itertools.product(*(p.choices for p in sweep.space))
    ]


def optimize(sweep: Sweep) -> None:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(sweep)
    recover(study)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    callbacks = [recover]
    if sweep.sampler["type"] == "grid":
        if queue_is_empty(study):
            print(f"study {sweep.study_name!r}: every grid point has been run or is running")
            return
        callbacks.append(stop_when_queue_is_empty)
    if sweep.n_trials is not None:
        if done >= sweep.n_trials:
            print(f"study {sweep.study_name!r} already has {done} finished trials (n_trials {sweep.n_trials})")
            return
        # the other workers' running trials count too: otherwise each worker starts one more near the end
        callbacks.append(MaxTrialsCallback(sweep.n_trials, states=(*finished, TrialState.RUNNING)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective(sweep), timeout=sweep.timeout, callbacks=callbacks, catch=(), gc_after_trial=True)


def queue_is_empty(study) -> bool:
    """No trial waits to be taken (a grid is a queue of its points: open_study)."""
    from optuna.trial import TrialState

    return not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def stop_when_queue_is_empty(study, trial) -> None:
    """After each trial of a grid: a worker stops when no point is left for it."""
    if queue_is_empty(study):
        study.stop()


# ----------------------------------------------------------------------------------------------------
# Results: trials.csv, plots, best.yaml, a summary


def write_results(sweep: Sweep) -> None:
    from optuna.trial import TrialState

    from fashion_mnist_lightning.runs.checkpoint_io import atomic_write, atomic_write_text

    study = open_study(sweep, create=False)
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    keys = [p.key for p in sweep.space]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "state", *keys, sweep.metric, "test/acc", "seconds", "cpu_seconds", "run_folder"])
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
        writer.writerow(
            [
                t.number,
                t.state.name,
                *(t.params.get(k, "") for k in keys),
                "" if t.value is None else t.value,
                t.user_attrs.get("test_acc", ""),
                f"{seconds:.1f}" if seconds != "" else "",
                f"{t.user_attrs['cpu_seconds']:.1f}" if "cpu_seconds" in t.user_attrs else "",
                t.user_attrs.get("run_folder", ""),
            ]
        )
    sweep.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.folder / "trials.csv", buffer.getvalue())

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        print(f"study {sweep.study_name!r}: no complete trial yet; {sweep.folder / 'trials.csv'}")
        return
    for name, figure in plots(study):
        atomic_write(sweep.folder / "plots" / f"{name}.png", lambda f, figure=figure: figure.savefig(f, dpi=110))
    best = study.best_trial
    write_best_yaml(sweep, best)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retried = {t.user_attrs.get("retry_of") for t in trials}
    unfinished = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    lines = [
        f"\nstudy {sweep.study_name!r}: {len(complete)} complete, "
        f"{sum(t.state == TrialState.PRUNED for t in trials)} pruned, {len(failed)} failed"
        + (f" ({sum(t.number in retried for t in failed)} of them continued by a retry)" if failed else "")
        + f" of {len(trials)} trials"
        + (
            f"; {unfinished} still running or queued (other workers): --summary when they are done"
            if unfinished
            else ""
        ),
        f"best trial {best.number}: {sweep.metric} = {best.value:.4f}  {best.params}",
        f"results: {sweep.folder / 'trials.csv'}, {sweep.folder / 'plots'}/, {sweep.folder / 'best.yaml'}",
        f"TensorBoard over all trials: tensorboard --logdir {sweep.folder}",
    ]
    lines += spread("val " + sweep.metric, [t.value for t in complete])
    lines += spread("test/acc", [t.user_attrs["test_acc"] for t in complete if "test_acc" in t.user_attrs], 100, "%")
    print("\n".join(lines), flush=True)


def spread(name: str, values: list[float], scale: float = 1, unit: str = "") -> list[str]:
    if len(values) < 2:
        return []
    values = [scale * v for v in values]
    digits = 2 if unit == "%" else 4  # 90.48 % or 0.9048: differences of a few hundredths of a point stay visible
    mean, std, low, high = (
        f"{v:.{digits}f}{unit}" for v in (statistics.mean(values), statistics.stdev(values), min(values), max(values))
    )
    return [f"{name} over {len(values)} trials: {mean} ± {std} (std), min {low}, max {high}"]


def plots(study):
    """Optuna's own matplotlib plots; each one that the study cannot support yet (too few trials) is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as vis

    for name, draw in (
        ("optimization_history", vis.plot_optimization_history),
        ("param_importances", vis.plot_param_importances),
        ("slice", vis.plot_slice),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            try:
                axes = draw(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
        yield name, figure


def write_best_yaml(sweep: Sweep, best) -> None:
    """The best trial's own recipe (its config.yaml) with the logger pointed back at lightning_logs/: `fashion-mnist
    fit --config best.yaml` trains that trial again as an ordinary run."""
    from fashion_mnist_lightning.runs.checkpoint_io import atomic_write_text

    recipe_path = Path(best.user_attrs.get("run_folder", "")) / "config.yaml"
    if not recipe_path.is_file():
        return
    recipe = yaml.safe_load(recipe_path.read_text())
    logger = (recipe.get("trainer") or {}).get("logger") or {}
    if isinstance(logger, dict) and "init_args" in logger:
        logger["init_args"].update({"save_dir": ".", "name": "lightning_logs", "version": None})
    recipe["test_after_fit"] = False
    header = (
        f"# best trial {best.number} of sweep {sweep.study_name!r} ({sweep.file}): {sweep.metric} = "
        f"{best.value:.6f}\n# fashion-mnist fit --config {sweep.folder / 'best.yaml'}\n"
    )
    atomic_write_text(sweep.folder / "best.yaml", header + yaml.safe_dump(recipe, sort_keys=False))


# ----------------------------------------------------------------------------------------------------


class DashboardServer(ThreadingMixIn, WSGIServer):
    """Each request in a thread of its own; a SIGTERM or Ctrl-C asks the serving loop to end. (With
    optuna-dashboard's run_server a stop raised wherever the main thread was, often in a request, where wsgiref's
    error handler swallowed it, and the next SIGTERM was ignored as a repeat: the server never exited.)"""

    daemon_threads = True

    def serve_until_stopped(self) -> None:
        def stop(signum: int, frame) -> None:
            threading.Thread(target=self.shutdown, daemon=True).start()  # shutdown() waits for the loop

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.serve_forever()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def dashboard(sweep: Sweep, port: int) -> None:
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise SweepError(
            "the dashboard needs optuna-dashboard: pip install -e '.[dashboard]' (make install has it)"
        ) from None
    storage = make_storage(sweep)
    open_study(sweep, storage=storage)
    try:
        server = make_server("localhost", port, wsgi(storage), server_class=DashboardServer)
    except OSError as err:
        raise SweepError(f"cannot serve the dashboard on port {port} ({err.strerror}): pass another port") from None
    with server:
        print(f"Optuna dashboard for {sweep.study_name!r}: http://localhost:{port}", flush=True)
        server.serve_until_stopped()
    print("stopped: the dashboard (the study is unchanged)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fashion-mnist sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, type=Path, help="a sweep file, e.g. configs/sweeps/smoke.yaml")
    parser.add_argument("--n_trials", type=int, help="finished trials the study should have (all workers)")
    parser.add_argument("--timeout", type=float, help="seconds this worker keeps starting trials")
    parser.add_argument(
        "--worker", type=int, default=0, help="this worker's index (0, 1, ...): the sampler's seed + index, so "
        "workers started together search different points (make sweep WORKERS=N numbers them)",
    )  # fmt: skip
    parser.add_argument("--storage", help="a database URL (postgresql://user@host/db); default: a file in the folder")
    parser.add_argument("--study_name", help="default: the sweep file's study_name, or its file name")
    parser.add_argument("--summary", action="store_true", help="only write and print the results of the study")
    parser.add_argument("--dashboard", type=int, metavar="PORT", help="serve Optuna's dashboard on this port")
    args = parser.parse_args(argv)
    from fashion_mnist_lightning.runs.signals import Terminated, TrainingInterrupted

    try:
        sweep = load_sweep(args.config, args)
        if args.dashboard:
            dashboard(sweep, args.dashboard)
            return 0
        if not args.summary:
            preflight(sweep)
            optimize(sweep)
        write_results(sweep)
    except TrainingInterrupted as err:
        print(
            f"\nstopped: {signal.Signals(err.signum).name} received: the trial saved its position to {err.path}; "
            "run the same sweep command again to continue that trial exactly there",
            file=sys.stderr,
            flush=True,
        )
        return 128 + err.signum
    except (KeyboardInterrupt, Terminated) as err:
        print(
            "\nstopped: interrupted between trials; run the same command again to continue the study",
            file=sys.stderr,
            flush=True,
        )
        return 128 + getattr(err, "signum", signal.SIGINT)
    return 0


if __name__ == "__main__":  # errors are printed by the command's one path: run it as `fashion-mnist sweep`
    from fashion_mnist_lightning.cli import main as command

    sys.exit(command(["sweep", *sys.argv[1:]]))
