"""ImageFolderDataModule: your own labelled photos, one subfolder per class, on the template's fast path.

    photos/cat/001.jpg, photos/cat/002.png, photos/dog/...           (validation and test split off, seeded)
    photos/train/cat/..., photos/val/cat/..., photos/test/cat/...     (your own val/ and test/; either may be missing)

Every file Pillow reads (PNG, JPEG, WebP, TIFF, ...; any size, grey or colour) is decoded once into a uint8 cache
at ``image_size`` and ``channels`` (data/folder.py), and decoded again when the folder changes. A file that cannot be
read is a row in ``<cache>-skipped.csv`` and a line on stderr, never a silent drop. From then on it is the same
in-memory path as Fashion-MNIST: batches by index, floats and augmentation on the device, exact resume, DDP.

Without the folder (a model handed to someone else) the DataModule still builds: predict of new images with
``--data.predict_dir`` takes the class names from the checkpoint; fit, validate and test say in one line that they
need the photos.
"""

from pathlib import Path
from typing import Literal

import torch

from fashion_mnist_lightning.data.files import DataError
from fashion_mnist_lightning.data.folder import load_folder
from fashion_mnist_lightning.data.sampler import split_indices
from fashion_mnist_lightning.datamodule import InMemoryImages


class ImageFolderDataModule(InMemoryImages):
    """Your own photos, one subfolder per class; the class names are the subfolder names (sorted, as in
    torchvision's ImageFolder), the per-channel mean and std are measured on the training images."""

    def __init__(
        self,
        root: str,  # the folder of class folders (or of train/ [val/] [test/] holding them)
        image_size: int | tuple[int, int] = (64, 64),  # (H, W) pixels every image is resized and centre-cropped
        # to; one number = a square
        channels: int = 3,  # 3 = RGB, 1 = grey
        cache_dir: str = "data",  # where the decoded uint8 cache and the skipped-files list are written
        val_fraction: float = 0.1,  # of the training images, held out for validation when there is no val/
        test_fraction: float = 0.1,  # of the training images, held out for testing when there is no test/
        batch_size: int = 64,  # training images per optimizer step (per process under DDP)
        eval_batch_size: int = 500,  # images per validation / test / predict step
        seed: int = 42,  # fixes the splits and the shuffle order of every epoch
        data_on_device: bool = False,  # keep the uint8 data set on the training device (GPU)
        crop_padding: int = 0,  # training only: random shifts of up to this many pixels, 0 = off
        hflip: bool | Literal["alternate"] = False,  # training only: mirror left-right with probability 0.5;
        # "alternate": every image mirrored every other epoch
        predict_dir: str | None = None,  # predict: a folder of image files; None = the test split
        resized_crop: float = 1.0,  # training only: each image cut to a random box of this much to all of its
        # area (aspect 3:4 to 4:3) and resized back (RandomResizedCrop's scale floor; photos: 0.35); 1 = off
        colour_jitter: float = 0.0,  # training only: brightness, contrast, saturation each x a factor in [1-s, 1+s]
        balanced_sampling: bool = False,  # each epoch draws its training images with replacement, every class
        # equally often (for imbalanced photos; or model.class_weights: balanced, which weighs the loss instead)
    ):
        super().__init__(batch_size, eval_batch_size, seed, data_on_device, crop_padding, hflip, predict_dir)
        if channels not in (1, 3):
            raise ValueError(f"--data.channels must be 1 (grey) or 3 (RGB), got {channels}")
        image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"--data.image_size must be one size or two (H, W), all positive, got {image_size}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ValueError(f"--data.{name} must be in [0, 1), got {value}")
        if not 0 < resized_crop <= 1:
            raise ValueError(f"--data.resized_crop must be in (0, 1] (the smallest area fraction), got {resized_crop}")
        if not 0 <= colour_jitter < 1:
            raise ValueError(f"--data.colour_jitter must be in [0, 1), got {colour_jitter}")
        if val_fraction + test_fraction >= 1:
            raise ValueError("--data.val_fraction + --data.test_fraction must leave training images (sum < 1)")
        self.save_hyperparameters()
        self.image_shape = (channels, *image_size)
        self.balanced_sampling = balanced_sampling
        self.resized_crop, self.colour_jitter = resized_crop, colour_jitter
        self.class_names, self.mean, self.std, self.splits, self.missing = None, None, None, None, None
        self.class_counts: list[int] | None = None  # training images per class
        if not Path(root).exists():
            self.missing = (
                f"--data.root {root} does not exist: fit, validate, test and report evaluate its photos; pass the "
                "folder with --data.root (predict with --data.predict_dir, export and serve need only the checkpoint)"
            )
            return
        arrays = load_folder(root, cache_dir, channels, image_size)  # decoded once, then cached
        self.splits = split(arrays, val_fraction, test_fraction, seed)  # views and indices: no copy of the images
        self.class_names = list(arrays["class_names"])
        images, labels, index = self.splits["train"]
        self.class_counts = torch.bincount(labels, minlength=len(self.class_names)).tolist()
        self.mean, self.std = statistics(images, index)

    def sample_weights(self) -> torch.Tensor | None:
        if not self.balanced_sampling:
            return None
        counts = torch.tensor(self.class_counts, dtype=torch.float64)
        return (1 / counts.clamp_min(1))[self.train_set.labels.cpu()]  # (N,): each class's draws sum to 1

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self.splits is None:
            raise DataError(self.missing)
        return self.splits


def split(arrays: dict, val_fraction: float, test_fraction: float, seed: int) -> dict[str, tuple]:
    """{"train" | "val" | "test": (images, labels, index)}: the user's own val/ and test/ where given (index None:
    all of them); what is missing is split off the training images (seeded), as indices into them, so the
    memory-mapped images are never copied."""
    images, labels = arrays["train_images"], arrays["train_labels"]
    splits = {
        name: (arrays[f"{name}_images"], arrays[f"{name}_labels"], None)
        for name in ("val", "test")
        if f"{name}_images" in arrays
    }
    held_out = {name: f for name, f in (("val", val_fraction), ("test", test_fraction)) if name not in splits}
    sizes = {name: round(f * len(labels)) for name, f in held_out.items()}
    order = split_indices(len(labels), sum(sizes.values()), seed)[1]  # the held-out images, shuffled
    start = 0
    for name, size in sizes.items():
        index = order[start : start + size]
        splits[name] = (images, labels[index], index)
        start += size
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[order] = False
    train = rest.nonzero().squeeze(1)  # (n,) the images left for training, in file order
    splits["train"] = (images, labels[train], train)
    return splits


def statistics(images: torch.Tensor, index: torch.Tensor, chunk: int = 64) -> tuple[tuple, tuple]:
    """Per-channel mean and std on the [0, 1] scale of images[index] (N, C, H, W) uint8, a chunk at a time (a
    memory-mapped set is never held in memory as floats)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares, count = total.clone(), 0
    for part in index.split(chunk):
        x = images[part].double().div_(255)  # (chunk, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    std = ((squares - count * mean.square()) / max(count - 1, 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())
