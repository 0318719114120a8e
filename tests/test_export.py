"""`fashion-mnist export`: every format gives torch's outputs on real test images (VGGNet's BatchNorm and dropout
in eval mode included, at batch 1 and 1000), one self-contained file each, and nothing is ever clobbered."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Workspace, last_checkpoint_of
from fashion_mnist_lightning.data.files import load_cache
from fashion_mnist_lightning.extras.export import FORMATS, load_network


@pytest.fixture(scope="module")
def images(real_data_dir) -> torch.Tensor:
    return load_cache(real_data_dir)["test_images"][:1000].unsqueeze(1).float() / 255  # (1000, 1, 28, 28)


@pytest.fixture
def tool(tmp_path, real_data_dir) -> Workspace:
    return Workspace(tmp_path)


def export(tool: Workspace, checkpoint, fmt: str, name: str | None = None) -> Path:
    output = tool.path / (name or f"model{FORMATS[fmt]}")
    tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --format {fmt} --output {output}")
    assert sorted(p.name for p in output.parent.iterdir() if p.name.startswith(output.name)) == [output.name]
    return output


def run_format(fmt: str, path, images: torch.Tensor) -> np.ndarray:
    """Logits of the exported file, loaded the way its users load it."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images.numpy()})[0]
    with torch.inference_mode():
        if fmt == "pt2":
            return torch.export.load(str(path)).module()(images).numpy()
        if fmt == "torchscript":
            return torch.jit.load(str(path))(images).numpy()
    raise ValueError(fmt)


@pytest.fixture(scope="module")
def trained_pretrained(tmp_path_factory, real_data_dir) -> Path:
    """A short run of a timm backbone (backbones.Pretrained, timm's test ResNet, random init): its last checkpoint."""
    return last_checkpoint_of(
        tmp_path_factory,
        "trained-pretrained",
        "fashion-mnist fit --config configs/default.yaml --model.network fashion_mnist_lightning.backbones.Pretrained "
        "--model.network.init_args.name test_resnet --model.network.init_args.weights null --trainer.max_epochs=1 "
        "--trainer.limit_train_batches=5 --trainer.limit_val_batches=1",
    )


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
@pytest.mark.parametrize("which", ["SeedCNN", "VGGNet", "AirNet", "Pretrained"])
def test_every_program_format_equals_torch_at_batch_1_and_1000(tool, request, images, fmt, which):
    fixture = {"SeedCNN": "trained", "VGGNet": "trained_vgg", "AirNet": "trained_airnet"}.get(which)
    fixture = fixture or f"trained_{which.lower()}"
    checkpoint = request.getfixturevalue(fixture)
    checkpoint = checkpoint / "checkpoints/last.ckpt" if checkpoint.is_dir() else checkpoint
    path = export(tool, checkpoint, fmt)
    network = load_network(checkpoint)
    assert type(network).__name__ == which
    for batch in (images[:1], images):
        with torch.inference_mode():
            expected = network(batch).numpy()
        logits = run_format(fmt, path, batch)
        assert logits.shape == (len(batch), 10) and np.abs(logits - expected).max() <= 1e-5


USER_NETWORK = '''import torch
from torch import nn


class TinyNet(nn.Module):
    """A user's own network: its forward argument is called x, not images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.out = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x).amax(dim=(2, 3)))
'''


def test_a_users_network_exports_whatever_its_forward_argument_is_called(workspace, images, monkeypatch):
    (workspace.path / "my_net.py").write_text(USER_NETWORK)
    workspace.run(
        "fashion-mnist fit --config configs/default.yaml --model.network my_net.TinyNet --trainer.max_epochs=1 "
        "--trainer.limit_train_batches=3 --trainer.limit_val_batches=1"
    )
    checkpoint = workspace.runs()[0] / "checkpoints/last.ckpt"
    monkeypatch.syspath_prepend(str(workspace.path))  # my_net.py, as `fashion-mnist` finds it in its folder
    network = load_network(checkpoint)
    for fmt in ("onnx", "pt2", "torchscript"):
        path = export(workspace, checkpoint, fmt)
        with torch.inference_mode():
            expected = network(images[:7]).numpy()
        assert np.abs(run_format(fmt, path, images[:7]) - expected).max() <= 1e-5


def test_onnx_is_one_self_contained_file_that_works_when_copied_alone(tool, trained, images, tmp_path):
    path = export(tool, trained / "checkpoints/last.ckpt", "onnx")
    moved = tmp_path / "elsewhere" / "copy.onnx"
    moved.parent.mkdir()
    shutil.copy(path, moved)  # the .onnx alone: no .onnx.data beside it
    with torch.inference_mode():
        expected = load_network(trained / "checkpoints/last.ckpt")(images[:5]).numpy()
    assert np.abs(run_format("onnx", moved, images[:5]) - expected).max() <= 1e-5


def test_state_dict_and_safetensors_hold_the_weights_only(tool, trained, images):
    from safetensors.torch import load_file

    from fashion_mnist_lightning.network import SeedCNN

    expected = load_network(trained / "checkpoints/last.ckpt")(images)
    for state in (
        torch.load(export(tool, trained / "checkpoints/last.ckpt", "state_dict"), weights_only=True),
        load_file(export(tool, trained / "checkpoints/last.ckpt", "safetensors")),
    ):
        network = SeedCNN().eval()
        network.load_state_dict(state)
        assert torch.equal(network(images), expected)


def test_default_output_is_the_runs_export_folder(tool, trained):
    checkpoint = trained / "checkpoints/last.ckpt"
    tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --format pt2")
    assert (trained / "export/last.pt2").is_file()
    result = tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --format pt2", expect=2)
    assert "--overwrite" in result.error
    tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --format pt2 --overwrite")


def test_export_never_overwrites_and_bad_outputs_are_one_line(tool, trained):
    checkpoint = trained / "checkpoints/last.ckpt"
    mine = tool.path / "mine.onnx"
    mine.write_bytes(b"a user's file")
    assert (
        "--overwrite"
        in tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --format onnx --output {mine}", expect=2).error
    )
    assert mine.read_bytes() == b"a user's file"
    folder = tool.path / "a-folder"
    folder.mkdir()
    assert "is a folder" in tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --output {folder}", expect=2).error
    assert (
        "is a file, not a folder"
        in tool.run(f"fashion-mnist export --ckpt_path {checkpoint} --output {mine}/model.pt", expect=2).error
    )
    assert list(folder.iterdir()) == [] and mine.read_bytes() == b"a user's file"


def test_export_of_a_corrupt_checkpoint_is_one_line(tool):
    bad = tool.path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 10)
    result = tool.run(f"fashion-mnist export --ckpt_path {bad} --output {tool.path / 'out.pt'}", expect=2)
    assert "not a readable checkpoint" in result.error and not (tool.path / "out.pt").exists()
