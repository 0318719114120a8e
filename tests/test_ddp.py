"""DDP on CPU (configs/ddp_cpu.yaml, 2 processes, gloo) as the README runs it, progress bar on: it finishes, it
follows the 1-process run, a stuck peer ends in an error after the collective timeout, and signals stop both
processes at the same batch with a checkpoint that resumes. Real processes, real signals."""

import os
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import (
    FASHION_MNIST,
    ROOT,
    epoch_scalars,
    finish,
    free_port,
    precision_fix,
    progress,
    same_weights,
    wait_for,
    weights,
)

DDP = "fashion-mnist fit --config configs/ddp_cpu.yaml"
ENV = {"OMP_NUM_THREADS": "1"}  # the README's line: one intra-op thread per process on 2 cores
SHORT = "--trainer.max_epochs=1 --trainer.limit_train_batches=20 --trainer.limit_val_batches=2"
# In both runs: channels_last off (NHWC kernels sum a 128-image half-batch in another order than the 256-image
# batch, which alone moves the weights by about 1.2e-5 after 20 steps), no random flips (each process draws its
# own for its half-batch, one process draws them for the whole batch), and the previous default's peak lr 0.006:
# Adam's normalised steps scale the rounding differences of the two ways of averaging a gradient with the lr
# (at the default's 0.0172 the weights ended 9.1e-4 apart, at 0.006 within 1e-5 on an AVX-512 CPU and 3.6e-5 on an
# AVX2-only one, whose kernels round differently: hence 1e-4); the test is about DDP's averaging
COMPARABLE = "--model.channels_last=false --data.hflip=false --model.scheduler.init_args.max_lr=0.006"
pytestmark = pytest.mark.slow


def test_the_readme_ddp_line_finishes_and_follows_the_one_process_run(workspace, tmp_path):
    result = workspace.run(f"{DDP} {SHORT} {COMPARABLE} --test_after_fit true", env=ENV, timeout=300)
    assert "Epoch 0: 100%" in result.output  # the progress bar was on
    [ddp] = workspace.runs()  # only rank 0 wrote: one run folder
    assert (ddp / "checkpoints/last.ckpt").is_file() and (ddp / "confusion_matrix_test.png").is_file()
    (workspace.path / "lightning_logs").rename(tmp_path / "ddp")
    one = one_process_weights(workspace)
    assert worst_difference(weights(tmp_path / "ddp/version_0/checkpoints/last.ckpt"), one) <= 1e-4

    # the test accuracy rank 0 logged (synced over both shards) = an evaluation of the checkpoint on one process
    events = EventAccumulator(str(tmp_path / "ddp/version_0"), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("test/acc")[-1].value
    best = next((tmp_path / "ddp/version_0/checkpoints").glob("epoch*.ckpt"))
    workspace.run(
        f"fashion-mnist test --config configs/default.yaml --trainer.accelerator=cpu --trainer.devices=1 "
        f"--ckpt_path {best}",
        env=ENV,
    )
    evaluated = EventAccumulator(str(next(best.parent.parent.glob("evaluations/test_*"))), size_guidance={"scalars": 0})
    evaluated.Reload()
    assert abs(logged - evaluated.Scalars("test/acc")[-1].value) < 1e-6


def one_process_weights(workspace) -> dict:
    """The weights of the same short run on one process (batch 256): what DDP's averaging must follow."""
    workspace.run(
        f"fashion-mnist fit --config configs/default.yaml --trainer.accelerator=cpu --trainer.devices=1 "
        f"{SHORT} {COMPARABLE}",
        env=ENV,
    )
    return weights(workspace.runs()[0] / "checkpoints/last.ckpt")


def worst_difference(a: dict, b: dict) -> float:
    """The largest difference between two checkpoints' network weights."""
    return max((a[k] - b[k]).abs().max().item() for k in a if k.startswith("network."))


def test_two_nodes_by_torchrun_on_loopback_follow_the_one_process_run(workspace, tmp_path):
    # README "Several nodes": each node runs the same torchrun line with its own --node-rank; here 2 processes on
    # this machine are the 2 nodes (1 process each), meeting at 127.0.0.1, against the same 1-process run as above
    port = free_port()
    nodes = [
        workspace.start(
            [
                str(FASHION_MNIST.with_name("torchrun")),
                *f"--nnodes 2 --nproc-per-node 1 --node-rank {rank} "
                f"--master-addr 127.0.0.1 --master-port {port} -m fashion_mnist_lightning.cli fit --config "
                f"configs/ddp_cpu.yaml --trainer.num_nodes 2 --trainer.devices 1 {SHORT} {COMPARABLE}".split(),
            ],
            env=ENV,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    for process, log in nodes:
        assert finish(process, log, timeout=300).returncode == 0, log.read_text()[-3000:]
    [two_nodes] = workspace.runs()  # node 0's rank 0 wrote; node 1 wrote nothing
    assert "Epoch 0: 100%" in nodes[0][1].read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in nodes[1][1].read_text()  # node 1's process was the second of two
    (workspace.path / "lightning_logs").rename(tmp_path / "nodes")
    one = one_process_weights(workspace)
    assert worst_difference(weights(tmp_path / "nodes/version_0/checkpoints/last.ckpt"), one) <= 1e-4


def test_any_config_plus_the_readme_ddp_flags_runs_the_strong_recipe_with_its_weight_averaging(workspace):
    # The README's "any config plus --trainer.devices N --trainer.strategy ddp", on strong.yaml: its Lookahead
    # keeps an average of the network (once a deep copy of the whole LightningModule, whose CLI-made optimizer
    # factory held the LightningCLI and, under DDP, its process group: a crash before the first step). The optional
    # FreezeWhiteningBias stands aside under DDP (DDP wants every gradient).
    workspace.run(
        "fashion-mnist fit --config configs/strong.yaml --model.network.init_args.widths=[8,16,16] "
        "--trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp "
        "--trainer.callbacks+=fashion_mnist_lightning.speedrun.FreezeWhiteningBias "
        "--trainer.max_epochs=1 --trainer.limit_train_batches=24 --trainer.limit_val_batches=2 "
        "--trainer.check_val_every_n_epoch=1 --test_after_fit true --trainer.limit_test_batches=2 "
        + " ".join(precision_fix("strong")),
        env=ENV,
        timeout=300,
    )
    [run] = workspace.runs()
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert saved["lookahead"]["average"]["n_averaged"] > 0 and (run / "confusion_matrix_test.png").is_file()
    assert any(g.get("muon") for g in saved["optimizer_states"][0]["param_groups"])  # its MuonSGD, under DDP
    assert saved["hyper_parameters"]["tta_below"] < 1  # and its selective test-time views, in the test after fit


def test_a_stuck_peer_ends_in_an_error_after_the_collective_timeout(workspace):
    env = {**ENV, "PYTHONPATH": str(ROOT / "tests" / "helpers")}
    # the timeout bounds the rendezvous too: rank 0 waits there for rank 1, which it starts, ~10 s of imports on a
    # loaded 2-core machine (at 10 s that wait itself timed out once)
    result = workspace.run(
        f"{DDP} {SHORT} --trainer.strategy.init_args.timeout=0:00:30 --trainer.callbacks+=faults.HangOnRank",
        env=env,
        timeout=150,
        expect=1,
    )
    assert "DDP:" in result.error and "--trainer.strategy.init_args.timeout" in result.error


@pytest.mark.parametrize("how", ["SIGTERM to rank 0", "SIGINT to the process group (Ctrl-C)"])
def test_a_signal_stops_both_processes_at_one_batch_and_the_resume_finishes(workspace, tmp_path, how):
    long = "--trainer.max_epochs=1 --trainer.limit_train_batches=150 --trainer.limit_val_batches=2"
    workspace.run(f"{DDP} {long}", env=ENV, timeout=300)
    straight = weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    (workspace.path / "lightning_logs").rename(tmp_path / "straight")

    process, log = workspace.start(f"{DDP} {long}", env=ENV)
    wait_for(lambda: progress(log, 0) >= 50, 240, "batch 50", process)
    if how.startswith("SIGTERM"):
        os.kill(process.pid, signal.SIGTERM)
        expected = 128 + signal.SIGTERM
    else:
        os.killpg(process.pid, signal.SIGINT)
        expected = 128 + signal.SIGINT
    result = finish(process, log, timeout=180)
    assert result.returncode == expected, result.output[-2000:]
    [stopped] = result.lines("stopped:")  # one line, not one per process
    assert "--ckpt_path last" in stopped
    run = workspace.runs()[0]
    done = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 50 <= done < 150, done

    workspace.run(f"{DDP} {long} --ckpt_path last", env=ENV, timeout=300)
    assert same_weights(straight, weights(run / "checkpoints/last.ckpt"))
    # each process continued its own running train/acc and loss (runs/rank_states.py), not rank 0's twice
    assert epoch_scalars(tmp_path / "straight/version_0") == epoch_scalars(run)
