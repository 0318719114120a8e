"""The ``fashion-mnist`` command: LightningCLI (fit / validate / test / predict) plus the template's own tools."""

import difflib
import re
import sys
from argparse import ArgumentError
from pathlib import Path

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import BasePredictionWriter, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI

from fashion_mnist_lightning.checkpoint_io import AtomicCheckpointIO, CheckpointError, check_matches, read_checkpoint
from fashion_mnist_lightning.data import DataError, FashionMNISTDataModule
from fashion_mnist_lightning.interrupt import CheckpointOnSignal, TrainingInterrupted
from fashion_mnist_lightning.module import FashionMNISTClassifier, NonFiniteLossError
from fashion_mnist_lightning.predictions import PredictionCSV

CKPT_KEYWORDS = ("last", "best", "hpc", "registry")  # --ckpt_path values that are not file paths


class ResumeError(RuntimeError):
    """Nothing to resume, stated in one line with its fix."""


class ConfigError(ValueError):
    """A config or command-line mistake (typo, wrong type, unknown class), stated in one line."""


def valid_keys(parser, args) -> list[str]:
    """The dotted keys the chosen subcommand accepts, for 'did you mean'."""
    subcommand = next((a for a in args or sys.argv[1:] if not a.startswith("-")), None)
    try:
        subparser = parser._subcommands_action._name_parser_map[subcommand]
        return list(subparser.get_defaults().keys())
    except (AttributeError, KeyError, TypeError):
        return []


class FashionMNISTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="fit only: then test the best checkpoint and print where the results are")
        parser.add_argument("--progress_refresh_rate", type=int, default=50,
                            help="steps between progress-bar updates (a refresh per step costs more than a step)")

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(one_line(err, valid_keys(parser, args))) from None

    def _parse_ckpt_path(self) -> None:
        """A missing or unreadable checkpoint as one line; then LightningCLI lets the checkpoint's own model
        hyper-parameters override the config's (so `test`/`predict` rebuild the network it was trained with)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path in (None, *CKPT_KEYWORDS):
            return super()._parse_ckpt_path()
        self.checkpoint = read_checkpoint(ckpt_path)  # exists, loads with weights_only=True, has a state_dict
        try:
            super()._parse_ckpt_path()
        except (ArgumentError, SystemExit) as err:
            raise CheckpointError(f"{ckpt_path} was not written for this model: its hyper-parameters do not parse "
                                  f"({one_line(err, [])[:200]}); pass a .ckpt written by `fashion-mnist fit`") from None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            self._resume_latest_run(config)
            self.checkpoint = read_checkpoint(config.ckpt_path)

    def _run_subcommand(self, subcommand: str) -> None:
        checkpoint = getattr(self, "checkpoint", None)
        if checkpoint is not None:
            check_matches(self.config[subcommand]["ckpt_path"], checkpoint["state_dict"], self.model)
            del self.checkpoint
        super()._run_subcommand(subcommand)

    @staticmethod
    def _resume_latest_run(config) -> None:
        """`--ckpt_path last`: continue the newest run's last.ckpt *in its own version folder*.

        Stock Lightning looks for last.ckpt in the new run's (empty) folder, finds nothing and silently starts
        over. Here "last" means lightning_logs/version_N/checkpoints/last.ckpt of the highest N that has one,
        and the logger is pointed at version_N so the TensorBoard run continues.
        """
        logger = config.trainer.logger
        init = logger.init_args if logger is not None and hasattr(logger, "init_args") else None
        if init is None or not hasattr(init, "version"):
            raise ResumeError("--ckpt_path last needs the TensorBoardLogger of the configs (trainer.logger); "
                              "pass the checkpoint's path instead")
        runs = Path(init.save_dir) / (init.name or "")
        by_version = {int(p.parts[-3].removeprefix("version_")): p
                      for p in runs.glob("version_*/checkpoints/last.ckpt")}
        if not by_version:
            raise ResumeError(f"--ckpt_path last: no {runs}/version_*/checkpoints/last.ckpt to resume; "
                              "drop --ckpt_path to start a new run")
        init.version = max(by_version)
        config.ckpt_path = str(by_version[init.version])
        print(f"resuming {config.ckpt_path} in {runs / f'version_{init.version}'}", flush=True)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Add a progress bar with a sane refresh rate unless the user disabled it or brought their own.

        A progress bar listed in a config would make `--trainer.enable_progress_bar=false` an error.
        """
        rate = self._get(self.config, "progress_refresh_rate")
        everything = (config.get("callbacks") or []) + callbacks
        if config.get("enable_progress_bar", True) is not False and not has(everything, ProgressBar):
            callbacks = [*callbacks, TQDMProgressBar(refresh_rate=rate)]
        if not has(everything, CheckpointOnSignal):
            callbacks = [*callbacks, CheckpointOnSignal()]
        if self.subcommand == "predict" and not has(everything, BasePredictionWriter):
            callbacks = [*callbacks, PredictionCSV()]
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not has(plugins, CheckpointIO):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        if not self._get(self.config, "test_after_fit") or self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        images = int(self.model.test_confusion.compute().sum())  # every rank: compute() syncs under DDP
        run_dir = Path(self.trainer.log_dir or ".")  # every rank: log_dir is a broadcast under DDP
        if self.trainer.is_global_zero:
            print_summary(run_dir, results[0] if results else {}, best, images)


def has(objects: list, kind: type) -> bool:
    return any(isinstance(o, kind) for o in objects)


def print_summary(run_dir: Path, metrics: dict, best: str, images: int) -> None:
    lines = [
        "",
        f"test accuracy: {100 * float(metrics.get('test/acc', float('nan'))):.2f} % "
        f"(test loss {float(metrics.get('test/loss', float('nan'))):.4f}) on {images:,} test images",
        f"best checkpoint: {best or '(none saved)'}",
        f"run folder (TensorBoard: make tensorboard): {run_dir}",
        f"confusion matrices: {run_dir / 'confusion_matrix_test.png'}, "
        f"{run_dir / 'confusion_matrix_test_normalized.png'}",
    ]
    print("\n".join(lines), flush=True)


def run_lightning_cli(args: list[str] | None = None) -> FashionMNISTCLI:
    return FashionMNISTCLI(
        FashionMNISTClassifier,
        FashionMNISTDataModule,
        save_config_kwargs={"overwrite": True},  # a rerun into the same run folder (resume) must not crash
        parser_kwargs={"exit_on_error": False},  # config errors come back as one line, not a usage dump
        args=args,
    )


def one_line(error: ArgumentError, valid_keys: list[str]) -> str:
    """jsonargparse's multi-line message as one line, with the closest valid key for a typo."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    for noise in (r"Does not validate against any of the Union subtypes Subtypes: \[.*?\] Errors: ",
                  r"- Expected a <class 'NoneType'>\s*", r"Given value type: <class '[^']*'>\s*", r"(?<!\S)- "):
        message = re.sub(noise, "", message)
    typo = re.search(r'No action for key "([^"]+)"|does not accept option .([\w.]+).|Unrecognized arguments: --?(\S+)',
                     message)
    if typo:
        key = next(group for group in typo.groups() if group).split("=")[0]
        close = difflib.get_close_matches(key, valid_keys, n=1, cutoff=0.6)
        message += f" (did you mean '{close[0]}'?)" if close else ""
    return f"{message}; `fashion-mnist fit --help` lists the valid keys and types"


TOOLS = {  # commands beside LightningCLI's subcommands
    "crosscheck": "fashion_mnist_lightning.crosscheck",
    "export": "fashion_mnist_lightning.export",
    "report": "fashion_mnist_lightning.report",
}


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in TOOLS:
        from importlib import import_module

        return import_module(TOOLS[words[0]]).main(words[1:])
    finished = False
    try:
        run_lightning_cli(argv)  # None: LightningCLI reads sys.argv itself
        finished = True
    except (ConfigError, DataError, ResumeError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 128 + err.signum
    finally:
        leave_process_group(finished)
    return 0


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
