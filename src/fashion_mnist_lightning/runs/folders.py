"""Where runs live: one folder per run, a separate folder per evaluation, and ``--ckpt_path last`` / ``best``.

    lightning_logs/version_N/                 a training run (events, config.yaml, checkpoints/, PNGs)
    lightning_logs/version_N/checkpoints/     last.ckpt (always the newest state) and the best checkpoint
    lightning_logs/version_N/evaluations/test_K/   a later validate/test/predict of this run's checkpoint
    lightning_logs/evaluations/test_K/        an evaluation of a checkpoint that lives outside any run folder
    mlruns/<experiment_id>/<run_id>/          an MLflow run (its file store, or the local side of a server's run)

TensorBoard and CSV runs share ``lightning_logs/version_N``; a new one is claimed with an atomic ``mkdir`` before
the logger uses it, so two commands started at the same moment in one place never share a folder. A command that
fails before doing any work removes the folder it claimed (``release_unused``). An MLflow run's folder is named by
MLflow (experiment id, run id), its own search says which run is newest, and an evaluation is a child run of the
run whose checkpoint it evaluates.
"""

import csv
import os
import re
import shutil
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.core.saving import load_hparams_from_yaml
from lightning.pytorch.loggers import CSVLogger

from fashion_mnist_lightning.errors import UserError
from fashion_mnist_lightning.runs.checkpoint_io import LAST, CheckpointError, atomic_write_text, read_checkpoint, run_of
from fashion_mnist_lightning.runs.loggers import logger_init_args, logger_root, mlflow_init_args

EVALUATIONS = "evaluations"
VERSION = re.compile(r"version_(\d+)")

claimed: list[Path] = []  # folders this process created with claim(); release_unused() may remove them
existing: dict[Path, set[Path]] = {}  # a resumed run's folder -> the files it held before this command


class ResumeError(UserError, RuntimeError):
    """Nothing to resume or evaluate for ``last``/``best``, stated in one line with its fix."""


def run_dir(trainer: L.Trainer) -> Path:
    """The folder this run writes into: the parent of its ``checkpoints/``, as Lightning builds it from the
    logger (``save_dir/name/version``). No collective: safe to call on rank 0 alone."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "") / version


def runs(root: Path) -> list[Path]:
    """``root/version_N`` folders, highest N first (``version_10`` before ``version_9``)."""
    found = [(int(m.group(1)), p) for p in root.glob("version_*") if (m := VERSION.fullmatch(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found, reverse=True)]


def newest_checkpoint(root: Path, which: str, candidates: list[Path] | None = None) -> Path:
    """``last``: the newest run's ``checkpoints/last.ckpt``; ``best``: the best checkpoint of the newest run that
    has one (its ModelCheckpoint's ``best_model_path``, as recorded in that run's last.ckpt). ``candidates``: the
    run folders to search, newest first (default: ``root/version_N``)."""
    for run in runs(root) if candidates is None else candidates:
        last = run / "checkpoints" / LAST
        if not last.is_file():
            continue
        if which == "last":
            return last
        best = best_checkpoint(last)
        if best is not None:
            return best
    raise ResumeError(
        f"--ckpt_path {which}: no run in {root} has a{' best' if which == 'best' else ''} "
        f"checkpoint ({root}/{'version_N' if candidates is None else '<run>'}/checkpoints/"
        f"{LAST if which == 'last' else '*.ckpt'}); "
        "train one first (make train), or pass the path of a .ckpt file"
    )


def resolve_checkpoint(value: str | os.PathLike, root: Path = Path("lightning_logs")) -> Path:
    """A checkpoint path as given, or for ``last`` / ``best`` the newest run's under ``root`` (the tools' way of
    reading ``--ckpt_path``; the CLI searches the configured logger's folder instead)."""
    return newest_checkpoint(root, str(value)) if str(value) in ("last", "best") else Path(value)


def best_checkpoint(last: Path) -> Path | None:
    """The monitored ModelCheckpoint's best file, looked up in the run's checkpoint folder by name (the stored
    path is relative to wherever training was started)."""
    try:
        states = read_checkpoint(last).get("callbacks", {})
    except CheckpointError:
        return None
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and state.get("monitor") and state.get("best_model_path"):
            best = last.parent / Path(state["best_model_path"]).name
            if best.is_file():
                return best
    return None


def claim(parent: Path, prefix: str, start: int = 0) -> tuple[Path, str]:
    """Create ``parent/<prefix><K>`` for the smallest free K >= start, atomically; return (folder, its name)."""
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    claimed.extend(reversed(missing))  # released after the folder, innermost first, if still empty
    k = start
    while True:
        folder = parent / f"{prefix}{k}"
        try:
            folder.mkdir()
        except FileExistsError:
            k += 1
            continue
        claimed.append(folder)
        return folder, folder.name


def next_version(root: Path) -> int:
    newest = runs(root)
    return int(VERSION.fullmatch(newest[0].name).group(1)) + 1 if newest else 0


def watch(folder: Path) -> None:
    """Remember what ``folder`` holds now, so a command refused before doing any work can remove what it added."""
    existing[folder] = {p for p in folder.rglob("*") if p.is_file()}


def release_unused() -> None:
    """Undo what a command that failed before doing any work wrote: the folders it claimed (unless they hold a
    checkpoint) and the files it added to a run it was about to resume (a logger's fresh event file).
    Called on a user error only; a run that failed mid-way keeps its record."""
    for folder, before in existing.items():
        for path in {p for p in folder.rglob("*") if p.is_file()} - before:
            path.unlink(missing_ok=True)
    existing.clear()
    while claimed:
        folder = claimed.pop()
        if folder.is_dir() and not any(folder.rglob("*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)


def named_run(config) -> Path | None:
    """The run folder the logger's ``version`` names (``--trainer.logger.init_args.version 1234``: version_1234,
    or a name as given), where a Slurm job's run lives; None when the version is left to the template."""
    init = logger_init_args(config)
    version = None if init is None else init.get("version")
    if version is None:
        return None
    return logger_root(config) / (f"version_{version}" if isinstance(version, int) else str(version))


def refuse_to_overwrite(subcommand: str, config) -> None:
    """A fresh fit (no --ckpt_path) into a named run that already holds checkpoints would replace them: continue
    it instead."""
    named = named_run(config) if subcommand == "fit" and not config.get("ckpt_path") else None
    if named is not None and any((named / "checkpoints").glob("*.ckpt")):
        raise ResumeError(
            f"{named} already holds a run's checkpoints, which a fresh fit would replace; continue that run with "
            "--ckpt_path last, or name another run (--trainer.logger.init_args.version)"
        )


def prepare_run_folder(subcommand: str, config, resumed_run: Path | None) -> None:
    """Point the configured logger at this command's own folder before anything is built: ``fit`` a freshly
    claimed ``version_N`` (or the resumed run's own), ``validate``/``test``/``predict`` ``evaluations/<command>_K``
    inside the run of the checkpoint they evaluate. MLflow names its runs itself: ``fit --ckpt_path last``
    continues the run's id, an evaluation is a new run nested under the run it evaluates. Other processes of a DDP
    run take rank 0's folders from Lightning; fast_dev_run logs nothing."""
    mlflow = mlflow_init_args(config)
    if mlflow is not None:
        return prepare_mlflow_run(subcommand, config, mlflow, resumed_run)
    refuse_to_overwrite(subcommand, config)  # on every rank alike: all of them stop
    init = logger_init_args(config)
    if init is None or rank_zero_only.rank != 0 or config.trainer.get("fast_dev_run"):
        return None
    root = logger_root(config)
    if subcommand == "fit" and resumed_run is not None:
        number = VERSION.fullmatch(resumed_run.name)  # continue the same run: version_N, or a name (slurm_<job>)
        init.version = int(number.group(1)) if number else resumed_run.name
        watch(resumed_run)
    elif subcommand == "fit" and init.get("version") is None:
        _, name = claim(root, "version_", next_version(root))
        init.version = int(name.removeprefix("version_"))
    elif subcommand != "fit":
        parent = (run_of(config.ckpt_path) or root) / EVALUATIONS
        _, init.version = claim(parent, f"{subcommand}_")
        init.save_dir, init.name = str(parent), ""
    return None


def prepare_mlflow_run(subcommand: str, config, init, resumed_run: Path | None) -> None:
    if subcommand == "fit" and resumed_run is not None:
        init.run_id = resumed_run.name
        watch(resumed_run)
    elif subcommand != "fit":
        run = run_of(config.ckpt_path)
        if run is not None and MLFLOW_RUN_ID.fullmatch(run.name):
            init.tags = {**(init.get("tags") or {}), "mlflow.parentRunId": run.name}
        init.run_name = init.get("run_name") or subcommand


class RunConfig(SaveConfigCallback):
    """Writes ``config.yaml`` into the command's own folder when the command starts its work: the full merged
    config as a recipe (for ``fit`` without ``ckpt_path``, so ``fit --config <run>/config.yaml`` trains the run
    again), atomically, never into another command's folder."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        pass  # written by the start hooks below instead, once the run is known to go ahead

    def on_fit_start(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._write(trainer)

    def _write(self, trainer) -> None:
        if not self.already_saved and trainer.is_global_zero:
            self.save_config(trainer, trainer.lightning_module, trainer.state.fn)
            self.already_saved = True

    def save_config(self, trainer, pl_module, stage: str) -> None:
        atomic_write_text(run_dir(trainer) / self.config_filename, self.parser.dump(self.config, skip_none=False))


# ----------------------------------------------------------------------------------------------------
# MLflow runs and a resumed CSV log

MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")  # the name of an MLflow run's folder


def mlflow_runs(tracking_uri: str, experiment: str, local_root: Path) -> tuple[Path, list[Path]]:
    """The experiment's folder and its runs' folders, newest first: ``<local_root>/<experiment_id>/<run_id>``,
    where Lightning puts a run's checkpoints (``local_root`` is the file store, or for a server the Trainer's
    ``default_root_dir``). MLflow's own search orders them, so a file store and a server work alike."""
    if tracking_uri.startswith("file:") and not local_root.is_dir():
        return local_root, []  # nothing tracked yet (and opening the store would create it)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return local_root, []
    folder = local_root / found.experiment_id
    newest_first = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    return folder, [folder / run.info.run_id for run in newest_first]


def resume_logger(logger, run: Path) -> None:
    """A resumed run's logger continues the run's own record (CSV: see reopen_csv_log; TensorBoard and MLflow
    continue by themselves)."""
    if isinstance(logger, CSVLogger):
        reopen_csv_log(logger, run)


def reopen_csv_log(logger, run: Path) -> None:
    """Open a resumed run's CSV log without losing its record. Lightning 2.6's CSVLogger deletes the metrics.csv
    of a folder that is not empty when it opens it (the earlier epochs would vanish from the curves), and rewrites
    hparams.yaml from what this process logs (the run's first record would vanish). metrics.csv steps aside while
    the logger opens the folder (renames: the rows are never only in memory) and the writer learns its columns,
    so the next save appends; the writer starts from the hyper-parameters already recorded."""
    path, aside, hparams = run / "metrics.csv", run / ".metrics.csv.resumed", run / "hparams.yaml"
    if path.is_file():
        os.replace(path, aside)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Previous log files in this directory will be deleted": not so here
            writer = logger.experiment
    finally:
        if aside.is_file():
            os.replace(aside, path)
    if path.is_file():
        with path.open(newline="") as f:
            writer.metrics_keys = next(csv.reader(f), [])
    if hparams.is_file():
        writer.hparams.update(load_hparams_from_yaml(hparams, use_omegaconf=False) or {})
