"""The ``fashion-mnist`` command: LightningCLI (fit / validate / test / predict) plus the template's own tools.

Everything here goes through LightningCLI's public hooks: ``add_arguments_to_parser``, ``parse_arguments``,
``before_instantiate_classes``, ``instantiate_classes``, ``instantiate_trainer``, ``after_instantiate_classes``
and ``after_fit``. What the template adds on top of stock LightningCLI:

- ``configs/base.yaml`` is read before every ``--config`` (the shared run setup, written once);
- each command gets its own folder (runs/folders.py): ``fit`` a new ``version_N`` (or, with ``--ckpt_path
  last``, the newest run's own), ``validate``/``test``/``predict`` an ``evaluations/<command>_K`` inside the
  run of the checkpoint they evaluate; ``--ckpt_path last`` / ``best`` mean the newest run's checkpoints
  (with ``MLFlowLogger``: MLflow names the run, its search finds the newest, an evaluation is a child run);
- the fault-tolerance callbacks, the progress bar and the predictions writer are added to every Trainer;
- every mistake a user can make becomes one line on stderr with the fix, exit 2, and no folder left behind.
"""

import difflib
import logging
import os
import re
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from fashion_mnist_lightning.callbacks import ConfusionMatrixLogger, PredictionCSV
from fashion_mnist_lightning.data.files import DataError
from fashion_mnist_lightning.module import FashionMNISTClassifier, ScheduleLengthError
from fashion_mnist_lightning.runs.checkpoint_io import (
    CheckpointError,
    atomic_write_text,
    check_matches,
    check_same_classes,
    check_same_recipe,
    read_checkpoint,
)
from fashion_mnist_lightning.runs.folders import (
    EVALUATIONS,
    MLFLOW_RUN_ID,
    ResumeError,
    claim,
    mlflow_runs,
    newest_checkpoint,
    next_version,
    release_unused,
    reopen_csv_log,
    run_dir,
    run_of,
    watch,
)
from fashion_mnist_lightning.runs.guards import FiniteLossGuard, NonFiniteLossError
from fashion_mnist_lightning.runs.loggers import (
    LoggerError,
    logger_init_args,
    logger_root,
    mlflow_init_args,
    mlflow_store,
    prepare_mlflow,
)
from fashion_mnist_lightning.runs.memory import keep_freed_memory
from fashion_mnist_lightning.runs.rng import RNGStates
from fashion_mnist_lightning.runs.signals import CheckpointOnSignal, TrainingInterrupted

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE_CONFIG = CONFIGS / "base.yaml"  # the shared run setup, read before every --config
SUBCOMMANDS = ("fit", "validate", "test", "predict")
BATCH_LIMITS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
)  # int = batches, float = fraction; the default is all of them
ATOMIC_CHECKPOINTS = {"class_path": "fashion_mnist_lightning.runs.checkpoint_io.AtomicCheckpointIO"}


NETWORK_LINKS = {  # network __init__ argument <- the DataModule (lists: the checkpoint's hparams stay plain YAML)
    "num_classes": lambda data: len(data.class_names),
    "in_channels": lambda data: data.image_shape[0],
    "image_size": lambda data: list(data.image_shape[1:]),
    "mean": lambda data: list(getattr(data, "mean", None) or [0.0] * data.image_shape[0]),
    "std": lambda data: list(getattr(data, "std", None) or [1.0] * data.image_shape[0]),
}


class ConfigError(ValueError):
    """A config or command-line mistake (typo, wrong type, unknown class, a value torch rejects), in one line."""


class RunConfig(SaveConfigCallback):
    """Writes ``config.yaml`` into the command's own folder: the full merged config as a recipe.

    For ``fit`` the recipe leaves out ``ckpt_path`` and the run folder the CLI chose, so ``fashion-mnist fit
    --config <run>/config.yaml`` trains the same run again in a new folder (a resumed run's recipe is the one it
    finished with). It is written when the command starts its work (after a resume was accepted), atomically,
    and never into another command's folder.
    """

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


class FashionMNISTCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, extra_callbacks: tuple = ()):
        """``extra_callbacks``: callback objects for this run's Trainer beside the config's (the sweep passes
        Optuna's pruning callback this way)."""
        self.extra_callbacks = list(extra_callbacks)
        per_subcommand = {"default_config_files": [str(BASE_CONFIG)], "exit_on_error": False}
        super().__init__(
            FashionMNISTClassifier,
            L.LightningDataModule,  # any DataModule by class path (base.yaml: Fashion-MNIST), --data my.DataModule
            subclass_mode_data=True,
            save_config_callback=RunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={"plugins": [ATOMIC_CHECKPOINTS]},  # shown by --print_config; a config may replace it
            parser_kwargs={
                "exit_on_error": False,
                "epilog": f"more commands: {', '.join(TOOLS)} (fashion-mnist COMMAND --help)",
                **{name: dict(per_subcommand) for name in SUBCOMMANDS},
            },
            args=args,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: then test the best checkpoint and print where the results are",
        )
        parser.add_argument(
            "--progress_refresh_rate",
            type=int,
            default=50,
            help="steps between progress-bar updates (a refresh per step costs more than a step)",
        )
        # What the data set knows flows into the model and its network (a network takes whichever of these its
        # __init__ has; README "Make it yours" states the DataModule's side of the contract).
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.image_shape", "model.image_shape", compute_fn=list, apply_on="instantiate")
        for target, compute in NETWORK_LINKS.items():
            parser.link_arguments(
                "data", f"model.network.init_args.{target}", compute_fn=compute, apply_on="instantiate"
            )

    # ------------------------------------------------------------------------------------------------
    # parsing: one-line errors, and --ckpt_path resolved before Lightning reads the checkpoint's hparams

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(one_line(err, valid_keys(parser, args))) from None
        subcommand = self.config.get("subcommand")
        if subcommand:
            prepare_mlflow(self.config[subcommand])
            self.resumed_run = self._resolve_checkpoint(subcommand, self.config[subcommand])

    def _resolve_checkpoint(self, subcommand: str, config: Namespace) -> Path | None:
        """``last``/``best`` -> the newest run's checkpoint; every checkpoint read once with weights_only.
        Returns the run folder that ``fit --ckpt_path last`` continues, else None."""
        ckpt = config.get("ckpt_path")
        if ckpt is None:
            if subcommand != "fit":
                raise ConfigError(
                    f"`fashion-mnist {subcommand}` evaluates a checkpoint: pass --ckpt_path with a "
                    ".ckpt file, last (the newest run's last.ckpt) or best (its best checkpoint)"
                )
            return None
        if ckpt in ("last", "best"):
            if subcommand == "fit" and ckpt == "best":
                raise ConfigError(
                    "fit resumes from --ckpt_path last (or a .ckpt path); best is for validate, test and predict"
                )
            if mlflow_init_args(config) is not None:
                root, candidates = mlflow_runs(*mlflow_store(config))
            else:
                root, candidates = logger_root(config), None
            if root is None:
                raise ResumeError(
                    f"--ckpt_path {ckpt} searches the runs of the configured logger, and there is "
                    "none (trainer.logger); pass the path of a .ckpt file instead"
                )
            config.ckpt_path = str(newest_checkpoint(root, ckpt, candidates))
            if rank_zero_only.rank == 0:  # once, not once per DDP process
                print(f"{'resuming' if subcommand == 'fit' else 'evaluating'} {config.ckpt_path}", flush=True)
        read_checkpoint(config.ckpt_path)  # one line for a missing or unreadable file; loads no code
        return run_of(config.ckpt_path) if subcommand == "fit" and ckpt == "last" else None

    def _parse_ckpt_path(self) -> None:
        """Kept private override: LightningCLI rebuilds the model from the checkpoint's hparams right after
        parsing and before any public hook runs, so this is the only place to turn a checkpoint written for
        another model into one line. Tested with Lightning 2.6.4 - 2.6.6."""
        try:
            super()._parse_ckpt_path()
        except (ArgumentError, SystemExit) as err:
            ckpt = self.config[self.config.subcommand].get("ckpt_path")
            raise CheckpointError(
                f"{ckpt} was not written for this model: its hyper-parameters do not parse "
                f"({one_line(err, [])[:200]}); pass a .ckpt written by `fashion-mnist fit`"
            ) from None

    # ------------------------------------------------------------------------------------------------
    # instantiation: the command's own folder, the template's callbacks, values torch rejects

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        self.recipe = config.clone()  # what RunConfig writes
        if self.subcommand == "fit":
            self.recipe.ckpt_path = None
        mlflow = mlflow_init_args(config)
        if mlflow is not None:
            self._mlflow_run(config, mlflow)
            return
        init = logger_init_args(config)
        if init is None or rank_zero_only.rank != 0 or config.trainer.get("fast_dev_run"):
            return  # other processes: Lightning broadcasts rank 0's folders; fast_dev_run logs nothing
        root = Path(init.get("save_dir") or ".") / (init.get("name") or "")
        try:
            if self.subcommand == "fit" and self.resumed_run is not None:
                init.version = int(self.resumed_run.name.removeprefix("version_"))  # continue the same run
                watch(self.resumed_run)
            elif self.subcommand == "fit" and init.get("version") is None:
                _, name = claim(root, "version_", next_version(root))
                init.version = int(name.removeprefix("version_"))
            elif self.subcommand != "fit":
                parent = (run_of(config.ckpt_path) or root) / EVALUATIONS
                _, init.version = claim(parent, f"{self.subcommand}_")
                init.save_dir, init.name = str(parent), ""
        except OSError as err:
            raise ConfigError(
                f"cannot create a run folder in {err.filename or root} ({err.strerror}); pass a "
                "writable folder with --trainer.logger.init_args.save_dir"
            ) from None

    def _mlflow_run(self, config: Namespace, init: Namespace) -> None:
        """MLflow names its runs itself: ``fit --ckpt_path last`` continues the run's id; an evaluation is a new
        run nested under the run whose checkpoint it evaluates (MLflow's parent-run tag)."""
        if self.subcommand == "fit" and self.resumed_run is not None:
            init.run_id = self.resumed_run.name
            watch(self.resumed_run)
        elif self.subcommand != "fit":
            run = run_of(config.ckpt_path)
            if run is not None and MLFLOW_RUN_ID.fullmatch(run.name):
                init.tags = {**(init.get("tags") or {}), "mlflow.parentRunId": run.name}
            init.run_name = init.get("run_name") or self.subcommand

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:  # raised by a class's __init__ for a value the user passed
            if str(err).startswith("Does not validate against any of the Union subtypes") and err.__cause__:
                err = err.__cause__  # the class's own message (a logger's), not jsonargparse's wrapper
            raise ConfigError(
                f"invalid value: {first_line(err)}; fix the flag or config key (`fashion-mnist fit --help` lists them)"
            ) from None

    def instantiate_trainer(self, **kwargs):
        config = self.config_init[self.subcommand]
        callbacks = list(config.trainer.get("callbacks") or [])
        if self.subcommand != "fit":  # evaluations write no checkpoints (and reload none of fit's state)
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
            kwargs["enable_checkpointing"] = False
        if config.trainer.get("enable_progress_bar", True) is not False and not has(callbacks, ProgressBar):
            callbacks.append(TQDMProgressBar(refresh_rate=config.progress_refresh_rate))  # not in configs: the
            # flag --trainer.enable_progress_bar=false would then be an error
        callbacks += [RNGStates(), FiniteLossGuard(), CheckpointOnSignal(), *self.extra_callbacks]
        if self.subcommand == "predict" and not has(callbacks, PredictionCSV):
            callbacks.append(PredictionCSV())
        for key in BATCH_LIMITS:  # jsonargparse reads `1` as 1.0, which Lightning takes as 100 %: mean one batch
            if config.trainer.get(key) == 1.0:
                kwargs[key] = 1
        try:
            return super().instantiate_trainer(callbacks=callbacks, **kwargs)
        except (MisconfigurationException, RuntimeError) as err:  # the Trainer rejects these settings
            hint = (
                "; this machine has no GPU: run this config on a GPU machine, or pass --trainer.accelerator cpu"
                if re.search(r"gpu|cuda|mps", str(err), re.IGNORECASE)
                else ""
            )
            raise ConfigError(f"trainer: {first_line(err)}{hint}") from None

    def after_instantiate_classes(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunConfig):
                callback.config = self.recipe
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt and Path(ckpt).is_file():
            checkpoint = read_checkpoint(ckpt)
            check_same_classes(ckpt, checkpoint, self.model.class_names, type(self.datamodule).__name__)
            check_matches(ckpt, checkpoint["state_dict"], self.model)
            if self.subcommand == "fit":  # a resume continues the checkpoint's own recipe
                check_same_recipe(ckpt, checkpoint, dict(self.model.hparams), dict(self.datamodule.hparams))
        if self.subcommand == "fit":
            check_optimizer(self.model)
        resuming = self.subcommand == "fit" and self.resumed_run is not None and rank_zero_only.rank == 0
        if resuming and isinstance(self.trainer.logger, CSVLogger):
            reopen_csv_log(self.trainer.logger, self.resumed_run)

    # ------------------------------------------------------------------------------------------------

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        confusion = next((c for c in self.trainer.callbacks if isinstance(c, ConfusionMatrixLogger)), None)
        if self.trainer.is_global_zero:
            print_summary(
                run_dir(self.trainer),
                results[0] if results else {},
                best,
                confusion.test_images if confusion else None,
                isinstance(self.trainer.logger, TensorBoardLogger),
                self.model.metric_names,
            )


def check_optimizer(model: FashionMNISTClassifier) -> None:
    """Build the optimizer (and schedule) once on a dummy parameter: a value torch rejects (a negative lr, a
    momentum above 1) fails here, in one line, before any folder or file is written."""
    try:
        optimizer = model.optimizer_factory([{"params": [torch.nn.Parameter(torch.zeros(1))]}])
        if model.scheduler_factory is not None:
            keywords = getattr(model.scheduler_factory, "keywords", {})
            model.scheduler_factory(
                optimizer, **({"total_steps": 1000} if keywords.get("total_steps", 0) is None else {})
            )
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ConfigError(
            f"model.optimizer / model.scheduler: {first_line(err)}; fix its init_args "
            "(e.g. --model.optimizer.init_args.lr)"
        ) from None


def has(objects: list, kind: type) -> bool:
    return any(isinstance(o, kind) for o in objects)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def print_summary(
    run: Path, metrics: dict, best: str, images: int | None, tensorboard: bool = True, extra: list[str] = ()
) -> None:
    lines = [
        "",
        f"test accuracy: {100 * float(metrics.get('test/acc', float('nan'))):.2f} % "
        f"(test loss {float(metrics.get('test/loss', float('nan'))):.4f})"
        + (f" on {images:,} test images" if images else ""),
        *(f"test {name}: {float(metrics.get(f'test/{name}', float('nan'))):.4f}" for name in extra),
        f"best checkpoint: {best or '(none saved)'}",
        f"run folder{' (TensorBoard: make tensorboard)' if tensorboard else ''}: {run}",
        f"confusion matrices: {run / 'confusion_matrix_test.png'}, {run / 'confusion_matrix_test_normalized.png'}",
    ]
    print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------------------------------
# one-line errors


def valid_keys(parser, args) -> list[str]:
    """The dotted keys the chosen subcommand accepts, for 'did you mean' (jsonargparse has no public map of
    subcommand parsers; without one there is simply no suggestion)."""
    subcommand = next((a for a in args or sys.argv[1:] if a in SUBCOMMANDS), None)
    try:
        return list(parser._subcommands_action._name_parser_map[subcommand].get_defaults().keys())
    except (AttributeError, KeyError, TypeError, ArgumentError):
        return []


def one_line(error: BaseException, valid_keys: list[str]) -> str:
    """jsonargparse's multi-line message as one line, with the closest valid key for a typo."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    nested = re.search(r"Parser key \"([\w.]+)\".*Option '(\w+)' is not accepted.*class_path='([\w.]+)'", message)
    if nested:  # a typo inside a class's init_args: suggest among that class's own arguments
        key, option, class_path = nested.groups()
        accepted = init_arguments(class_path)
        close = difflib.get_close_matches(option, accepted, n=1, cutoff=0.6)
        hint = f" (did you mean '{key}.init_args.{close[0]}'?)" if close else f" (it takes {', '.join(accepted)})"
        return f"{key}.init_args.{option}: {class_path} has no argument {option!r}{hint}"
    for noise in (
        r"Does not validate against any of the Union subtypes Subtypes: \[.*?\] Errors: ",
        r"- Expected a <class 'NoneType'>\s*",
        r"Given value type: <class '[^']*'>\s*",
        r"(?<!\S)- ",
    ):
        message = re.sub(noise, "", message)
    typo = re.search(
        r'No action for key "([^"]+)"|does not accept option .([\w.]+).|Unrecognized arguments: --?(\S+)',
        message,
        re.IGNORECASE,
    )
    if typo:
        key = next(group for group in typo.groups() if group).split("=")[0]
        close = difflib.get_close_matches(key, valid_keys, n=1, cutoff=0.6)
        message += f" (did you mean '{close[0]}'?)" if close else ""
    return f"{message}; `fashion-mnist fit --help` lists the valid keys and types"


def init_arguments(class_path: str) -> list[str]:
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    return [p for p in parameters if p not in ("self", "params", "optimizer")]


# ----------------------------------------------------------------------------------------------------
# library noise: each filter names one message and why it is safe to drop


def quiet_library_noise() -> None:
    # Lightning's advertisement for its cloud loggers, printed by every Trainer: not about this run.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.getMessage()).startswith("💡 Tip")
    )
    # Lightning 2.6's own use of torch's pytree API; nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # A mid-epoch resume is exact here: the DataModule's checkpoint state puts the sampler back at its batch
    # (datamodule.py, tests/test_resume.py), which Lightning's check for a stateful DataLoader cannot see.
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    # --ckpt_path last writes into the run's own, non-empty checkpoint folder on purpose.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # "`Trainer.fit` stopped: `max_epochs=18` reached." says what the user asked for, and lands glued to the
    # progress bar's last line.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "` stopped: `" not in str(record.getMessage())
    )
    # bf16-mixed only changes the model summary's size estimate, which then assumes 32-bit weights.
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


# ----------------------------------------------------------------------------------------------------

TOOLS = {  # commands beside LightningCLI's subcommands
    "crosscheck": "fashion_mnist_lightning.extras.crosscheck",
    "export": "fashion_mnist_lightning.extras.export",
    "report": "fashion_mnist_lightning.extras.report",
    "sweep": "fashion_mnist_lightning.sweep",
}
USER_ERRORS = (ConfigError, DataError, ResumeError, CheckpointError, ScheduleLengthError, LoggerError)


def main(argv: list[str] | None = None) -> int:
    quiet_library_noise()
    keep_freed_memory()  # no page faults for the tensors every step frees and allocates again
    if os.getcwd() not in sys.path:  # your network or DataModule in the folder you run from is found by its class
        sys.path.insert(0, os.getcwd())  # path (my_net.MyNet), as `python -m` would find it
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in TOOLS:
        from importlib import import_module

        return import_module(TOOLS[words[0]]).main(words[1:])
    if words and not words[0].startswith("-") and words[0] not in SUBCOMMANDS:
        commands = [*SUBCOMMANDS, *TOOLS]
        guess = difflib.get_close_matches(words[0], commands, n=1)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        return fail(f"unknown command {words[0]!r}{hint}; the commands are {', '.join(commands)}", 2)
    finished = False
    try:
        FashionMNISTCLI(args=argv)  # None: LightningCLI reads sys.argv itself
        finished = True
        return 0
    except USER_ERRORS as err:
        release_unused()  # nothing was done: leave no folder behind
        return fail(err, 2)
    except NonFiniteLossError as err:
        return fail(err, 1)
    except TrainingInterrupted as err:
        if rank_zero_only.rank == 0:  # under DDP every process stops alike: one line for the user
            print(f"\nstopped: {err}", file=sys.stderr, flush=True)
        return 128 + err.signum
    except OSError as err:
        return fail(
            f"{err.strerror or err} while writing {err.filename or 'a file'}; free space or pass a "
            "writable folder (--trainer.logger.init_args.save_dir), then resume with --ckpt_path last "
            "(checkpoints already written are intact)",
            1,
        )
    except RuntimeError as err:
        if distributed_failure(err):
            return fail(
                f"DDP: {first_line(err)[:300]}; another process stopped or hangs. The wait is bounded by "
                "--trainer.strategy.init_args.timeout (configs/ddp_cpu.yaml); resume with --ckpt_path last",
                1,
            )
        raise
    finally:
        leave_process_group(finished)


def fail(error: BaseException | str, code: int) -> int:
    print(f"\nerror: {first_line(error) if isinstance(error, BaseException) else error}", file=sys.stderr, flush=True)
    return code


def distributed_failure(err: RuntimeError) -> bool:
    import torch.distributed as dist

    text = str(err).lower()
    return (
        dist.is_available()
        and dist.is_initialized()
        and any(word in text for word in ("timed out", "timeout", "connection closed", "connection reset"))
    )


def leave_process_group(finished: bool) -> None:
    """Shut DDP's process group down before the interpreter exits.

    Lightning leaves it open; gloo's worker threads then die in static destructors and the process can abort
    ("terminate called without an active exception", exit -6) after a run that succeeded. The barrier makes
    sure no rank is still inside a collective; after an error the peers may be gone, so no barrier then.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
