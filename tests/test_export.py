"""`fashion-mnist export`: every format gives torch's outputs on real test images, and files are never clobbered."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_mnist_lightning.cli import main
from fashion_mnist_lightning.data import load_cache
from fashion_mnist_lightning.export import load_network
from fashion_mnist_lightning.network import SeedCNN

ROOT = Path(__file__).resolve().parents[1]
FAST = str(ROOT / "configs" / "fast.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, real_data_dir) -> Path:
    folder = tmp_path_factory.mktemp("export-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["fit", "--config", FAST, "--trainer.enable_progress_bar=false",
                     f"--data.data_dir={real_data_dir}"]) == 0
    return folder / "lightning_logs/version_0/checkpoints/last.ckpt"


@pytest.fixture(scope="module")
def images(real_data_dir) -> torch.Tensor:
    return load_cache(real_data_dir)["test_images"][:1000].unsqueeze(1).float() / 255  # (1000, 1, 28, 28)


def exported(checkpoint: Path, fmt: str, tmp_path: Path) -> Path:
    output = tmp_path / f"model.{fmt}"
    assert main(["export", f"--ckpt_path={checkpoint}", f"--format={fmt}", f"--output={output}"]) == 0
    return output


def test_state_dict_and_safetensors_hold_the_weights_only(checkpoint, tmp_path, images):
    from safetensors.torch import load_file

    expected = load_network(checkpoint)(images)
    for state in (torch.load(exported(checkpoint, "state_dict", tmp_path), weights_only=True),
                  load_file(exported(checkpoint, "safetensors", tmp_path))):
        network = SeedCNN().eval()
        network.load_state_dict(state)
        assert torch.equal(network(images), expected)


def test_onnx_matches_torch_on_real_test_images(checkpoint, tmp_path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported(checkpoint, "onnx", tmp_path)),
                                           providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        expected = load_network(checkpoint)(images).numpy()
    assert logits.shape == (1000, 10) and np.abs(logits - expected).max() <= 1e-5


def test_torchscript_matches_torch_on_real_test_images(checkpoint, tmp_path, images):
    scripted = torch.jit.load(str(exported(checkpoint, "torchscript", tmp_path)))
    with torch.inference_mode():
        assert (scripted(images) - load_network(checkpoint)(images)).abs().max() <= 1e-5


def test_export_never_overwrites_without_asking(checkpoint, tmp_path, capsys):
    output = tmp_path / "mine.pt"
    output.write_bytes(b"a user's file")
    assert main(["export", f"--ckpt_path={checkpoint}", f"--output={output}"]) == 2
    assert "--overwrite" in capsys.readouterr().err and output.read_bytes() == b"a user's file"


def test_export_of_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 10)
    assert main(["export", f"--ckpt_path={bad}", f"--output={tmp_path / 'out.pt'}"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
