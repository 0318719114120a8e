"""DDP on CPU (configs/ddp_cpu.yaml, 2 processes, gloo) against one process with the same global batch and seed.

Runs as subprocesses: Lightning's DDP launcher starts the second process by re-running the command.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_mnist_lightning.data import FashionMNISTDataModule
from fashion_mnist_lightning.module import FashionMNISTClassifier

ROOT = Path(__file__).resolve().parents[1]
# channels_last off in both runs: NHWC kernels sum a 128-image half-batch in another order than the 256-image
# batch, which alone moves the weights by about 1.2e-5 after 20 steps; the test is about DDP, not memory format
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=20", "--trainer.limit_val_batches=2",
         "--trainer.enable_progress_bar=false", "--test_after_fit=true", "--model.channels_last=false"]


def fit(work: Path, real_data_dir: Path, *args: str) -> Path:
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "fashion_mnist_lightning.cli", "fit", *args, *SHORT,
                             f"--data.data_dir={real_data_dir}"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "lightning_logs"


def weights(runs: Path) -> dict:
    return torch.load(runs / "version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]


def test_two_process_ddp_follows_the_one_process_run(tmp_path, real_data_dir):
    ddp = fit(tmp_path / "ddp", real_data_dir, "--config", str(ROOT / "configs/ddp_cpu.yaml"))
    single = fit(tmp_path / "single", real_data_dir, "--config", str(ROOT / "configs/default.yaml"),
                 "--trainer.accelerator=cpu", "--trainer.devices=1")

    # only rank 0 wrote: one run folder
    assert [p.name for p in ddp.iterdir()] == ["version_0"]
    a, b = weights(ddp), weights(single)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, f"DDP and 1-process weights differ by {worst:.2e}"

    # the test accuracy rank 0 logged (synced over both shards) = an evaluation of the saved checkpoint
    events = EventAccumulator(str(ddp / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("test/acc")[-1].value
    best = next((ddp / "version_0/checkpoints").glob("epoch*.ckpt"))
    model = FashionMNISTClassifier.load_from_checkpoint(best, weights_only=True)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    datamodule = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False)
    evaluated = trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"]
    assert abs(logged - evaluated) < 1e-6
