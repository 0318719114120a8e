"""configs/strong.yaml at toy size, as users run it: AirNet with its callbacks (whitening from data, a whitening
bias that freezes early, lookahead) trains well above chance, repeats exactly with its seed, and a run stopped by a
signal mid-epoch, after the lookahead has started and the bias has frozen, resumes to the bit-identical end (live
weights, averaged weights, optimizer: Muon's momentum for the filters and SGD's for the rest)."""

import shutil
import signal

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import finish, precision_fix, progress, same_weights, wait_for, weights
from fashion_mnist_lightning.network import AirNet
from fashion_mnist_lightning.speedrun import FreezeWhiteningBias

TINY = (
    "fashion-mnist fit --config configs/strong.yaml --model.network.init_args.widths=[8,16,16] "
    "--trainer.limit_train_batches=40 --trainer.limit_val_batches=1 --trainer.check_val_every_n_epoch=1 "
    + " ".join(precision_fix("strong"))  # what the run's note says on a CPU that emulates bf16 (9x slower there)
)


def states(checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor a resume restores: averaged weights (state_dict), live weights, averaging and optimizer state."""
    saved = torch.load(checkpoint, weights_only=True)
    optimizer = saved["optimizer_states"][0]["state"]
    momenta = {f"momentum.{k}": v["momentum_buffer"] for k, v in optimizer.items()}
    lookahead = saved["lookahead"]
    live = {f"live.{k}": v for k, v in lookahead["live"].items()}
    average = {f"average.{k}": v for k, v in lookahead["average"].items()}
    return {**saved["state_dict"], **live, **average, **momenta}


@pytest.mark.slow
def test_strong_config_trains_and_repeats_exactly(workspace):
    for _ in range(2):
        workspace.run(f"{TINY} --trainer.max_epochs=1")
    first, second = workspace.runs()
    events = EventAccumulator(str(first), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("val/acc")[-1].value > 0.5  # chance is 0.1; 40 steps of a tiny AirNet
    assert same_weights(weights(first / "checkpoints/last.ckpt"), weights(second / "checkpoints/last.ckpt"))
    whiten = weights(first / "checkpoints/last.ckpt")["network.whiten.weight"]  # (8, 1, 2, 2) from the data
    assert torch.allclose(whiten[:4], -whiten[4:]) and whiten.abs().max() > 1


@pytest.mark.slow
def test_a_strong_run_stopped_mid_epoch_during_lookahead_resumes_bit_identically(workspace, tmp_path):
    workspace.run(f"{TINY} --trainer.max_epochs=2")
    shutil.move(workspace.runs()[0], tmp_path / "straight")

    process, log = workspace.start(f"{TINY} --trainer.max_epochs=2 --progress_refresh_rate=4")  # see the batch
    wait_for(lambda: progress(log, 1) >= 12, 300, "batch 12 of epoch 1", process)  # lookahead starts at step 20
    process.send_signal(signal.SIGTERM)
    result = finish(process, log)
    assert result.returncode == 128 + signal.SIGTERM, result.output[-2000:]
    run = workspace.runs()[0]
    stopped = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert 50 <= stopped["global_step"] < 80 and stopped["lookahead"]["average"]["n_averaged"] > 0
    [muon] = [g for g in stopped["optimizer_states"][0]["param_groups"] if g.get("muon")]  # MuonSGD's filters
    assert all("momentum_buffer" in stopped["optimizer_states"][0]["state"][i] for i in muon["params"])

    workspace.run(f"{TINY} --trainer.max_epochs=2 --ckpt_path last")
    assert same_weights(states(tmp_path / "straight/checkpoints/last.ckpt"), states(run / "checkpoints/last.ckpt"))


class Recorder(L.LightningModule):
    """A tiny AirNet on random images that records its whitening bias and first conv's weights before each step."""

    def __init__(self):
        super().__init__()
        self.network = AirNet((8, 16, 16))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        first_conv = next(p for p in self.network.groups.parameters() if p.ndim == 4)
        self.seen.append((self.network.whiten.bias.detach().clone(), first_conv.detach().clone()))
        images = torch.rand(16, 1, 28, 28)  # (N, 1, 28, 28)
        return F.cross_entropy(self.network(images), torch.randint(0, 10, (16,)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(8), batch_size=1)


def test_the_whitening_bias_learns_for_the_first_part_of_the_run_then_stays_put():
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=2, callbacks=[FreezeWhiteningBias(until=0.25)], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module)
    biases, convs = zip(*module.seen)  # before steps 0..15; the bias learns in steps 0-3 (a quarter of 16)
    assert all(not torch.equal(a, b) for a, b in zip(biases[:4], biases[1:5]))
    assert all(torch.equal(biases[4], b) for b in biases[5:])  # momentum included: a frozen bias is left alone
    assert all(not torch.equal(a, b) for a, b in zip(convs[4:], convs[5:]))  # the rest keeps learning
    assert not module.network.whiten.bias.requires_grad
