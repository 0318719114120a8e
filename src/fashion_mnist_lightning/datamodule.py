"""The in-memory image DataModule (the template's fast path) and Fashion-MNIST on it.

What every DataModule publishes for the rest of the template (the CLI links it into the model, the network and
the callbacks; README "Make it yours" states the contract):

    class_names   list[str]              one per class, in label order (their count is the number of logits)
    image_shape   tuple[int, int, int]   (C, H, W) of the images a batch holds
    mean, std     tuple[float, ...]      optional: per-channel statistics on the [0, 1] scale, for the network's
                                         normalisation (without them: mean 0, std 1, i.e. none)

``InMemoryImages`` keeps a whole data set as uint8 tensors; a batch is an index into them, floats and augmentation
happen on the device (``on_after_batch_transfer``), the shuffle knows where it is inside an epoch (exact mid-epoch
resume) and under DDP each process takes its share. A data set plugs in by ``load_splits()``.
"""

import sys
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fashion_mnist_lightning.data.augment import augment_batch, mirror_half
from fashion_mnist_lightning.data.files import CLASS_NAMES, DataError, load_cache, prepare
from fashion_mnist_lightning.data.images import read_folder
from fashion_mnist_lightning.data.sampler import EpochShuffle, ImageBatches, keep_batch, split_indices

TRAIN_SIZE = 60_000  # images in the official Fashion-MNIST training set, before the validation split
MEAN, STD = (0.2860,), (0.3530,)  # pixel statistics of those 60k images on the [0, 1] scale


class InMemoryImages(L.LightningDataModule):
    """Base class: uint8 images (N, C, H, W) in memory, batched by index; predict = the test set or a folder.

    Batches are (images uint8 (B, C, H, W), labels int64 (B,)) until they reach the device; then
    ``on_after_batch_transfer`` turns the images into float in [0, 1], what the model's ``forward`` takes,
    and (training only) applies the random crop and flip. There are no worker processes: with the data set in
    one tensor they would only add start-up time and copies.

    A subclass sets ``class_names``, ``image_shape`` (and ``mean``/``std``) in ``__init__`` and implements
    ``load_splits()``; ``fashion_like_predict`` says whether predict's image files are made to look like
    Fashion-MNIST (light object on black, trimmed, centred) or just resized.
    """

    fashion_like_predict = False

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        data_on_device: bool,
        crop_padding: int,
        hflip: bool | Literal["alternate"],
        predict_dir: str | None,
    ):
        super().__init__()
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("crop_padding", crop_padding, 0),
        ):
            if value < low:
                raise ValueError(f"--data.{name} must be >= {low}, got {value}")
        if hflip not in (True, False, "alternate"):
            raise ValueError(f"--data.hflip must be true, false or alternate, got {hflip!r}")
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.data_on_device = data_on_device
        self.crop_padding, self.hflip = crop_padding, hflip
        self.resized_crop, self.colour_jitter = 1.0, 0.0  # photos' augmentation (ImageFolderDataModule): off
        self.predict_dir = predict_dir
        self.predict_names: list[str] = []  # one per predicted image, in order
        self.predict_skipped: dict[str, str] = {}  # file name -> why it could not be read
        self.train_sampler: EpochShuffle | None = None
        self._sampler_state: dict | None = None  # from a checkpoint, for the next train_dataloader()

    def load_splits(self) -> dict[str, tuple]:
        """{"train" | "val" | "test": (images uint8 (N, C, H, W), labels int64 (N,))}, or (images, labels, index)
        where a split is the rows ``index`` of a larger (memory-mapped) images tensor; called once per process."""
        raise NotImplementedError

    def sample_weights(self) -> torch.Tensor | None:
        """(N,) per training image, for a sampler that draws them in proportion; None: a plain shuffle."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_dir is not None:
            return self._setup_predict_folder(Path(self.predict_dir))  # new images: no split is needed
        if hasattr(self, "test_set"):
            return
        splits = self.load_splits()
        if self.hflip == "alternate":  # epoch 0's orientation of each image (a copy in memory); odd epochs mirror it
            train = ImageBatches(*splits["train"])
            splits = {**splits, "train": (mirror_half(train.first(len(train)), self.seed), train.labels)}
        self.train_set, self.val_set, self.test_set = (ImageBatches(*splits[name]) for name in ("train", "val", "test"))
        if self.data_on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            for dataset in (self.train_set, self.val_set, self.test_set):
                dataset.to(device)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        weights = self.sample_weights()
        self.train_sampler = EpochShuffle(len(self.train_set), self.seed, self.batch_size, replicas, rank, weights)
        if self._sampler_state is not None:
            self.train_sampler.load_state_dict(self._sampler_state)
            self._sampler_state = None
        return self._loader(self.train_set, self.batch_size, sampler=self.train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            self.predict_names = [f"test[{i}]" for i in range(len(self.test_set))]
        return self._loader(self.predict_set if self.predict_dir is not None else self.test_set, self.eval_batch_size)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)  # bare: example_input_array
        if images.dtype == torch.uint8:
            images = images.float().div_(255)  # (B, C, H, W) float in [0, 1]; labels (B,) int64
        training = labels is not None and self.trainer is not None and self.trainer.training
        if training and (self.crop_padding or self.hflip or self.resized_crop < 1 or self.colour_jitter):
            epoch = self.trainer.current_epoch
            images = augment_batch(images, self.crop_padding, self.hflip, epoch, self.resized_crop, self.colour_jitter)
        return images if labels is None else (images, labels)

    # ------------------------------------------------------------------------------------------------
    # checkpoint state: where the training sampler is inside its epoch, for an exact mid-epoch resume.
    # (Through the DataModule's hooks rather than a stateful DataLoader: Lightning 2.6 does not restore a
    # loader's state when configure_optimizers asks for estimated_stepping_batches first, as OneCycleLR
    # does - Lightning-AI/pytorch-lightning#20550.)

    def state_dict(self) -> dict:
        fitting = self.trainer is not None and self.trainer.state.fn == "fit" and self.train_sampler is not None
        return {"train_sampler": self.train_sampler.state_dict()} if fitting else {}

    def load_state_dict(self, state: dict) -> None:
        if "train_sampler" not in state:
            return
        if self.train_sampler is not None:
            self.train_sampler.load_state_dict(state["train_sampler"])
        else:
            self._sampler_state = state["train_sampler"]

    # ------------------------------------------------------------------------------------------------

    def _setup_predict_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DataError(f"--data.predict_dir {folder} is not a folder; pass a folder of image files")
        self.predict_names, images, self.predict_skipped = read_folder(
            folder, self.image_shape, fashion_like=self.fashion_like_predict
        )
        for name, why in self.predict_skipped.items():
            print(f"skipped {folder / name}: {why}", file=sys.stderr)
        if not self.predict_names:
            raise DataError(f"no readable image files in {folder}; pass a folder of PNG or JPEG files")
        unknown = torch.full((len(images),), -1)  # no labels for the user's images
        self.predict_set = ImageBatches(images, unknown)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        # its own generator: creating an iterator must not draw from the global RNG (exact resume)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=keep_batch,
            generator=torch.Generator().manual_seed(self.seed),
        )


class FashionMNISTDataModule(InMemoryImages):
    """Fashion-MNIST: 55,000 train / 5,000 val (seeded split of the 60k set), 10,000 test, 1x28x28 grey;
    predict = test or a folder of image files (made to look like Fashion-MNIST: light object on black)."""

    fashion_like_predict = True

    def __init__(
        self,
        data_dir: str = "data",  # holds the IDX files and/or the uint8 cache
        batch_size: int = 256,  # training images per optimizer step (per process under DDP)
        eval_batch_size: int = 1000,  # images per validation / test / predict step
        val_size: int = 5000,  # images held out of the 60k training set
        seed: int = 42,  # fixes the train/val split and the shuffle order of every epoch
        download: bool = True,  # allow torchvision's download when no local copy is found
        data_on_device: bool = False,  # keep the whole uint8 data set on the training device (GPU) and batch
        # there: no host-to-device copy per step
        crop_padding: int = 0,  # training only: shift each image by up to this many pixels (random crop), 0 = off
        hflip: bool | Literal["alternate"] = False,  # training only: mirror each image left-right with probability
        # 0.5; "alternate": every image mirrored every other epoch (airbench's derandomised flip)
        predict_dir: str | None = None,  # predict: a folder of image files (PNG, JPEG, ...); None = the test set
    ):
        super().__init__(batch_size, eval_batch_size, seed, data_on_device, crop_padding, hflip, predict_dir)
        if not 0 <= val_size < TRAIN_SIZE:
            raise ValueError(f"--data.val_size must be between 0 and {TRAIN_SIZE - 1}, got {val_size}")
        self.save_hyperparameters()
        self.data_dir, self.val_size, self.download = Path(data_dir), val_size, download
        self.class_names = list(CLASS_NAMES)
        self.image_shape = (1, 28, 28)
        self.mean, self.std = MEAN, STD

    def prepare_data(self) -> None:
        prepare(self.data_dir, self.download)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        arrays = load_cache(self.data_dir)
        train_idx, val_idx = split_indices(len(arrays["train_labels"]), self.val_size, self.seed)
        images, labels = arrays["train_images"].unsqueeze(1), arrays["train_labels"]  # (60000, 1, 28, 28) a view
        return {
            "train": (images[train_idx], labels[train_idx]),
            "val": (images[val_idx], labels[val_idx]),
            "test": (arrays["test_images"].unsqueeze(1), arrays["test_labels"]),
        }
