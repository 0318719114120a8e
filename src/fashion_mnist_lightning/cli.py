"""The ``fashion-mnist`` command: LightningCLI (fit / validate / test / predict) plus the template's own tools.

Everything goes through LightningCLI's public hooks (``init_parser``, ``add_arguments_to_parser``,
``parse_arguments``, ``before_instantiate_classes``, ``instantiate_classes``, ``instantiate_trainer``,
``after_instantiate_classes``, ``after_fit``). What the template adds to stock LightningCLI:

- the shared run setup ``configs/base.yaml`` is read before every ``--config`` (package data: it is found in a
  wheel as in a checkout), and a shipped recipe is reachable by name (``--config strong``);
- the data set by class path, its class names, image shape and statistics linked into the model and its network;
- each command gets its own folder (runs/folders.py); ``--ckpt_path last`` / ``best`` mean the newest run's;
- the fault-tolerance callbacks, the progress bar and the predictions writer are added to every Trainer;
- a mistake is one line on stderr (the library's own message, with a did-you-mean), exit 2, no folder left behind.
"""

import difflib
import os
import signal
import sys
from argparse import ArgumentError
from importlib import import_module
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from fashion_mnist_lightning import configs, noise
from fashion_mnist_lightning.callbacks import ConfusionMatrixLogger, PredictionCSV
from fashion_mnist_lightning.data.files import DataError
from fashion_mnist_lightning.errors import ConfigError, UserError, config_path, explain, fail, first_line
from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.runs import checkpoint_io, folders, loggers, slurm
from fashion_mnist_lightning.runs.ddp import distributed_failure, leave_process_group
from fashion_mnist_lightning.runs.folders import RunConfig
from fashion_mnist_lightning.runs.guards import FiniteLossGuard, NonFiniteLossError
from fashion_mnist_lightning.runs.memory import keep_freed_memory
from fashion_mnist_lightning.runs.precision import warn_if_emulated
from fashion_mnist_lightning.runs.rng import RNGStates
from fashion_mnist_lightning.runs.signals import CheckpointOnSignal, Terminated, TrainingInterrupted, stop_on_sigterm

SUBCOMMANDS = ("fit", "validate", "test", "predict")
TOOLS = {  # commands beside LightningCLI's subcommands
    "crosscheck": "fashion_mnist_lightning.extras.crosscheck",
    "export": "fashion_mnist_lightning.extras.export",
    "report": "fashion_mnist_lightning.extras.report",
    "serve": "fashion_mnist_lightning.serving.command",
    "sweep": "fashion_mnist_lightning.sweep",
}
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
ATOMIC_CHECKPOINTS = {"class_path": "fashion_mnist_lightning.runs.checkpoint_io.AtomicCheckpointIO"}
NETWORK_LINKS = {  # network __init__ argument <- the DataModule (lists: the checkpoint's hparams stay plain YAML)
    "num_classes": lambda data, names: len(names),
    "in_channels": lambda data, names: data.image_shape[0],
    "image_size": lambda data, names: list(data.image_shape[1:]),
    "mean": lambda data, names: list(getattr(data, "mean", None) or [0.0] * data.image_shape[0]),
    "std": lambda data, names: list(getattr(data, "std", None) or [1.0] * data.image_shape[0]),
}


class FashionMNISTCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, extra_callbacks: tuple = ()):
        """``extra_callbacks``: callback objects for this run's Trainer beside the config's (the sweep passes
        Optuna's pruning callback this way)."""
        base = configs.BASE
        if not base.is_file():
            raise ConfigError(f"the shared run setup {base} is missing from the installed package; reinstall it")
        self.extra_callbacks, self.parsers = list(extra_callbacks), []
        # allow_abbrev=False: a prefix of a key (--trainer.max_epoch) is a typo to refuse, not the key it begins
        per_subcommand = {"default_config_files": [str(base)], "exit_on_error": False, "allow_abbrev": False}
        super().__init__(
            FashionMNISTClassifier,
            L.LightningDataModule,  # any DataModule by class path (base.yaml: Fashion-MNIST), --data my.DataModule
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the optimizer is the model's (model.optimizer): no second one
            save_config_callback=RunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={"plugins": [ATOMIC_CHECKPOINTS]},  # shown by --print_config; a config may replace it
            parser_kwargs={
                "exit_on_error": False,
                "allow_abbrev": False,
                "epilog": f"more commands: {', '.join(TOOLS)} (fashion-mnist COMMAND --help)",
                **{name: dict(per_subcommand) for name in SUBCOMMANDS},
            },
            args=configs.with_shipped(sys.argv[1:] if args is None else args),
        )

    def init_parser(self, **kwargs):
        parser = super().init_parser(**kwargs)
        self.parsers.append(parser)  # each subcommand's: their keys are what a typo is compared with
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="fit only: then test the best checkpoint"
        )
        parser.add_argument(
            "--progress_refresh_rate", type=int, default=50, help="steps between progress-bar updates (a refresh "
            "per step costs more than a step)",
        )  # fmt: skip
        # What the data set knows flows into the model and its network (a network takes whichever of these its
        # __init__ has; README "Make it yours" states the DataModule's side of the contract).
        parser.link_arguments("data", "model.class_names", compute_fn=self.class_names_of, apply_on="instantiate")
        parser.link_arguments("data.image_shape", "model.image_shape", compute_fn=list, apply_on="instantiate")
        parser.link_arguments("data", "model.mirror", compute_fn=self.mirror_of, apply_on="instantiate")
        parser.link_arguments("data", "model.class_counts", compute_fn=self.class_counts_of, apply_on="instantiate")
        for target, compute in NETWORK_LINKS.items():
            parser.link_arguments(
                "data",
                f"model.network.init_args.{target}",
                compute_fn=lambda data, compute=compute: compute(data, self.class_names_of(data)),
                apply_on="instantiate",
            )

    def saved(self, key: str):
        """The model hyper-parameter ``key`` of the checkpoint this command evaluates or resumes, or None."""
        return (self.checkpoint or {}).get("hyper_parameters", {}).get(key)

    def class_names_of(self, data) -> list[str] | None:
        """The data's class names; a data set that is not on this machine (an image folder moved away) has none,
        and predict then takes the checkpoint's: predicting new images needs the checkpoint only."""
        names = getattr(data, "class_names", None)
        if names is None and self.subcommand == "predict" and self.checkpoint is not None:
            return self.saved("class_names")
        if names is None and getattr(data, "missing", None):
            raise DataError(data.missing)
        return names

    def class_counts_of(self, data) -> list[int] | None:
        """The data's training images per class (for class-weighted losses), else the checkpoint's (predict of new
        images without the training photos), else None."""
        counts = getattr(data, "class_counts", None)
        if counts is None and self.subcommand != "fit":
            counts = self.saved("class_counts")
        return list(counts) if counts is not None else None

    def mirror_of(self, data) -> bool:
        """fit: whether the data may be mirrored (its DataModule's ``hflip`` is not false); an evaluation keeps the
        checkpoint's own test-time views, whatever another config's data.hflip says."""
        if self.subcommand != "fit" and self.saved("mirror") is not None:
            return self.saved("mirror")
        return getattr(data, "hflip", True) is not False

    # ------------------------------------------------------------------------------------------------
    # parsing: one-line errors; --ckpt_path resolved and its hyper-parameters checked before Lightning uses them

    def parse_arguments(self, parser, args) -> None:
        self.args_given = list(args)
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            refuse_factory_functions(args)
            raise ConfigError(explain(err, args, self.valid_keys())) from None
        subcommand = self.config.get("subcommand")
        self.checkpoint, self.resumed_run = None, None
        if subcommand:
            config = self.config[subcommand]
            loggers.prepare_mlflow(config)
            self.resumed_run = self.resolve_checkpoint(subcommand, config)
            if subcommand == "fit" and config.model.get("init_weights") in ("last", "best"):
                config.model.init_weights = str(self.newest(config, config.model.init_weights))
                print(f"starting from the weights of {config.model.init_weights}", flush=True)

    def valid_keys(self) -> set[str]:
        keys = set()
        for parser in self.parsers:
            try:
                for key in parser.get_defaults().keys():  # a key, its shorthand without init_args, its parents
                    parts = key.replace(".init_args.", ".").split(".")
                    keys |= {key, *(".".join(parts[:n]) for n in range(1, len(parts) + 1))}
            except (ArgumentError, TypeError, ValueError):
                continue  # a parser whose defaults do not resolve offers no suggestions
        return keys

    def resolve_checkpoint(self, subcommand: str, config: Namespace) -> Path | None:
        """``last``/``best`` -> the newest run's checkpoint; read once (weights_only), its model hyper-parameters
        parsed as LightningCLI will. Returns the run folder that ``fit --ckpt_path last`` continues, else None."""
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
            named = folders.named_run(config)
            if subcommand == "fit" and named is not None and not (named / "checkpoints" / folders.LAST).is_file():
                config.ckpt_path = None  # a named run (a Slurm job's) that has no checkpoint yet: its first start
                if rank_zero_only.rank == 0:
                    print(f"starting {named}: it has no checkpoint to resume yet", flush=True)
                return None
            config.ckpt_path = str(self.newest(config, ckpt))
            if rank_zero_only.rank == 0:  # once, not once per DDP process
                print(f"{'resuming' if subcommand == 'fit' else 'evaluating'} {config.ckpt_path}", flush=True)
        self.checkpoint = checkpoint_io.read_checkpoint(config.ckpt_path)  # one line for a missing or foreign file
        hparams = {k: v for k, v in self.checkpoint.get("hyper_parameters", {}).items() if k != "_instantiator"}
        try:  # what LightningCLI does with them next, here where a failure can be one line
            self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ArgumentError as err:
            raise checkpoint_io.CheckpointError(
                f"{config.ckpt_path} was not written for this model: its hyper-parameters do not parse "
                f"({first_line(err)[:200]}); pass a .ckpt written by `fashion-mnist fit`"
            ) from None
        return checkpoint_io.run_of(config.ckpt_path) if subcommand == "fit" and ckpt == "last" else None

    def newest(self, config: Namespace, which: str) -> Path:
        """``last`` or ``best`` of the run whose ``config.yaml`` the command line gives (``--config
        lightning_logs/version_3/config.yaml``), or of the run the logger's ``version`` names, else of the newest
        run of the configured logger."""
        named = run_of_config(self.args_given) or folders.named_run(config)
        if named is not None:
            return folders.newest_checkpoint(named.parent, which, [named])
        if loggers.mlflow_init_args(config) is not None:
            root, candidates = folders.mlflow_runs(*loggers.mlflow_store(config))
        else:
            root, candidates = loggers.logger_root(config), None
        if root is None:
            raise folders.ResumeError(
                f"{which} searches the runs of the configured logger, and there is none (trainer.logger); "
                "pass the path of a .ckpt file instead"
            )
        return folders.newest_checkpoint(root, which, candidates)

    # ------------------------------------------------------------------------------------------------
    # instantiation: the command's own folder, the template's callbacks, values the classes reject

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        self.recipe = config.clone()  # what RunConfig writes
        if self.subcommand == "fit":
            self.recipe.ckpt_path = None
        try:
            folders.prepare_run_folder(self.subcommand, config, self.resumed_run)
        except OSError as err:
            raise ConfigError(
                f"cannot create a run folder in {err.filename} ({err.strerror}); pass a writable folder with "
                "--trainer.logger.init_args.save_dir"
            ) from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:  # a class's __init__ refused a value the user passed
            chain = [err]
            while chain[-1].__cause__ is not None:  # jsonargparse wraps what the class raised: take the class's own
                chain.append(chain[-1].__cause__)
            own = next((e for e in chain if isinstance(e, UserError)), None)
            if own is not None:
                raise own from None
            cause = next((e for e in reversed(chain) if isinstance(e, (ValueError, TypeError))), err)
            message = f"invalid value: {first_line(cause)}; fix the flag or config key (--help lists them)"
            raise ConfigError(message) from None

    def instantiate_trainer(self, **kwargs):
        config = self.config_init[self.subcommand]
        accelerator = str(config.trainer.get("accelerator"))
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator {accelerator}: this machine has no GPU; run this config on a GPU machine, "
                "or pass --trainer.accelerator cpu"
            )
        callbacks = list(config.trainer.get("callbacks") or [])
        if self.subcommand != "fit":  # evaluations write no checkpoints (and reload none of fit's state)
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
            kwargs["enable_checkpointing"] = False
        if config.trainer.get("enable_progress_bar", True) is not False and not has(callbacks, ProgressBar):
            callbacks.append(TQDMProgressBar(refresh_rate=config.progress_refresh_rate))
        callbacks += [RNGStates(), FiniteLossGuard(), CheckpointOnSignal(), *self.extra_callbacks]
        if self.subcommand == "predict" and not has(callbacks, PredictionCSV):
            callbacks.append(PredictionCSV())
        plugins = config.trainer.get("plugins") or []
        kwargs["plugins"] = slurm.with_cluster_environment(plugins if isinstance(plugins, list) else [plugins])
        for key in BATCH_LIMITS:  # jsonargparse reads `1` as 1.0, which Lightning takes as 100 %: mean one batch
            if config.trainer.get(key) == 1.0:
                kwargs[key] = 1
        try:
            trainer = super().instantiate_trainer(callbacks=callbacks, **kwargs)
        except (MisconfigurationException, RuntimeError, ValueError) as err:  # the Trainer refuses these settings
            raise ConfigError(f"trainer: {first_line(err)}") from None
        if rank_zero_only.rank == 0:
            warn_if_emulated(str(trainer.precision), isinstance(trainer.accelerator, CPUAccelerator))
        return trainer

    def after_instantiate_classes(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunConfig):
                callback.config = self.recipe
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if self.checkpoint is not None:
            checkpoint_io.check_same_classes(
                ckpt, self.checkpoint, self.model.class_names, type(self.datamodule).__name__
            )
            checkpoint_io.check_matches(ckpt, self.checkpoint["state_dict"], self.model)
            if self.subcommand == "fit":  # a resume continues the checkpoint's own recipe
                model, data = dict(self.model.hparams), dict(self.datamodule.hparams)
                checkpoint_io.check_same_recipe(ckpt, self.checkpoint, model, data)
        if self.subcommand == "fit" and self.resumed_run is not None and rank_zero_only.rank == 0:
            folders.resume_logger(self.trainer.logger, self.resumed_run)

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        confusion = next((c for c in self.trainer.callbacks if isinstance(c, ConfusionMatrixLogger)), None)
        if self.trainer.is_global_zero:
            images, metrics = confusion.test_images if confusion else None, results[0] if results else {}
            run = folders.run_dir(self.trainer)
            print(summary(run, metrics, best, images, self.trainer.logger, self.model.metric_names), flush=True)


def run_of_config(words: list[str]) -> Path | None:
    """The run folder whose ``config.yaml`` a ``--config`` names (the last such), or None."""
    files = [path for i in range(len(words)) if (path := config_path(words, i)) is not None]
    runs = [path.parent for path in files if path.name == "config.yaml" and (path.parent / "checkpoints").is_dir()]
    return runs[-1] if runs else None


def refuse_factory_functions(words: list[str]) -> None:
    """A network named by a function (torchvision.models.resnet18, as tutorials write it) is not a class: say the
    way that works, instead of jsonargparse's message about its signature."""
    for path in network_paths(words):
        module, _, name = path.rpartition(".")
        try:
            target = getattr(import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            continue  # jsonargparse's own message says it is not found
        if callable(target) and not isinstance(target, type):
            raise ConfigError(
                f"--model.network {path} is a function, not an nn.Module class; use --model.network "
                f"fashion_mnist_lightning.backbones.Pretrained --model.network.init_args.name {path} "
                "(its pretrained weights, the data's classes and channels)"
            )


def network_paths(words: list[str]) -> list[str]:
    """The class paths a command line gives model.network: its flags and its --config files' model.network."""
    paths = []
    for i, word in enumerate(words):
        key, _, value = word.partition("=")
        if key in ("--model.network", "--model.network.class_path"):
            paths.append(value or (words[i + 1] if i + 1 < len(words) else ""))
        elif (config := config_path(words, i)) is not None:
            try:
                recipe = yaml.safe_load(config.read_text()) or {}
                network = (recipe.get("model") or {}).get("network")
            except (OSError, AttributeError, yaml.YAMLError):
                continue
            paths.append(network.get("class_path", "") if isinstance(network, dict) else str(network or ""))
    return [path for path in paths if "." in path]


def has(objects: list, kind: type) -> bool:
    return any(isinstance(o, kind) for o in objects)


def summary(run: Path, metrics: dict, best: str, images: int | None, logger, extra: list[str]) -> str:
    """What `fit --test_after_fit true` prints at the end: test accuracy and loss, the model's own metrics, where
    the best checkpoint, the run folder and the confusion matrices are."""
    value = lambda key: float(metrics.get(key, float("nan")))  # noqa: E731
    board = " (TensorBoard: make tensorboard)" if isinstance(logger, TensorBoardLogger) else ""
    return "\n".join([
        "",
        f"test accuracy: {100 * value('test/acc'):.2f} % (test loss {value('test/loss'):.4f})"
        + (f" on {images:,} test images" if images else ""),
        *(f"test {name}: {value(f'test/{name}'):.4f}" for name in extra),
        f"best checkpoint: {best or '(none saved)'}",
        f"run folder{board}: {run}",
        f"confusion matrices: {run / 'confusion_matrix_test.png'}, {run / 'confusion_matrix_test_normalized.png'}",
    ])  # fmt: skip


# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    keep_freed_memory()  # no page faults for the tensors every step frees and allocates again
    if os.getcwd() not in sys.path:  # your network or DataModule in the folder you run from is found by its class
        sys.path.insert(0, os.getcwd())  # path (my_net.MyNet), as `python -m` would find it
    finished = False
    with noise.quiet(), stop_on_sigterm():
        try:
            if words and words[0] in TOOLS:
                return import_module(TOOLS[words[0]]).main(words[1:])
            if words and not words[0].startswith("-") and words[0] not in SUBCOMMANDS:
                commands = [*SUBCOMMANDS, *TOOLS]
                guess = difflib.get_close_matches(words[0], commands, n=1)
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
                raise ConfigError(f"unknown command {words[0]!r}{hint}; the commands are {', '.join(commands)}")
            FashionMNISTCLI(args=words)
            finished = True
            return 0
        except UserError as err:
            folders.release_unused()  # nothing was done: leave no folder behind
            return fail(err, 2, rank_zero_only.rank)
        except NonFiniteLossError as err:
            return fail(err, 1, rank_zero_only.rank)
        except MisconfigurationException as err:  # Lightning refuses a setting once the run has started (e.g.
            # base.yaml's LearningRateMonitor with --trainer.logger=false): its message, one line
            message = f"trainer: {first_line(err)}; change that flag, or the callbacks configs/base.yaml adds"
            return fail(message, 2, rank_zero_only.rank)
        except (TrainingInterrupted, Terminated) as err:
            if rank_zero_only.rank == 0:  # under DDP every process stops alike: one line for the user
                print(f"\nstopped: {err}", file=sys.stderr, flush=True)
            return 128 + err.signum
        except SIGTERMException:  # Lightning's own SIGTERM flag (a signal during the sanity check) ended the fit
            if rank_zero_only.rank == 0:
                print(f"\nstopped: {Terminated(signal.SIGTERM)}", file=sys.stderr, flush=True)
            return 128 + signal.SIGTERM
        except OSError as err:
            return fail(
                f"{err.strerror or err} while writing {err.filename or 'a file'}; free space or pass a writable "
                "folder (--trainer.logger.init_args.save_dir), then resume with --ckpt_path last (checkpoints "
                "already written are intact)",
                1,
                rank_zero_only.rank,
            )
        except RuntimeError as err:
            if distributed_failure(err):
                return fail(
                    f"DDP: {first_line(err)[:300]}; another process stopped or hangs. The wait is bounded by "
                    "--trainer.strategy.init_args.timeout (configs/ddp_cpu.yaml); resume with --ckpt_path last",
                    1,
                    rank_zero_only.rank,
                )
            raise
        finally:
            leave_process_group(finished)


if __name__ == "__main__":
    sys.exit(main())
