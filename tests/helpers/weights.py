"""Pretrained weights as the tests' users have them, written by the tests: a timm model's weights file, and a
Hugging Face cache holding a hub model's weights as a first online run leaves it (read with the hub offline)."""

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

TINY = "test_resnet"  # timm's own test model: a ResNet of 0.37 M parameters, with hub weights (r160_in1k)


def timm_weights(path: Path, name: str = TINY, seed: int = 1) -> dict[str, torch.Tensor]:
    """A timm model's ImageNet-shaped state dict (3 channels, 1000 classes), written to ``path``."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(name, num_classes=1000).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def hub_cache(home: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    """A Hugging Face cache in ``home`` (HF_HOME) holding ``repo``'s model.safetensors, as a download leaves it."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    save_file(state, str(folder / "snapshots" / revision / "model.safetensors"))


def offline_hub(home: Path, name: str) -> dict[str, str]:
    """A Hugging Face cache in ``home`` with timm's ``name`` weights (random ones: their values are not the point),
    and the environment that makes the hub offline: a recipe's weights: hub, run as on a machine without a
    network that ran it once online."""
    model = timm.create_model(name, pretrained=False)
    hub_cache(home, model.pretrained_cfg["hf_hub_id"], {k: v.contiguous() for k, v in model.state_dict().items()})
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
