"""The ``fashion-mnist`` command: LightningCLI (fit / validate / test / predict) plus the template's own tools."""

import sys
from pathlib import Path

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI

from fashion_mnist_lightning.data import DataError, FashionMNISTDataModule
from fashion_mnist_lightning.module import FashionMNISTClassifier


class ResumeError(RuntimeError):
    """Nothing to resume, stated in one line with its fix."""


class FashionMNISTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="fit only: then test the best checkpoint and print where the results are")
        parser.add_argument("--progress_refresh_rate", type=int, default=50,
                            help="steps between progress-bar updates (a refresh per step costs more than a step)")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit" and self.config.fit.get("ckpt_path") == "last":
            self._resume_latest_run(self.config.fit)

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
        listed = [c for c in (config.get("callbacks") or []) + callbacks if isinstance(c, ProgressBar)]
        if config.get("enable_progress_bar", True) is not False and not listed:
            callbacks = [*callbacks, TQDMProgressBar(refresh_rate=rate)]
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        if not self._get(self.config, "test_after_fit") or self.trainer.fast_dev_run:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        if self.trainer.is_global_zero:
            images = int(self.model.test_confusion.compute().sum())  # honest under --trainer.limit_test_batches
            print_summary(self.trainer, results[0] if results else {}, best, images)


def print_summary(trainer, metrics: dict, best: str, images: int) -> None:
    run_dir = Path(trainer.log_dir or ".")
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
        args=args,
    )


TOOLS = {"crosscheck": "fashion_mnist_lightning.crosscheck"}  # commands beside LightningCLI's subcommands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        from importlib import import_module

        return import_module(TOOLS[argv[0]]).main(argv[1:])
    try:
        run_lightning_cli(argv)
    except (DataError, ResumeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
