"""Fine-tuning against training from scratch on a small photo folder, offline, mean +- std over seeds.

The folders are made from the verified Fashion-MNIST cache, as PNG files in class folders (what a user has):
  pretrain/  the first five classes (T-shirt/top ... Coat), 1,000 training images each
  small/     the other five (Sandal ... Ankle boot): train/ 50 images a class, val/ and test/ 200 a class from the
             official test set (never seen in pretraining)
Then, with `fashion-mnist` as a user runs it (configs/folder.yaml, grey 28x28):
  1. pretrain VGGNet on pretrain/;
  2. for each seed: small/ from scratch, and small/ from the pretrained checkpoint (--model.init_weights, the head
     new for the five other classes, FreezeBackbone for the first epochs, the backbone at a tenth of the lr).

    python benchmarks/finetune_transfer.py      # -> benchmarks/results/finetune_transfer.json
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fashion_mnist_lightning.runs.precision import cpu_model

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path(sys.executable).with_name("fashion-mnist")
COMMON = (
    "--config configs/folder.yaml --data.image_size 28 --data.channels 1 --data.hflip true --data.crop_padding 2 "
    "--model.network.init_args.width 16 --test_after_fit true"
)
FINETUNE = (
    "--model.init_weights {weights} --model.backbone_lr_scale 0.1 "
    "--trainer.callbacks+=fashion_mnist_lightning.finetune.FreezeBackbone --trainer.callbacks.epochs 3"
)


def write_folders(base: Path) -> None:
    import torch
    from PIL import Image

    from fashion_mnist_lightning.data.files import CLASS_NAMES, load_cache

    arrays = load_cache(ROOT / "data")
    names = [name.replace("/", "-") for name in CLASS_NAMES]

    def write(images, labels, classes, per_class, folder: Path) -> None:
        for label in classes:
            index = (labels == label).nonzero().squeeze(1)[:per_class]
            (folder / names[label]).mkdir(parents=True, exist_ok=True)
            for i in index.tolist():
                Image.fromarray(images[i].numpy()).save(folder / names[label] / f"{i:05d}.png")

    train, test = (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])
    write(*train, range(5), 1000, base / "pretrain")
    write(*train, range(5, 10), 50, base / "small" / "train")
    order = torch.arange(len(test[1]))
    first, second = order[::2], order[1::2]  # half the test set for val/, the other half for test/
    write(test[0][first], test[1][first], range(5, 10), 200, base / "small" / "val")
    write(test[0][second], test[1][second], range(5, 10), 200, base / "small" / "test")


def fit(base: Path, flags: str) -> tuple[float, float, Path]:
    """Run one `fashion-mnist fit`; (test accuracy %, wall seconds, its best checkpoint)."""
    began = time.perf_counter()
    done = subprocess.run(
        [str(FASHION_MNIST), "fit", *COMMON.split(), *flags.split()],
        cwd=base, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"fit {flags} failed:\n{done.stderr[-2000:]}")
    accuracy = float(re.search(r"test accuracy: ([\d.]+) %", done.stdout).group(1))
    best = Path(re.search(r"best checkpoint: (\S+)", done.stdout).group(1))
    return accuracy, round(time.perf_counter() - began, 1), base / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (pretraining: 10)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/finetune_transfer.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "configs").symlink_to(ROOT / "configs")
        write_folders(base)
        pretrained = fit(base, "--data.root pretrain --data.cache_dir cache --trainer.max_epochs 10")
        rows = {"scratch": [], "fine-tuned": []}
        for seed in args.seeds:
            small = (
                f"--data.root small --data.cache_dir cache --trainer.max_epochs {args.epochs} --seed_everything {seed}"
            )
            rows["scratch"].append(fit(base, small)[:2])
            rows["fine-tuned"].append(fit(base, f"{small} {FINETUNE.format(weights=pretrained[2])}")[:2])
    summary = {
        "cpu": cpu_model(),
        "command": "python benchmarks/finetune_transfer.py",
        "pretraining": {"test_accuracy": pretrained[0], "seconds": pretrained[1]},
        "seeds": args.seeds,
        "epochs": args.epochs,
    }
    for name, results in rows.items():
        accuracies = [a for a, _ in results]
        summary[name] = {
            "test_accuracy": accuracies,
            "mean": round(statistics.mean(accuracies), 2),
            "std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else 0.0,
            "seconds": [s for _, s in results],
        }
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
