"""End-to-end runs through the `fashion-mnist` entry point on the real data (configs/fast.yaml)."""

import subprocess
import sys
from pathlib import Path

import torch
from lightning import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_mnist_lightning.data import FashionMNISTDataModule
from fashion_mnist_lightning.module import FashionMNISTClassifier

ROOT = Path(__file__).resolve().parents[1]
FAST = str(ROOT / "configs" / "fast.yaml")


def fit_fast(run, *extra) -> Path:
    assert run("fit", "--config", FAST, *extra) == 0
    versions = sorted((run.path / "lightning_logs").glob("version_*"))
    return versions[-1]


def test_fast_dev_run_through_the_entry_point(run_dir):
    assert run_dir("fit", "--config", FAST, "--trainer.fast_dev_run=true") == 0


def test_one_epoch_writes_events_checkpoints_and_pngs(run_dir):
    version = fit_fast(run_dir, "--test_after_fit=true")
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch00-val_acc") for name in checkpoints)
    events = EventAccumulator(str(version), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert len(events.Scalars("val/acc")) == 1 and 0.5 < events.Scalars("val/acc")[0].value <= 1
    assert "val/confusion_matrix" in events.Tags()["images"]
    for name in ("confusion_matrix_test.png", "confusion_matrix_test_normalized.png"):
        assert (version / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_reload_gives_identical_test_metrics(run_dir, real_data_dir):
    version = fit_fast(run_dir)
    best = next(p for p in (version / "checkpoints").iterdir() if p.name.startswith("epoch"))
    datamodule = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_test_batches=3)
    model = FashionMNISTClassifier.load_from_checkpoint(best, weights_only=True)
    reloaded = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    again = trainer.test(FashionMNISTClassifier.load_from_checkpoint(best), datamodule=datamodule, verbose=False)[0]
    assert reloaded == again
    state = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_cli_test_subcommand_on_a_checkpoint(run_dir):
    version = fit_fast(run_dir)
    best = next(p for p in (version / "checkpoints").iterdir() if p.name.startswith("epoch"))
    assert run_dir("test", "--config", FAST, f"--ckpt_path={best}") == 0


def test_print_config_feeds_back_as_config(run_dir, tmp_path):
    printed = subprocess.run([sys.executable, "-m", "fashion_mnist_lightning.cli", "fit", "--config", FAST,
                              "--trainer.max_epochs=3", "--print_config"],
                             capture_output=True, text=True, check=True).stdout
    (tmp_path / "printed.yaml").write_text(printed)
    again = subprocess.run([sys.executable, "-m", "fashion_mnist_lightning.cli", "fit",
                            "--config", str(tmp_path / "printed.yaml"), "--print_config"],
                           capture_output=True, text=True, check=True).stdout
    assert again == printed and "max_epochs: 3" in printed


def test_progress_bar_flag_works_with_every_config(run_dir):
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        result = subprocess.run([sys.executable, "-m", "fashion_mnist_lightning.cli", "fit", "--config",
                                 str(config), "--trainer.enable_progress_bar=false", "--print_config"],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{config.name}: {result.stderr[-500:]}"


def last_weights(version: Path) -> dict:
    return torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_resume_last_continues_the_same_run_bit_identically(run_dir, tmp_path, monkeypatch, real_data_dir):
    straight = fit_fast(run_dir, "--trainer.max_epochs=2")
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    monkeypatch.chdir(resumed_dir)
    run_dir.path = resumed_dir
    first = fit_fast(run_dir, "--trainer.max_epochs=1")
    again = fit_fast(run_dir, "--trainer.max_epochs=2", "--ckpt_path=last")
    assert first == again and [p.name for p in (resumed_dir / "lightning_logs").iterdir()] == ["version_0"]
    assert torch.load(again / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    a, b = last_weights(straight), last_weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_last_with_nothing_to_resume_is_an_error(run_dir, capsys):
    assert run_dir("fit", "--config", FAST, "--ckpt_path=last") == 2
    assert "no lightning_logs/version_*/checkpoints/last.ckpt to resume" in capsys.readouterr().err


def test_device_resident_data_path(run_dir):
    assert run_dir("fit", "--config", FAST, "--trainer.fast_dev_run=true", "--data.data_on_device=true") == 0


def test_compile_switch(run_dir):
    assert run_dir("fit", "--config", FAST, "--trainer.fast_dev_run=true", "--model.compile=true") == 0
