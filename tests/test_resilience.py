"""Reliability: exact resume (RNG states, mid-epoch position), interrupts by real signals, atomic checkpoints,
and a one-line error with a non-zero exit for each kind of bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning import Callback

from fashion_mnist_lightning import data
from fashion_mnist_lightning.checkpoint_io import AtomicCheckpointIO
from fashion_mnist_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = str(ROOT / "configs" / "fast.yaml")
RANDOM = ("--trainer.max_epochs=2", "--data.crop_padding=2", "--data.hflip=true")  # augmentation draws RNG


def final_weights(folder: Path) -> dict:
    versions = sorted((folder / "lightning_logs").glob("version_*"))
    return torch.load(versions[-1] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def straight(run_dir) -> dict:
    """Final weights of an uninterrupted 2-epoch fast run with random augmentation."""
    assert run_dir("fit", "--config", FAST, *RANDOM) == 0
    return final_weights(run_dir.path)


def test_resume_from_end_of_epoch_with_random_augmentation_is_bit_identical(straight, run_dir, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path / "lightning_logs")  # a fresh place for the second run
    run_dir.path = tmp_path / "lightning_logs"
    assert run_dir("fit", "--config", FAST, *RANDOM[1:], "--trainer.max_epochs=1") == 0
    checkpoint = torch.load(run_dir.path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert {"torch", "numpy", "python"} <= checkpoint["rng_states"].keys()
    assert run_dir("fit", "--config", FAST, *RANDOM, "--ckpt_path=last") == 0
    assert same(straight, final_weights(run_dir.path))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_checkpoints_and_resume_finishes_identically(straight, run_dir, tmp_path, monkeypatch,
                                                                     real_data_dir, signum):
    work = tmp_path / f"interrupted-{signum.name}"
    work.mkdir()
    monkeypatch.chdir(work)
    run_dir.path = work
    marker = work / "mid-epoch"
    slow = {"class_path": "slowdown.MarkAndSlowDown", "init_args": {"marker": str(marker)}}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    with open(work / "train.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "fashion_mnist_lightning.cli", "fit", "--config", FAST, *RANDOM,
             "--trainer.enable_progress_bar=false", f"--data.data_dir={real_data_dir}",
             f"--trainer.callbacks+={json.dumps(slow)}"], cwd=work, env=env, stdout=log, stderr=subprocess.PIPE,
            text=True)
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, stderr[-2000:]
    assert "--ckpt_path last" in stderr.splitlines()[-1]
    last = work / "lightning_logs/version_0/checkpoints/last.ckpt"
    progress = torch.load(last, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert 10 <= progress["current"]["processed"] < 30  # stopped inside epoch 0 (30 batches)
    assert run_dir("fit", "--config", FAST, *RANDOM, "--ckpt_path=last") == 0
    assert [p.name for p in (work / "lightning_logs").iterdir()] == ["version_0"]
    assert same(straight, final_weights(work))


WRITER = """
import itertools, sys, torch
from fashion_mnist_lightning.checkpoint_io import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
start = torch.load(path, weights_only=True)["step"] + 1 if __import__("os").path.exists(path) else 0
print("ready", flush=True)
for step in itertools.count(start):
    io.save_checkpoint({"step": step, "weights": torch.full((1_000_000,), float(step))}, path)
"""


def test_kill_9_while_writing_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    steps = []
    for attempt in range(20):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.15 + 0.013 * attempt)  # land at different moments of a write (~10-30 ms each)
        writer.kill()  # SIGKILL: no handler, no cleanup
        writer.wait()
        checkpoint = torch.load(path, weights_only=True)  # must always load: the old or the new file
        assert torch.equal(checkpoint["weights"], torch.full((1_000_000,), float(checkpoint["step"])))
        steps.append(checkpoint["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # the writers made progress; nothing went back
    AtomicCheckpointIO().save_checkpoint({"step": -1}, path)  # the next save sweeps partial files
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


# ------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr naming the problem and the fix, exit != 0, nothing of the user's touched

def error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    lines = [line for line in err if line.startswith("error:")]
    assert len(lines) == 1, err[-5:]
    return lines[0]


def test_config_key_typo_is_one_line_with_a_suggestion(run_dir, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text((ROOT / "configs" / "fast.yaml").read_text().replace("max_epochs:", "max_epoks:"))
    assert run_dir("fit", "--config", str(config)) == 2
    line = error_line(capsys)
    assert "trainer.max_epoks" in line and "did you mean 'trainer.max_epochs'" in line


def test_wrong_value_type_is_one_line(run_dir, capsys):
    assert run_dir("fit", "--config", FAST, "--trainer.max_epochs=ten") == 2
    line = error_line(capsys)
    assert "trainer.max_epochs" in line and "ten" in line and "--help" in line


def test_unknown_class_path_is_one_line(run_dir, capsys):
    assert run_dir("fit", "--config", FAST, "--model.network=fashion_mnist_lightning.network.ResNet") == 2
    line = error_line(capsys)
    assert "model.network" in line and "ResNet" in line


def test_missing_checkpoint_is_one_line(run_dir, capsys):
    assert run_dir("test", "--config", FAST, "--ckpt_path=no/such.ckpt") == 2
    assert "no/such.ckpt does not exist" in error_line(capsys)


def test_corrupt_checkpoint_is_one_line_and_left_alone(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    assert run_dir("test", "--config", FAST, f"--ckpt_path={bad}") == 2
    assert "is not a readable checkpoint" in error_line(capsys)
    assert bad.read_bytes() == b"not a checkpoint at all"


def test_checkpoint_of_another_model_is_one_line(run_dir, tmp_path, capsys):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(4, 4)}, "hyper_parameters": {}}, other)
    assert run_dir("test", "--config", FAST, f"--ckpt_path={other}") == 2
    line = error_line(capsys)
    assert "holds a different network than the config's" in line and "encoder.weight" in line

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "somewhere.OtherModel", "depth": 3}}, foreign)
    before = foreign.read_bytes()
    assert run_dir("test", "--config", FAST, f"--ckpt_path={foreign}") == 2
    assert "was not written for this model" in error_line(capsys) and foreign.read_bytes() == before


def test_a_checkpoint_brings_its_own_network_config(run_dir, capsys):
    """LightningCLI takes the model hyper-parameters from the checkpoint: a VGGNet checkpoint tests as a VGGNet
    even under a SeedCNN config, instead of failing on mismatched weights."""
    vgg = ("--model.network=fashion_mnist_lightning.network.VGGNet", "--model.network.width=4")
    assert run_dir("fit", "--config", FAST, *vgg, "--trainer.limit_train_batches=2") == 0
    ckpt = run_dir.path / "lightning_logs/version_0/checkpoints/last.ckpt"
    assert run_dir("test", "--config", FAST, f"--ckpt_path={ckpt}") == 0


def test_missing_data_is_one_line(run_dir, tmp_path, capsys, no_system_data):
    assert main(["fit", "--config", FAST, f"--data.data_dir={tmp_path / 'empty'}", "--data.download=false"]) == 2
    assert "Fashion-MNIST" in error_line(capsys)


def test_truncated_gz_through_the_cli_is_one_line_and_the_file_kept(tmp_path, capsys, synthetic_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gz = synthetic_dir / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-100])
    before = gz.read_bytes()
    assert main(["fit", "--config", FAST, f"--data.data_dir={synthetic_dir}", "--data.download=false",
                 "--trainer.enable_progress_bar=false"]) == 2
    assert "train-images-idx3-ubyte.gz" in error_line(capsys)
    assert gz.read_bytes() == before


class BlowUpInEpoch1(Callback):
    """Turns the learning rate absurd in the second epoch, so the loss becomes NaN/Inf there."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e30


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(run_dir, capsys, monkeypatch):
    import fashion_mnist_lightning.cli as cli

    original = cli.FashionMNISTCLI._instantiate_trainer
    monkeypatch.setattr(cli.FashionMNISTCLI, "_instantiate_trainer",
                        lambda self, config, callbacks: original(self, config, [*callbacks, BlowUpInEpoch1()]))
    assert run_dir("fit", "--config", FAST, "--trainer.max_epochs=3") == 1
    line = error_line(capsys)
    assert "training loss is" in line and "at global step" in line and ("nan" in line or "inf" in line)
    step = int(line.split("at global step ")[1].split()[0])
    assert 30 < step < 60  # in epoch 1, after the blow-up
    last = torch.load(run_dir.path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 30 and all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_unwritable_data_dir_through_the_cli_is_one_line(tmp_path, capsys, synthetic_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", synthetic_dir)  # the raw files are found there ...
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # ... but the cache cannot be written below a file, not even by root
    assert main(["fit", "--config", FAST, f"--data.data_dir={blocker / 'data'}", "--data.download=false",
                 "--trainer.enable_progress_bar=false"]) == 2
    assert "cannot write the data cache" in error_line(capsys) and blocker.read_text() == "x"
