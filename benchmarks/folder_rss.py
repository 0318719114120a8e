"""A photo cache larger than the memory a process may use still trains: the images are memory-mapped (data/folder.py).

Writes a folder of 224x224 JPEGs whose uint8 cache is >= 2 GiB, decodes it once (ImageFolderDataModule), then in
fresh processes walks one whole training epoch the way `fashion-mnist fit` does (the DataModule's train loader,
batches to float on the "device"), reading the process's memory from /proc/self/status: RssAnon (memory of its
own) and RssFile (pages of mapped files: the kernel's page cache, which it may drop at any time). Where the cgroup v1
memory controller is writable (root), the same epoch also runs under a memory limit below the cache's size, the page
cache dropped first (so the cache's pages are charged to the limited group as they are read), and beside it the same
epoch over an in-memory copy of the images, which that limit kills.

    python benchmarks/folder_rss.py            # -> benchmarks/results/folder_rss.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fashion_mnist_lightning.runs.precision import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup/memory")


def memory() -> dict[str, int]:
    """This process's RssAnon, RssFile and VmHWM in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def write_photos(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).resize((224, 224))  # small JPEGs
    base = np.asarray(smooth)
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image = np.roll(base, i, axis=1) ^ np.uint8(i % 256)  # every image different, cheap to make
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=90)


def epoch(root: str, cache: str, copy: bool) -> dict:
    """One training epoch of the DataModule's batches, as fit reads them; memory before and after."""
    import torch

    from fashion_mnist_lightning.image_folder import ImageFolderDataModule

    start = memory()
    data = ImageFolderDataModule(
        root, image_size=224, cache_dir=cache, batch_size=64, val_fraction=0.05, test_fraction=0.05
    )
    data.setup("fit")
    if copy:  # what a cache read into memory costs: the images as one tensor of the process's own
        data.train_set.images = data.train_set.images.clone()
    built = memory()
    seen, began = 0, time.perf_counter()
    for images, labels in data.train_dataloader():
        batch = data.on_after_batch_transfer((images, labels), 0)[0]  # (64, 3, 224, 224) float in [0, 1]
        seen += len(batch)
    return {
        "images": seen,
        "seconds": round(time.perf_counter() - began, 1),
        "cache_mib": data.train_set.images.numel() // 2**20,
        "memory_mib": {"start": start, "after_setup": built, "after_epoch": memory()},
        "torch": torch.__version__,
    }


def run_child(args: list[str], cgroup: Path | None) -> dict:
    """This script's --child in a fresh interpreter (in ``cgroup`` when given); its JSON, or how it ended."""
    command = [sys.executable, __file__, "--child", *args]
    preexec = None
    if cgroup is not None:
        preexec = lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))  # noqa: E731
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=preexec, timeout=1800)
    if done.returncode != 0:
        return {"exit": done.returncode, "killed": done.returncode < 0, "stderr": done.stderr[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def drop_page_cache() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("1")


def limited_cgroup(limit_mib: int) -> Path | None:
    group = CGROUP / "fashion-mnist-bench"
    try:
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(limit_mib * 2**20))
    except OSError:
        return None
    return group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=14_400, help="224x224 RGB: 14,400 = 2.0 GiB of cache")
    parser.add_argument("--limit", type=int, default=1536, help="MiB: the cgroup's memory limit, below the cache")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/folder_rss.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, cache, copy = args.child
        print(json.dumps(epoch(root, cache, copy == "copy")))
        return
    with tempfile.TemporaryDirectory(dir=ROOT / "data" if (ROOT / "data").is_dir() else None) as tmp:
        root, cache = Path(tmp) / "photos", Path(tmp) / "cache"
        began = time.perf_counter()
        write_photos(root, args.images)
        written = time.perf_counter() - began
        results = {"cpu": cpu_model(), "photos": args.images, "seconds_to_write_photos": round(written, 1)}
        results["first_run_decodes"] = run_child([str(root), str(cache), "mapped"], None)
        results["mapped"] = run_child([str(root), str(cache), "mapped"], None)
        group = limited_cgroup(args.limit)
        if group is not None:
            results["cgroup_limit_mib"] = args.limit
            drop_page_cache()  # else the pages read above stay charged to this process's own cgroup, not the limit's
            results["mapped_under_limit"] = run_child([str(root), str(cache), "mapped"], group)
            drop_page_cache()
            results["in_memory_copy_under_limit"] = run_child([str(root), str(cache), "copy"], group)
            group.rmdir()
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
