"""`fashion-mnist crosscheck`: the NumPy reference CNN against the torch model on the 10k test images."""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fashion_mnist_lightning.data.files import load_cache, prepare
from fashion_mnist_lightning.extras import reference
from fashion_mnist_lightning.network import SeedCNN
from fashion_mnist_lightning.runs.checkpoint_io import CheckpointError, read_checkpoint
from fashion_mnist_lightning.runs.folders import resolve_checkpoint


def seed_cnn_state(ckpt_path: str | Path) -> dict[str, torch.Tensor]:
    """The SeedCNN state_dict inside a Lightning checkpoint (keys without the 'network.' prefix)."""
    state = read_checkpoint(ckpt_path)["state_dict"]
    network = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    expected = {k: tuple(v.shape) for k, v in SeedCNN().state_dict().items()}
    if {k: tuple(v.shape) for k, v in network.items()} != expected:
        raise CheckpointError(
            f"{ckpt_path} does not hold a SeedCNN (the NumPy reference re-implements that "
            "network only); pass a checkpoint trained with configs/default.yaml or seed.yaml"
        )
    return network


def crosscheck(state: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Logits of torch and of the NumPy reference on the same images, compared."""
    network = SeedCNN()
    network.load_state_dict(state)
    x = images.unsqueeze(1).float().div(255)  # (N, 1, 28, 28) float in [0, 1]
    with torch.inference_mode():
        torch_logits = torch.cat([network.eval()(batch) for batch in x.split(1000)]).numpy()
    params = {k: v.numpy() for k, v in state.items()}
    start = time.perf_counter()
    numpy_logits = reference.cnn_forward(params, x.numpy())
    numpy_seconds = time.perf_counter() - start
    y = labels.numpy()
    return {
        "images": len(y),
        "max_abs_logit_diff": float(np.abs(torch_logits - numpy_logits).max()),
        "argmax_agreement": float((torch_logits.argmax(1) == numpy_logits.argmax(1)).mean()),
        "torch_accuracy": float((torch_logits.argmax(1) == y).mean()),
        "numpy_accuracy": float((numpy_logits.argmax(1) == y).mean()),
        "numpy_forward_seconds": numpy_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fashion-mnist crosscheck",
        description="Run the NumPy reference CNN and the torch model on the 10k "
        "test images; exit 1 when they disagree beyond tolerance.",
    )
    parser.add_argument(
        "--ckpt_path", required=True, help="a SeedCNN checkpoint (.ckpt), or best / last of the newest run"
    )
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit difference|")
    args = parser.parse_args(argv)
    state = seed_cnn_state(resolve_checkpoint(args.ckpt_path))
    prepare(args.data_dir, download=False)
    arrays = load_cache(args.data_dir)
    result = crosscheck(state, arrays["test_images"], arrays["test_labels"])
    print(f"images:               {result['images']}")
    print(f"max |logit diff|:     {result['max_abs_logit_diff']:.3e}   (tolerance {args.tolerance:g})")
    print(f"argmax agreement:     {100 * result['argmax_agreement']:.2f} %")
    print(f"torch accuracy:       {100 * result['torch_accuracy']:.2f} %")
    print(f"NumPy accuracy:       {100 * result['numpy_accuracy']:.2f} %")
    print(f"NumPy forward time:   {result['numpy_forward_seconds']:.2f} s")
    agree = result["max_abs_logit_diff"] <= args.tolerance and result["argmax_agreement"] >= 0.999
    print("crosscheck: PASS" if agree else "crosscheck: FAIL - the NumPy reference and torch disagree")
    return 0 if agree else 1


if __name__ == "__main__":  # errors are printed by the command's one path: run it as `fashion-mnist crosscheck`
    from fashion_mnist_lightning.cli import main as command

    sys.exit(command(["crosscheck", *sys.argv[1:]]))
