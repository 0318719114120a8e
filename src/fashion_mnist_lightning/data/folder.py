"""A user's own labelled photos, one subfolder per class: scan, decode once into a uint8 cache, notice any change.

The two layouts of torchvision's ImageFolder (what every tutorial uses):
  flat    root/<class>/<image files>                          every image is in the train pool
  split   root/train/<class>/...  [root/val/<class>/...]  [root/test/<class>/...]
Class names are the sorted names of the train pool's class folders (as torchvision sorts them); a label is an
index into them. Names starting with "." are ignored everywhere, and so are folders inside a class folder. A file
Pillow cannot read is a skipped row (on stderr and in a CSV beside the cache), never the end of the run.

The cache ``cache_dir/folder-<hash of root>-CxHxW.pt`` carries a fingerprint of every file's path, size and
mtime. Scanning only stats, so a run over an unchanged folder decodes nothing; a run over a changed one decodes
it all again rather than train on a stale copy.
"""

import csv
import hashlib
import io
import json
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from fashion_mnist_lightning.data.files import DataError, read_cache
from fashion_mnist_lightning.data.images import check_shape, convert_image, not_a_file, why_unreadable
from fashion_mnist_lightning.runs.checkpoint_io import atomic_torch_save, atomic_write_text

FOLDER_CACHE_FORMAT = 1  # bump when decoding or the cache's contents change: every fingerprint changes with it
SPLITS = ("train", "val", "test")
DECODE_THREADS = min(4, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes and resizes
FOLDER_HINT = "one subfolder per class: {root}/<class>/<image files>"


@dataclass
class FolderLayout:
    root: Path
    class_names: list[str]
    splits: dict[str, list[tuple[Path, int]]]  # "train" always; "val" / "test" when present: (file, label), sorted


# ----------------------------------------------------------------------------------------------------
# Scanning: names and stat only, nothing is opened


def entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sub-folders, everything else) of ``folder``, sorted by name, hidden entries left out."""
    try:
        with os.scandir(folder) as it:
            visible = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"cannot list {folder} ({err.strerror}); make it readable or move it out of the way") from err
    return [Path(e.path) for e in visible if e.is_dir()], [Path(e.path) for e in visible if not e.is_dir()]


def refuse_loose_images(files: list[Path], where: Path) -> None:
    """An image beside the class folders belongs to no class; other loose files (a README) are left alone."""
    suffixes = Image.registered_extensions()  # {".png": "PNG", ...}: every format this Pillow reads or writes
    loose = [f for f in files if f.suffix.lower() in suffixes]
    if loose:
        raise DataError(
            f"{loose[0]} is an image outside any class folder; move it into its class folder in {where} or remove it"
        )


def class_folders(pool: Path) -> list[Path]:
    """The class folders of a pool (the root, or train/ val/ test/), refusing loose images beside them."""
    folders, files = entries(pool)
    if not folders:
        only = " (only loose files)" if files else ""
        raise DataError(f"{pool} has no class folders{only}; put the images in {FOLDER_HINT.format(root=pool)}")
    refuse_loose_images(files, pool)
    return folders


def class_files(folder: Path) -> list[Path]:
    """Every visible non-folder entry of a class folder: a file Pillow cannot read becomes a skipped row later."""
    files = entries(folder)[1]
    if not files:
        raise DataError(f"class {folder.name} has no files: {folder} is empty; put its images there or remove it")
    return files


def split_pools(root: Path) -> dict[str, Path]:
    """{"train": root} for the flat layout; {"train": root/train, "val": ..., "test": ...} for the split one."""
    folders, files = entries(root)
    names = [f.name for f in folders]
    if "train" not in names:
        for split in ("val", "test"):
            if split in names:
                raise DataError(
                    f"{root} has {split}/ but no train/; put the training images in {root / 'train'}/<class>/ "
                    f"(or rename {root / split} if it is a class)"
                )
        return {"train": root}
    extra = [f for f in folders if f.name not in SPLITS]
    if extra:
        raise DataError(
            f"{root} mixes the two layouts: it has train/ and also {extra[0].name}/; move {extra[0]} into "
            f"{root / 'train'} if it is a class, or remove it"
        )
    refuse_loose_images(files, root / "train")
    return {split: root / split for split in SPLITS if split in names}


def scan(root: str | Path) -> FolderLayout:
    """The classes and the (file, label) rows of each split under ``root``; DataError for a layout that is not one."""
    root = Path(root)
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"{root} {problem}; pass a folder that holds your images in {FOLDER_HINT.format(root='<folder>')}"
        )
    pools = split_pools(root)
    classes = {split: class_folders(pool) for split, pool in pools.items()}
    class_names = [folder.name for folder in classes["train"]]
    labels = {name: label for label, name in enumerate(class_names)}
    splits = {}
    for split, folders in classes.items():
        rows = []
        for folder in folders:
            if folder.name not in labels:
                raise DataError(
                    f"{folder} is not a class of {pools['train']} (classes: {', '.join(class_names)}); "
                    "rename it to one of them or remove it"
                )
            rows += [(file, labels[folder.name]) for file in class_files(folder)]
        splits[split] = rows
    return FolderLayout(root, class_names, splits)


def fingerprint(layout: FolderLayout, channels: int, size: tuple[int, int]) -> str:
    """SHA-256 over every file's path (relative to the root), byte size and mtime_ns, the target shape, the class
    names and FOLDER_CACHE_FORMAT: any file added, removed, renamed or rewritten changes it."""
    header = json.dumps([FOLDER_CACHE_FORMAT, channels, list(size), layout.class_names])
    digest = hashlib.sha256(header.encode())
    for rows in layout.splits.values():
        for file, _ in rows:
            digest.update(f"\0{file.relative_to(layout.root).as_posix()}\0{stamp(file)}".encode())
    return digest.hexdigest()


def stamp(file: Path) -> str:
    try:
        stat = file.stat()
    except OSError:  # a dangling link or a file deleted since the scan: its row says so when decoded
        return "missing"
    return f"{stat.st_size}\0{stat.st_mtime_ns}"


# ----------------------------------------------------------------------------------------------------
# Decoding: every file once, into one preallocated uint8 tensor per split


def decode_into(images: torch.Tensor, i: int, file: Path, size: tuple[int, int]) -> str | None:
    """Write ``file`` into images[i] (C, H, W); return why it could not be read, or None."""
    if problem := not_a_file(file):
        return problem
    try:
        with Image.open(file) as image:
            images[i] = convert_image(image, images.shape[1], size)
    except Exception as err:  # noqa: BLE001 - whatever Pillow raises for one file is that file's row
        return why_unreadable(err)
    return None


def decode_split(
    pool: ThreadPoolExecutor, rows: list[tuple[Path, int]], channels: int, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    """(images (N, C, H, W) uint8, labels (N,) int64) of the readable rows, and each row's error or None.
    Each thread writes its own slot, so the order is the rows' whatever the threads' timing."""
    images = torch.empty(len(rows), channels, *size, dtype=torch.uint8)  # (n, C, H, W); no PIL image is kept
    errors = list(pool.map(lambda i: decode_into(images, i, rows[i][0], size), range(len(rows))))
    kept = torch.tensor([i for i, error in enumerate(errors) if error is None], dtype=torch.int64)
    labels = torch.tensor([label for _, label in rows], dtype=torch.int64)[kept]
    return (images if len(kept) == len(rows) else images[kept]), labels, errors


def decode(layout: FolderLayout, channels: int, size: tuple[int, int]) -> tuple[dict, dict[str, str]]:
    """({"<split>_images": (N, C, H, W) uint8, "<split>_labels": (N,) int64}, {relative path: why skipped})."""
    arrays, skipped = {}, {}
    with warnings.catch_warnings(), ThreadPoolExecutor(DECODE_THREADS) as pool:
        # Pillow only warns about an image between MAX_IMAGE_PIXELS and twice that; here it is a skipped row too.
        # The filter is process-wide, so it is set here, around the pool, not inside the threads.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for split, rows in layout.splits.items():
            images, labels, errors = decode_split(pool, rows, channels, size)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
            for (file, _), error in zip(rows, errors):
                if error is not None:
                    skipped[file.relative_to(layout.root).as_posix()] = error
                    print(f"skipped {file}: {error}", file=sys.stderr)
    return arrays, skipped


def refuse_empty_classes(layout: FolderLayout, train_labels: torch.Tensor, csv_path: Path) -> None:
    """A class of the train pool whose every file was skipped cannot be learned."""
    counts = torch.bincount(train_labels, minlength=len(layout.class_names))
    for label, name in enumerate(layout.class_names):
        if counts[label] == 0:
            files = [file for file, row_label in layout.splits["train"] if row_label == label]
            raise DataError(
                f"class {name} has no readable image: none of the {len(files)} files in {files[0].parent} could be "
                f"read (listed in {csv_path}); put images Pillow can read there or remove the folder"
            )


# ----------------------------------------------------------------------------------------------------
# The cache: one .pt per (root, shape), and a CSV of the skipped files beside it


def cache_path(root: Path, cache_dir: str | Path, channels: int, size: tuple[int, int]) -> Path:
    root_hash = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"folder-{root_hash}-{channels}x{size[0]}x{size[1]}.pt"


def skipped_csv_path(cache: Path) -> Path:
    return cache.with_name(f"{cache.stem}-skipped.csv")


def write_skipped_csv(path: Path, skipped: dict[str, str]) -> None:
    """Columns file,error; only the header when nothing was skipped, so an old list never lingers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "error"])
    writer.writerows(skipped.items())
    write_or_explain(path, lambda: atomic_write_text(path, buffer.getvalue()))


def write_or_explain(path: Path, write) -> None:
    try:
        write()
    except OSError as err:
        raise DataError(
            f"cannot write the image cache in {path.parent} ({err.strerror}); pass a writable folder with "
            "--data.cache_dir"
        ) from err


def load_folder(root: str | Path, cache_dir: str | Path, channels: int, size: tuple[int, int]) -> dict:
    """{"class_names", "<split>_images" (N, C, H, W) uint8, "<split>_labels" (N,) int64 for each split present,
    "skipped" {relative path: why}, "fingerprint"}: from the cache when no file changed, else decoded and cached."""
    check_shape(channels, size)  # before any file: a bad shape is one error, not a skipped row per file
    size = tuple(size)
    layout = scan(root)
    key = fingerprint(layout, channels, size)
    path = cache_path(layout.root, cache_dir, channels, size)
    cached = read_cache(path)
    if isinstance(cached, dict) and cached.get("fingerprint") == key:
        report_left_out(cached["skipped"], layout.root, skipped_csv_path(path))
        return cached
    changed = f"{layout.root} changed since it was cached: " if cached is not None else ""
    total = sum(len(rows) for rows in layout.splits.values())
    print(f"{changed}decoding {total} images from {layout.root} into {path}", file=sys.stderr)
    arrays, skipped = decode(layout, channels, size)
    write_skipped_csv(skipped_csv_path(path), skipped)
    refuse_empty_classes(layout, arrays["train_labels"], skipped_csv_path(path))
    result = {"class_names": layout.class_names, **arrays, "skipped": skipped, "fingerprint": key}
    write_or_explain(path, lambda: atomic_torch_save(result, path))
    return result


def report_left_out(skipped: dict[str, str], root: Path, csv_path: Path) -> None:
    """A reused cache decodes nothing, so it prints nothing per file: one line keeps the left-out files visible."""
    if not skipped:
        return
    if not csv_path.is_file():  # deleted by hand: the line below must not point at nothing
        write_skipped_csv(csv_path, skipped)
    print(f"{len(skipped)} unreadable files in {root} were left out (listed in {csv_path})", file=sys.stderr)
