"""A checkpoint back as a model (and its data set) for the tools (report, export, serve): float32, eval, CPU."""

import importlib
import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import instantiate_module

from fashion_mnist_lightning.datamodule import FashionMNISTDataModule
from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.runs.checkpoint_io import check_matches, read_checkpoint

FASHION_MNIST = f"{FashionMNISTDataModule.__module__}.{FashionMNISTDataModule.__name__}"


def load_classifier(path: str | os.PathLike) -> tuple[FashionMNISTClassifier, dict[str, Any]]:
    """The checkpoint's FashionMNISTClassifier (rebuilt from the hparams the CLI saved, network class, class names
    and image shape included) and the checkpoint dict itself. One-line CheckpointError for a missing, corrupt or
    mismatched file."""
    checkpoint = read_checkpoint(path)
    try:
        with warnings.catch_warnings():  # the saved network config is rebuilt into a module: that is the intent
            warnings.filterwarnings("ignore", message="Attribute 'network' is an instance of `nn.Module`")
            model = FashionMNISTClassifier.load_from_checkpoint(Path(path), map_location="cpu", weights_only=True)
    except RuntimeError:  # the weights do not fit the network the hparams describe: say which
        check_matches(path, checkpoint["state_dict"], FashionMNISTClassifier())
        raise
    return model.float().eval(), checkpoint


def datamodule_class(checkpoint: dict[str, Any]) -> type[L.LightningDataModule]:
    """The class of the DataModule the checkpoint was trained on (a checkpoint from before data sets were chosen by
    class path is Fashion-MNIST's)."""
    config = checkpoint.get("datamodule_hyper_parameters") or {}
    module, _, name = config.get("_class_path", FASHION_MNIST).rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_datamodule(checkpoint: dict[str, Any], **overrides: Any) -> L.LightningDataModule:
    """The DataModule the checkpoint was trained on, rebuilt from the hyper-parameters the CLI saved (its class path
    included). ``overrides`` replace init arguments the class has (e.g. data_dir); None values are ignored."""
    config = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    config.pop("_instantiator", None)
    config.setdefault("_class_path", FASHION_MNIST)
    accepted = inspect.signature(datamodule_class(checkpoint)).parameters
    config.update({k: v for k, v in overrides.items() if v is not None and k in accepted})
    return instantiate_module(L.LightningDataModule, config)
