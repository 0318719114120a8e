"""Resume and faults, with real processes and real signals: exact resume (weights, RNG, position, running
metrics), extending a finished run, atomic checkpoints under kill -9 and a full disk, a NaN loss."""

import itertools
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, epoch_scalars, finish, progress, same_weights, wait_for, weights
from fashion_mnist_lightning.extras.report import read_curves
from fashion_mnist_lightning.runs.checkpoint_io import AtomicCheckpointIO

FAST = "fashion-mnist fit --config configs/fast.yaml"
RANDOM = "--data.crop_padding=2 --data.hflip=true"  # augmentation draws from the RNG every step
ALTERNATE = "--data.crop_padding=2 --data.hflip=alternate"  # the flip follows the epoch: epoch 1 mirrors every image
LONG = "--trainer.limit_train_batches=120"  # long enough to land a signal mid-epoch


def test_resume_from_an_end_of_epoch_checkpoint_with_random_augmentation_is_bit_identical(workspace, tmp_path):
    workspace.run(f"{FAST} {RANDOM} --trainer.max_epochs=2")
    straight = workspace.runs()[0]
    shutil.move(straight, tmp_path / "straight")
    workspace.run(f"{FAST} {RANDOM} --trainer.max_epochs=1")
    checkpoint = torch.load(workspace.runs()[0] / "checkpoints/last.ckpt", weights_only=True)
    assert {"torch", "numpy", "python"} <= checkpoint["callbacks"]["RNGStates"].keys()
    workspace.run(f"{FAST} {RANDOM} --trainer.max_epochs=2 --ckpt_path last")
    assert same_weights(
        weights(tmp_path / "straight/checkpoints/last.ckpt"), weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    )
    assert epoch_scalars(tmp_path / "straight") == epoch_scalars(workspace.runs()[0])
    report = workspace.run("fashion-mnist report --ckpt_path last")  # one graph in the run, however many resumes
    assert "more than one graph event" not in report.output.lower()
    assert epoch_scalars(workspace.runs()[0])["val/acc"] == [v for _, v in read_curves(workspace.runs()[0])["val/acc"]]


@pytest.mark.parametrize("signum, augment", [(signal.SIGTERM, RANDOM), (signal.SIGINT, ALTERNATE)])
def test_a_signal_mid_epoch_checkpoints_and_the_resume_ends_identically_curves_included(
    workspace, tmp_path, signum, augment
):
    workspace.run(f"{FAST} {augment} {LONG} --trainer.max_epochs=2")
    shutil.move(workspace.runs()[0], tmp_path / "straight")

    process, log = workspace.start(f"{FAST} {augment} {LONG} --trainer.max_epochs=2")
    wait_for(lambda: progress(log, 0) >= 20, 180, "batch 20 of epoch 0", process)
    process.send_signal(signum)
    result = finish(process, log)
    assert result.returncode == 128 + signum, result.output[-2000:]
    [line] = result.lines("stopped:")
    assert f"{signal.Signals(signum).name} received" in line and "--ckpt_path last" in line
    run = workspace.runs()[0]
    done = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 20 <= done < 120, done  # stopped inside epoch 0

    resumed = workspace.run(f"{FAST} {augment} {LONG} --trainer.max_epochs=2 --ckpt_path last")
    assert "unreliable results" not in resumed.output  # Lightning's warning does not apply: the resume is exact
    assert [p.name for p in workspace.runs()] == ["version_0"]
    assert same_weights(weights(tmp_path / "straight/checkpoints/last.ckpt"), weights(run / "checkpoints/last.ckpt"))
    # the interrupted epoch's train/acc and train/loss_epoch cover all its batches, as in the straight run
    assert epoch_scalars(tmp_path / "straight") == epoch_scalars(run)


def test_a_sigterm_before_training_begins_is_a_clean_stop_in_one_line(workspace):
    # a Slurm requeue or preemption can come at any moment, set-up included: exit 143, one line, no traceback
    env = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    process, log = workspace.start(f"{FAST} --trainer.callbacks+=faults.StallSetup", env=env)
    wait_for(lambda: "stalling in setup" in log.read_text(), 120, "the set-up", process)
    process.send_signal(signal.SIGTERM)
    result = finish(process, log, timeout=60)
    assert result.returncode == 128 + signal.SIGTERM, result.output[-2000:]
    [line] = result.lines("stopped:")
    assert "outside the training loop: nothing new was saved" in line
    assert not list(workspace.path.rglob("*.ckpt"))


def test_extending_a_finished_run_with_a_run_length_schedule_is_refused_in_one_line(workspace):
    workspace.run(
        "fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=1 "
        "--trainer.limit_train_batches=10 --trainer.limit_val_batches=1"
    )
    run = workspace.runs()[0]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = workspace.run(
        "fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=2 "
        "--trainer.limit_train_batches=10 --trainer.limit_val_batches=1 --ckpt_path last",
        expect=2,
    )
    assert "OneCycleLR schedule was built for 10 steps" in result.error and "max_epochs" in result.error
    assert f"--config {run.resolve()}/config.yaml" in result.error  # the run's own recipe, ready to paste
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing of the run was touched (config.yaml included)


def test_resuming_with_another_recipe_is_refused_in_one_line_and_the_named_fix_continues_the_run(workspace):
    # A seed.yaml run resumed with default.yaml (what `make train RESUME=1` runs): Adam's state and the weights
    # from one recipe, batch size and flips from another, and the run's config.yaml overwritten with the mix.
    limits = "--trainer.limit_train_batches=10 --trainer.limit_val_batches=1"
    workspace.run(f"fashion-mnist fit --config configs/seed.yaml {limits}")
    run = workspace.runs()[0]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = workspace.run(
        f"fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=2 {limits} --ckpt_path last", expect=2
    )
    [line] = result.error.strip().splitlines()
    assert "was trained with" in line and f"--config {run.resolve()}/config.yaml" in line, line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing of the run touched

    workspace.run(f"fashion-mnist fit --config {run}/config.yaml --trainer.max_epochs=2 --ckpt_path last")
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 1  # the second epoch done


def test_extending_a_run_without_a_length_bound_schedule_continues_exactly(workspace, tmp_path):
    """seed.yaml has no schedule: 1 epoch + 1 more equals 2 epochs straight."""
    limits = "--trainer.limit_train_batches=10 --trainer.limit_val_batches=1"
    workspace.run(f"fashion-mnist fit --config configs/seed.yaml --trainer.max_epochs=2 {limits}")
    shutil.move(workspace.runs()[0], tmp_path / "straight")
    workspace.run(f"fashion-mnist fit --config configs/seed.yaml {limits}")
    workspace.run(f"fashion-mnist fit --config configs/seed.yaml --trainer.max_epochs=2 {limits} --ckpt_path last")
    assert same_weights(
        weights(tmp_path / "straight/checkpoints/last.ckpt"), weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    )


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(workspace):
    """A schedule that multiplies the learning rate by 1e15 after epoch 0 makes the loss blow up in epoch 1:
    exit 1, one line naming the step, and epoch 0's checkpoints stay finite."""
    schedule = (
        "--model.scheduler=torch.optim.lr_scheduler.StepLR --model.scheduler.init_args.step_size=12 "
        "--model.scheduler.init_args.gamma=1e15"
    )
    result = workspace.run(f"{FAST} --trainer.max_epochs=3 --trainer.limit_train_batches=12 {schedule}", expect=1)
    line = result.error
    assert "training loss is" in line and ("nan" in line or "inf" in line)
    step = int(line.split("at global step ")[1].split()[0])
    assert 12 <= step < 24  # in epoch 1, after the blow-up
    last = torch.load(workspace.runs()[0] / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 12
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def write_forever(path: Path, saved: int) -> None:
    """A forked child: save checkpoints to ``path`` step after step, one byte on ``saved`` after each save."""
    torch.set_num_threads(1)  # forked from a process that may have used OpenMP: no thread pool in the child
    io = AtomicCheckpointIO()
    start = torch.load(path, weights_only=True)["step"] + 1 if path.exists() else 0
    for step in itertools.count(start):
        io.save_checkpoint({"step": step, "weights": torch.full((2_000_000,), float(step))}, path)
        os.write(saved, b"s")


def test_kill_9_while_writing_leaves_a_complete_checkpoint(tmp_path):
    """Real processes, real SIGKILLs: forked from this one (already past its imports), so 20+ writers start at once
    instead of paying ~4 s of imports each."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    steps, mid_write = [], 0
    fork = multiprocessing.get_context("fork")
    for attempt in range(60):  # at least 20 kills, more until 5 landed inside a write (write times vary with load)
        if attempt >= 20 and mid_write >= 5:
            break
        saved, done = os.pipe()
        writer = fork.Process(target=write_forever, args=(path, done))
        writer.start()
        os.close(done)
        assert os.read(saved, 1) == b"s"  # one save done: the next one is under way
        time.sleep(0.003 * (attempt % 20))  # land at different moments of a write (~20-40 ms each)
        writer.kill()  # SIGKILL: no handler, no cleanup
        writer.join()
        os.close(saved)
        assert writer.exitcode == -signal.SIGKILL
        mid_write += any(p.name.startswith(".tmp-") for p in path.parent.iterdir())  # killed inside a write
        checkpoint = torch.load(path, weights_only=True)  # must always load: the old or the new file
        assert torch.equal(checkpoint["weights"], torch.full((2_000_000,), float(checkpoint["step"])))
        steps.append(checkpoint["step"])
    assert mid_write >= 5, f"only {mid_write} of {len(steps)} kills landed inside a write"
    assert steps == sorted(steps) and steps[-1] > steps[0]  # the writers made progress; nothing went back
    AtomicCheckpointIO().save_checkpoint({"step": -1}, path)  # the next save sweeps partial files
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1.4 MB file system (tmpfs, mode 1777) to fill up. Mounting needs root: CI runs as root; elsewhere
    passwordless sudo (GitHub's runners) does it, and without either the test is skipped."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    done = subprocess.run(
        [*sudo, "mount", "-t", "tmpfs", "-o", "size=1400k,mode=1777", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()[:100]}); CI runs as root")
    yield mount
    subprocess.run([*sudo, "umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_up_during_a_checkpoint_save_is_one_line_and_keeps_the_earlier_checkpoint(
    workspace, small_disk
):
    """A fast.yaml checkpoint is ~0.43 MB and an epoch adds ~0.16 MB of events: epoch 0 fits in 1.4 MB, the
    next checkpoint save (a new file beside the old one) does not."""
    result = workspace.run(
        f"{FAST} --trainer.max_epochs=4 --trainer.limit_train_batches=5 "
        f"--trainer.logger.init_args.save_dir={small_disk}",
        expect=1,
    )
    assert "No space left on device" in result.error and "--ckpt_path last" in result.error
    assert str(small_disk) in result.error  # names the file it could not write
    last = small_disk / "lightning_logs/version_0/checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=True)  # the earlier checkpoint is complete
    assert checkpoint["global_step"] >= 5
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".tmp-")]  # no partial file left
