"""A checkpoint back as a model for the tools (report, export): float32, eval mode, CPU."""

import os
import warnings
from pathlib import Path
from typing import Any

from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.runs.checkpoint_io import check_matches, read_checkpoint


def load_classifier(path: str | os.PathLike) -> tuple[FashionMNISTClassifier, dict[str, Any]]:
    """The checkpoint's FashionMNISTClassifier (rebuilt from the hparams the CLI saved, network class and all)
    and the checkpoint dict itself. One-line CheckpointError for a missing, corrupt or mismatched file."""
    checkpoint = read_checkpoint(path)
    try:
        with warnings.catch_warnings():  # the saved network config is rebuilt into a module: that is the intent
            warnings.filterwarnings("ignore", message="Attribute 'network' is an instance of `nn.Module`")
            model = FashionMNISTClassifier.load_from_checkpoint(Path(path), map_location="cpu", weights_only=True)
    except RuntimeError:  # the weights do not fit the network the hparams describe: say which
        check_matches(path, checkpoint["state_dict"], FashionMNISTClassifier())
        raise
    return model.float().eval(), checkpoint
