#!/usr/bin/env python3
"""Your photos vs Fashion-MNIST: the image-folder path trains as fast as the IDX path on an equal data set.

The 60,000 Fashion-MNIST training images are written as PNG files into class folders (the layout a user brings),
then `fashion-mnist fit --config configs/default.yaml` runs on both data sets, interleaved: FashionMNISTDataModule
(55k train) and ImageFolderDataModule on the PNG folder (1x28x28, the same 5k held out, no test split), 2 epochs each,
the second (steady-state) epoch timed by benchmarks/timing.py. Also: the folder's one-time decode, and a second
start that reuses the cache. Writes benchmarks/results/folder_speed.json.

    python benchmarks/folder_speed.py [--reps 3]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import PY, RESULTS, ROOT, records, run, template_cmd

sys.path.insert(0, str(ROOT / "src"))
from fashion_mnist_lightning.data.files import CLASS_NAMES, load_cache  # noqa: E402


def write_folder(root: Path) -> int:
    """The 60k training images as root/<class>/<index>.png (grey, 28x28); returns the number written."""
    from PIL import Image

    arrays = load_cache(ROOT / "data")
    images, labels = arrays["train_images"].numpy(), arrays["train_labels"].tolist()
    folders = [root / name.replace("/", "-") for name in CLASS_NAMES]
    for folder in folders:
        folder.mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folders[label] / f"{i:05d}.png")
    return len(labels)


def folder_flags(root: Path, cache: Path) -> list[str]:
    return [
        "--data=fashion_mnist_lightning.image_folder.ImageFolderDataModule",
        f"--data.root={root}",
        f"--data.cache_dir={cache}",
        "--data.image_size=[28,28]",
        "--data.channels=1",
        f"--data.val_fraction={5000 / 60000}",
        "--data.test_fraction=0",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="folder-speed-"))
    root, cache, logs, log = work / "photos", work / "cache", work / "logs", work / "commands.log"
    start = time.perf_counter()
    count = write_folder(root)
    print(f"wrote {count:,} PNG files in {time.perf_counter() - start:.0f} s", flush=True)

    decode = [PY, "-c", f"from fashion_mnist_lightning.data.folder import load_folder; load_folder({str(root)!r}, "
              f"{str(cache)!r}, 1, (28, 28))"]  # fmt: skip
    _, decode_s, _ = run(decode)
    _, cached_s, _ = run(decode)
    print(f"one-time decode {decode_s:.1f} s, a start with the cache {cached_s:.1f} s", flush=True)

    paths = {"fashion_mnist": [], "image_folder": folder_flags(root, cache)}
    epochs: dict[str, list[float]] = {name: [] for name in paths}
    for rep in range(args.reps):
        for name, flags in paths.items():
            out = work / f"{name}-{rep}.jsonl"
            run(template_cmd(logs, "--trainer.max_epochs=2", *flags), {"BENCH_OUT": str(out)}, log)
            epochs[name].append([r["epoch_s"] for r in records(out) if "epoch_s" in r][-1])
            print(f"rep {rep + 1}/{args.reps} {name:13s} epoch {epochs[name][-1]:.2f} s", flush=True)

    images = 55_000  # both train on 55k images
    result = {
        "png_files": count,
        "decode_once_s": round(decode_s, 2),
        "cached_start_s": round(cached_s, 2),
        **{f"{name}_images_per_s": round(images / statistics.median(seconds)) for name, seconds in epochs.items()},
        "epoch_s": {name: [round(s, 2) for s in seconds] for name, seconds in epochs.items()},
        "command": "python benchmarks/folder_speed.py --reps " + str(args.reps),
    }
    result["ratio_folder_to_fashion"] = round(
        result["image_folder_images_per_s"] / result["fashion_mnist_images_per_s"], 3
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "folder_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
