"""Fine-tuning as users run it: the freeze -> unfreeze schedule (finetune.FreezeBackbone) with the backbone at its own
learning rate under OneCycleLR, resumed bit-identically from mid-freeze, the unfreeze epoch and after it (a real
SIGTERM, the template's own checkpoint-on-signal), under DDP; and "pretrain on Fashion-MNIST, fine-tune on my
photos" from a template checkpoint (model.init_weights best)."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, Workspace, epoch_scalars, same_weights, weights
from helpers.photos import write_photo_folder
from helpers.weights import TINY, timm_weights

# default.yaml (AdamW + OneCycleLR, flips, flip TTA) with a timm backbone from a weights file, the head alone for the
# first epoch, then the backbone at a tenth of the head's learning rate
FINETUNE = (
    "fashion-mnist fit --config configs/default.yaml --model.network fashion_mnist_lightning.backbones.Pretrained "
    f"--model.network.init_args.name {TINY} --model.network.init_args.weights backbone.safetensors "
    "--model.backbone_lr_scale 0.1 --trainer.callbacks+=fashion_mnist_lightning.finetune.FreezeBackbone "
    "--trainer.max_epochs=3 --trainer.limit_train_batches=6 --trainer.limit_val_batches=1"
)
STOP_AT = """trainer:
  callbacks+:
    - class_path: faults.SignalAt  # tests/helpers/faults.py, copied beside the run: the command still forks
      init_args:
        step: {step}
"""


@pytest.fixture(scope="module")
def straight(tmp_path_factory, real_data_dir) -> Path:
    """The uninterrupted fine-tuning run (3 epochs of 6 steps, the first frozen): its folder."""
    workspace = Workspace(tmp_path_factory.mktemp("finetune-straight"))
    timm_weights(workspace.path / "backbone.safetensors")
    workspace.run(FINETUNE)
    return workspace.runs()[0]


def test_the_head_alone_then_the_whole_network_with_the_backbone_at_its_own_learning_rate(straight):
    checkpoint = torch.load(straight / "checkpoints/last.ckpt", weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    # test_resnet's convolutions have no biases: its backbone is kernels and BatchNorm parameters
    assert [g["name"] for g in groups] == ["head_weights", "head_biases", "backbone_weights", "backbone_norms"]
    peaks = {g["name"]: g["max_lr"] for g in groups}
    assert peaks["backbone_weights"] == pytest.approx(0.1 * peaks["head_weights"])
    assert checkpoint["callbacks"]["FreezeBackbone"] == {"epochs": 1, "frozen": False}
    assert "epoch 1: the backbone thaws" in (straight.parent.parent / "command-1.log").read_text()


@pytest.mark.parametrize("step", [3, 6, 9], ids=["mid-freeze", "at-the-unfreeze", "after-it"])
def test_a_sigterm_anywhere_in_the_schedule_resumes_bit_identically(straight, workspace, step):
    timm_weights(workspace.path / "backbone.safetensors")
    shutil.copy(ROOT / "tests/helpers/faults.py", workspace.path)
    (workspace.path / "stop.yaml").write_text(STOP_AT.format(step=step))
    stopped = workspace.run(f"{FINETUNE} --config stop.yaml", expect=128 + 15)
    assert "SIGTERM received" in stopped.lines("stopped:")[0]
    run = workspace.runs()[0]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step
    (workspace.path / "backbone.safetensors").unlink()  # a resume starts from its checkpoint, not the weights file
    workspace.run(f"{FINETUNE} --ckpt_path last")
    assert same_weights(weights(straight / "checkpoints/last.ckpt"), weights(run / "checkpoints/last.ckpt"))
    assert epoch_scalars(straight) == epoch_scalars(run)


@pytest.mark.slow
def test_under_ddp_two_processes_follow_one_and_ddp_without_unused_parameters_is_one_line(workspace, tmp_path):
    # a GroupNorm backbone: BatchNorm's statistics are per process once it thaws; the rest as tests/test_ddp.py
    timm_weights(workspace.path / "backbone.safetensors", name="test_efficientnet_gn")
    recipe = FINETUNE.replace(f"name {TINY}", "name test_efficientnet_gn") + " --trainer.max_epochs=2"
    same = "--model.channels_last=false --data.hflip=false --model.scheduler.init_args.max_lr=0.006"
    env = {"OMP_NUM_THREADS": "1"}
    workspace.run(f"{recipe} {same} --trainer.accelerator=cpu --trainer.devices=1", env=env)
    shutil.move(workspace.path / "lightning_logs", tmp_path / "one")
    ddp = (
        "--trainer.accelerator=cpu --trainer.devices=2 --trainer.strategy=lightning.pytorch.strategies.DDPStrategy "
        "--trainer.strategy.init_args.process_group_backend=gloo --data.batch_size=128"
    )
    refused = workspace.run(f"{recipe} {same} {ddp}", env=env, expect=2, timeout=300)
    assert "find_unused_parameters=true" in refused.error
    assert not (workspace.path / "lightning_logs").exists() or not workspace.runs()
    workspace.run(
        f"{recipe} {same} {ddp} --trainer.strategy.init_args.find_unused_parameters=true", env=env, timeout=300
    )
    one = weights(tmp_path / "one/version_0/checkpoints/last.ckpt")
    two = weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    trained = [k for k in one if k.startswith("network.")]
    worst = max((one[k] - two[k]).abs().max().item() for k in trained)
    assert worst <= 1e-4, f"DDP and 1-process weights differ by {worst:.2e}"


def test_pretrain_on_fashion_mnist_then_fine_tune_on_photos_from_the_best_checkpoint(workspace):
    workspace.run(
        "fashion-mnist fit --config configs/default.yaml --trainer.max_epochs=1 --trainer.limit_train_batches=10 "
        "--trainer.limit_val_batches=1"
    )
    best = next((workspace.runs()[0] / "checkpoints").glob("epoch*.ckpt"))
    pretrained = weights(best)
    write_photo_folder(workspace.path / "photos", per_class=12, size=(28, 28))
    result = workspace.run(
        "fashion-mnist fit --config configs/folder.yaml --data.root photos --data.image_size 28 "
        "--data.cache_dir cache --model.network fashion_mnist_lightning.network.SeedCNN --model.init_weights best "
        "--trainer.callbacks+=fashion_mnist_lightning.finetune.FreezeBackbone --trainer.max_epochs=1"
    )
    assert "starting from the weights of" in result.output and "out.weight, out.bias new" in result.output
    tuned = workspace.runs()[1]
    recorded = yaml.safe_load((tuned / "config.yaml").read_text())["model"]["init_weights"]
    assert Path(recorded).name == best.name  # the file it started from, by path: the run can be repeated
    after = weights(tuned / "checkpoints/last.ckpt")
    assert after["network.out.weight"].shape == (3, 60)  # the photos' 3 classes, a new head
    frozen = ("network.conv2.weight", "network.fc1.weight", "network.fc2.bias")  # the backbone, frozen for the epoch
    assert all(torch.equal(after[k], pretrained[k]) for k in frozen)
    assert torch.allclose(after["network.conv1.weight"], pretrained["network.conv1.weight"].repeat(1, 3, 1, 1) / 3)
