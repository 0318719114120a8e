"""configs/strong.yaml at toy size: the VGG network trains (well above chance) and repeats exactly with its seed."""

from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_mnist_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs/strong.yaml"), "--model.network.init_args.width=8", "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=40", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false"]


def test_strong_config_trains_and_repeats_exactly(tmp_path, monkeypatch, real_data_dir):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["fit", *TINY, f"--data.data_dir={real_data_dir}"]) == 0
    runs = [tmp_path / "lightning_logs" / f"version_{i}" for i in (0, 1)]
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("val/acc")[-1].value > 0.5  # chance is 0.1; 40 steps of a width-8 net
    a, b = (torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"] for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic: true, same seed -> same weights
