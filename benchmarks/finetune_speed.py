"""Images per second of a timm ResNet-18 fine-tuning on photos, frozen and thawed, at 128 and 224 px: through the
template (`fashion-mnist fit --config configs/finetune.yaml`, default callbacks, logger, progress bar) and through a
bare loop of the same work (the same network, optimizer groups, loss, augmentation, batches), interleaved in one run.

Each figure is the second (steady-state) training epoch of its run, as `make bench` times the template
(benchmarks/timing.py's BenchTimer); the bare loop runs with the allocator setting the command makes
(runs/memory.py), as issue #30 measures it. Random init (weights: null): the speed is the architecture's, not the
weights'.

    python benchmarks/finetune_speed.py       # -> benchmarks/results/finetune_speed.json
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PY, ROOT, records, run  # noqa: E402
from folder_rss import cpu_model  # noqa: E402

PHOTOS = 3 * 120  # 3 classes; 10 % val, 10 % test: 288 training photos, 9 steps of 32 an epoch


def write_photos(root: Path, size: int = 256) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(PHOTOS):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size)).save(folder / f"{i:04d}.jpg", quality=90)


def recipe(folder: Path, frozen: bool) -> Path:
    """configs/finetune.yaml with the whole run frozen (FreezeBackbone epochs >= max_epochs) or thawed (0)."""
    config = yaml.safe_load((ROOT / "configs/finetune.yaml").read_text())
    config["trainer"]["max_epochs"] = 2
    config["trainer"]["callbacks+"][0]["init_args"]["epochs"] = 2 if frozen else 0
    path = folder / f"finetune-{'frozen' if frozen else 'thawed'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def template(folder: Path, size: int, frozen: bool, out: Path) -> float:
    """Seconds of the second training epoch of `fashion-mnist fit` on the photos."""
    run([
        PY, "-m", "fashion_mnist_lightning.cli", "fit", "--config", str(recipe(folder, frozen)),
        f"--data.root={folder / 'photos'}", f"--data.cache_dir={folder / 'cache'}", f"--data.image_size={size}",
        "--model.network.init_args.weights=null", f"--trainer.logger.init_args.save_dir={folder / 'logs'}",
        "--trainer.callbacks+=timing.BenchTimer", "--trainer.limit_val_batches=1",
    ], env_extra={"BENCH_OUT": str(out)}, log=folder / "template.log")  # fmt: skip
    return [r["epoch_s"] for r in records(out) if r.get("epoch") == 1][-1]


def bare(folder: Path, size: int, frozen: bool) -> float:
    """Seconds of the second epoch of the same work as a plain loop: the recipe's network, AdamW with the head and
    backbone groups and OneCycleLR, label smoothing, the augmentation, the DataModule's batches."""
    import torch
    import torch.nn.functional as F

    from fashion_mnist_lightning.backbones import Pretrained, head_of
    from fashion_mnist_lightning.data.augment import augment_batch
    from fashion_mnist_lightning.image_folder import ImageFolderDataModule

    config = yaml.safe_load((ROOT / "configs/finetune.yaml").read_text())
    d, m = config["data"]["init_args"], config["model"]
    data = ImageFolderDataModule(
        str(folder / "photos"), image_size=size, cache_dir=str(folder / "cache"), batch_size=d["batch_size"]
    )
    data.setup("fit")
    torch.manual_seed(0)
    network = Pretrained(m["network"]["init_args"]["name"], weights=None, num_classes=3, in_channels=3)
    head = {id(p) for p in head_of(network).parameters()}
    backbone = [p for p in network.parameters() if id(p) not in head]
    lr, scale = m["scheduler"]["init_args"]["max_lr"], m["backbone_lr_scale"]
    groups = [{"params": [p for p in network.parameters() if id(p) in head]}, {"params": backbone}]
    optimizer = torch.optim.AdamW(groups, weight_decay=m["optimizer"]["init_args"]["weight_decay"])
    loader = data.train_dataloader()
    steps = 2 * len(loader)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[lr, lr * scale], total_steps=steps, pct_start=0.2)
    norms = [mod for mod in network.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for p in backbone:
        p.requires_grad_(not frozen)
    seconds = []
    for epoch in range(2):
        network.train()
        for norm in norms if frozen else ():
            norm.eval()
        data.train_sampler.set_epoch(epoch)
        began = time.perf_counter()
        for images, labels in loader:
            images = augment_batch(images.float().div_(255), 0, True, epoch, d["resized_crop"], d["colour_jitter"])
            loss = F.cross_entropy(network(images), labels, label_smoothing=m["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        seconds.append(time.perf_counter() - began)
    return seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/finetune_speed.json")
    args = parser.parse_args()
    from fashion_mnist_lightning.runs.memory import keep_freed_memory

    keep_freed_memory()  # the bare loop with the allocator setting `fashion-mnist` makes (at 224 px: ~30 % faster)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_photos(folder / "photos")
        images = PHOTOS - 2 * round(0.1 * PHOTOS)
        for size in args.sizes:
            for frozen in (True, False):
                out = folder / f"{size}-{frozen}.jsonl"
                template_s = template(folder, size, frozen, out)  # first: it also decodes the photos' cache
                bare_s = bare(folder, size, frozen)
                rows.append({
                    "size": size, "backbone": "frozen" if frozen else "thawed",
                    "template_images_per_s": round(images / template_s, 1),
                    "bare_images_per_s": round(images / bare_s, 1), "template_vs_bare": round(template_s / bare_s, 3),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    result = {
        "cpu": cpu_model(),
        "command": "python benchmarks/finetune_speed.py",
        "training_images": images,
        "rows": rows,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
