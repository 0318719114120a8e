"""A user's own labelled photos, one subfolder per class: scan, decode once into a uint8 cache, notice any change.

The two layouts of torchvision's ImageFolder (what every tutorial uses):
  flat    root/<class>/<image files>                          every image is in the train pool
  split   root/train/<class>/...  [root/val/<class>/...]  [root/test/<class>/...]
Class names are the sorted names of the train pool's class folders (as torchvision sorts them); a label is an
index into them. Names starting with "." are ignored everywhere, and so are folders inside a class folder. A file
Pillow cannot read is a skipped row (on stderr and in a CSV beside the cache), never the end of the run.

The cache is two files in ``cache_dir``: ``folder-<hash of root>-CxHxW.u8``, every readable image of every split
back to back as raw uint8 (N, C, H, W), and ``folder-...-CxHxW.pt``, the labels, class names, skipped files and a
fingerprint of every file's path, size and mtime. Images are decoded straight into the memory-mapped .u8 file and
read back memory-mapped: a cache larger than the free memory trains, the process holds only the pages a batch
touches (the kernel's page cache, shared by DDP's processes), and no copy of the images is made. Scanning only
stats, so a run over an unchanged folder decodes nothing; a run over a changed one decodes it all again rather
than train on a stale copy.
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
from fashion_mnist_lightning.errors import first_line
from fashion_mnist_lightning.runs.checkpoint_io import atomic_torch_save, atomic_write_text

FOLDER_CACHE_FORMAT = 2  # bump when decoding or the cache's contents change: every fingerprint changes with it
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
    pool: ThreadPoolExecutor, images: torch.Tensor, rows: list[tuple[Path, int]], size: tuple[int, int]
) -> tuple[int, torch.Tensor, list[str | None]]:
    """Decode ``rows`` into ``images`` (len(rows), C, H, W), the readable ones moved to its front in order; (how
    many are readable, their labels (n,) int64, each row's error or None). Each thread writes its own slot, so the
    order is the rows' whatever the threads' timing."""
    errors = list(pool.map(lambda i: decode_into(images, i, rows[i][0], size), range(len(rows))))
    kept = [i for i, error in enumerate(errors) if error is None]
    for slot, i in enumerate(kept):  # close the gaps of skipped files: slot <= i, so nothing is overwritten early
        if slot != i:
            images[slot] = images[i]
    labels = torch.tensor([rows[i][1] for i in kept], dtype=torch.int64)
    return len(kept), labels, errors


def decode(layout: FolderLayout, channels: int, size: tuple[int, int], images_file: Path) -> tuple[dict, dict]:
    """Decode every split into ``images_file`` (raw uint8, the splits back to back, skipped files left out);
    ({"<split>_labels": (n,) int64, "<split>_count": n}, {relative path: why skipped})."""
    total = sum(len(rows) for rows in layout.splits.values())
    pixels = channels * size[0] * size[1]
    images_file.unlink(missing_ok=True)
    mapped = torch.from_file(str(images_file), shared=True, size=max(total, 1) * pixels, dtype=torch.uint8)
    images = mapped[: total * pixels].view(total, channels, *size)  # (N, C, H, W), written through to the file
    arrays, skipped, start = {}, {}, 0
    with warnings.catch_warnings(), ThreadPoolExecutor(DECODE_THREADS) as pool:
        # Pillow only warns about an image between MAX_IMAGE_PIXELS and twice that; here it is a skipped row too.
        # The filter is process-wide, so it is set here, around the pool, not inside the threads.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        read = 0
        for split, rows in layout.splits.items():
            count, labels, errors = decode_split(pool, images[read : read + len(rows)], rows, size)
            if read != start:  # files skipped in an earlier split: move this one down to close the gap
                images[start : start + count] = images[read : read + count].clone()
            arrays[f"{split}_labels"], arrays[f"{split}_count"] = labels, count
            read, start = read + len(rows), start + count
            for (file, _), error in zip(rows, errors):
                if error is not None:
                    skipped[file.relative_to(layout.root).as_posix()] = error
                    print(f"skipped {file}: {error}", file=sys.stderr)
    del images, mapped  # unmapped: the file may shrink
    os.truncate(images_file, start * pixels)
    return arrays, skipped


def map_images(arrays: dict, images_file: Path, channels: int, size: tuple[int, int]) -> dict | None:
    """``arrays`` with "<split>_images" (n, C, H, W) uint8: views into ``images_file``, memory-mapped read-only
    (copy-on-write); None when the file is missing or not the size the labels say."""
    splits = [key.removesuffix("_count") for key in arrays if key.endswith("_count")]
    counts = [int(arrays[f"{split}_count"]) for split in splits]
    pixels = channels * size[0] * size[1]
    if not images_file.is_file() or images_file.stat().st_size != sum(counts) * pixels:
        return None
    if sum(counts) == 0:
        return None
    mapped = torch.from_file(str(images_file), shared=False, size=sum(counts) * pixels, dtype=torch.uint8)
    images = mapped.view(sum(counts), channels, *size)
    start, result = 0, dict(arrays)
    for split, count in zip(splits, counts):
        result[f"{split}_images"] = images[start : start + count]
        start += count
    return result


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
    """{"class_names", "<split>_images" (N, C, H, W) uint8 memory-mapped, "<split>_labels" (N,) int64 for each split
    present, "skipped" {relative path: why}, "fingerprint"}: from the cache when no file changed, else decoded."""
    check_shape(channels, size)  # before any file: a bad shape is one error, not a skipped row per file
    size = tuple(size)
    layout = scan(root)
    key = fingerprint(layout, channels, size)
    path = cache_path(layout.root, cache_dir, channels, size)
    images_file = path.with_suffix(".u8")
    cached = read_cache(path)
    if isinstance(cached, dict) and cached.get("fingerprint") == key:
        mapped = map_images(cached, images_file, channels, size)
        if mapped is not None:
            report_left_out(cached["skipped"], layout.root, skipped_csv_path(path))
            return mapped
    changed = f"{layout.root} changed since it was cached: " if cached is not None else ""
    total = sum(len(rows) for rows in layout.splits.values())
    print(f"{changed}decoding {total} images from {layout.root} into {images_file}", file=sys.stderr)
    # the folder, and no old labels left to describe the new images file
    write_or_explain(path, lambda: (path.parent.mkdir(parents=True, exist_ok=True), path.unlink(missing_ok=True)))
    try:
        arrays, skipped = decode(layout, channels, size, images_file)
    except (OSError, RuntimeError) as err:  # torch.from_file reports a full disk or a read-only folder so
        raise DataError(
            f"cannot write the image cache {images_file} ({first_line(err)}); free space or pass a writable folder "
            "with --data.cache_dir"
        ) from err
    write_skipped_csv(skipped_csv_path(path), skipped)
    refuse_empty_classes(layout, arrays["train_labels"], skipped_csv_path(path))
    result = {"class_names": layout.class_names, **arrays, "skipped": skipped, "fingerprint": key}
    write_or_explain(path, lambda: atomic_torch_save(result, path))
    return map_images(result, images_file, channels, size)


def report_left_out(skipped: dict[str, str], root: Path, csv_path: Path) -> None:
    """A reused cache decodes nothing, so it prints nothing per file: one line keeps the left-out files visible."""
    if not skipped:
        return
    if not csv_path.is_file():  # deleted by hand: the line below must not point at nothing
        write_skipped_csv(csv_path, skipped)
    print(f"{len(skipped)} unreadable files in {root} were left out (listed in {csv_path})", file=sys.stderr)
