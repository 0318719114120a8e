"""Fashion-MNIST as uint8 tensors: find the IDX files, verify them, cache them, split them, batch them.

Where the raw files come from, first hit wins:
  1. ``data_dir`` (default ``data/``) holding the four IDX files, gzipped or not
     (also ``data_dir/FashionMNIST/raw``, where torchvision's download puts them);
  2. the system copy from Debian's ``dataset-fashion-mnist`` package;
  3. torchvision's download into ``data_dir`` (needs internet).
The files are verified against pinned SHA-256 values and parsed once into ``data_dir/fashion-mnist-uint8.pt``.
Nothing here ever deletes or rewrites a file it did not create.
"""

import argparse
import gzip
import hashlib
import struct
import sys
import zlib
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from fashion_mnist_lightning.augment import augment_batch
from fashion_mnist_lightning.checkpoint_io import atomic_torch_save
from fashion_mnist_lightning.images import read_folder

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the *decompressed* IDX files as Zalando published them; gz bytes differ between compressors.
IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CACHE_NAME = "fashion-mnist-uint8.pt"
CACHE_FORMAT = 1  # bump when the cache layout changes; older caches are then rebuilt
SPLITS = {"train": "train", "test": "t10k"}  # cache key -> IDX file prefix
FIX_HINT = (
    "put the four Fashion-MNIST IDX files (gz or not) in {data_dir}, or install Debian's copy with "
    "`sudo apt-get install dataset-fashion-mnist` (or `make data`), or rerun with internet access"
)


class DataError(RuntimeError):
    """A problem with the user's data files, stated in one line with its fix."""


# ----------------------------------------------------------------------------------------------------
# IDX files: parse, encode, read, verify

def parse_idx(raw: bytes, name: str, ndim: int) -> torch.Tensor:
    """IDX bytes -> uint8 tensor. Header: 0x00 0x00 0x08 (unsigned byte) ndim, then ndim big-endian uint32 sizes."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{name}: wrong IDX magic {raw[:4].hex() or 'empty'}, expected 0000080{ndim}; "
                        "it is not the original file, replace it with the original")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = memoryview(raw)[4 + 4 * ndim:]
    if len(payload) != _prod(dims):
        raise DataError(f"{name}: header says {'x'.join(map(str, dims))} = {_prod(dims)} bytes of data but the "
                        f"file holds {len(payload)}; the file is truncated or corrupt, replace it with the original")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(dims)


def encode_idx(tensor: torch.Tensor) -> bytes:
    """uint8 tensor -> IDX bytes; the exact inverse of ``parse_idx``."""
    header = bytes([0, 0, 8, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def read_idx_file(path: Path) -> bytes:
    """The decompressed bytes of an IDX file, gzipped or not."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: cannot be read ({err}); the download is truncated or the file is corrupt, "
                        "replace it with the original") from err


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def verify(raw: bytes, stem: str, path: Path) -> None:
    expected, actual = IDX_SHA256[stem], sha256(raw)
    if actual != expected:
        raise DataError(f"{path}: SHA-256 of the decompressed file is {actual}, expected {expected}; "
                        "the file is corrupt or not the original Fashion-MNIST, replace it "
                        "(this program never deletes it for you)")


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


# ----------------------------------------------------------------------------------------------------
# Finding the raw files: data_dir -> system copy -> torchvision download

def candidate_dirs(data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / "FashionMNIST" / "raw", SYSTEM_DATA_DIR]


def find_raw(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain preferred over .gz), or None when any is missing."""
    found = {}
    for stem in IDX_SHA256:
        for path in (folder / stem, folder / f"{stem}.gz"):
            if path.is_file():
                found[stem] = path
                break
    return found if len(found) == len(IDX_SHA256) else None


def locate_raw(data_dir: Path, download: bool) -> dict[str, Path]:
    tried = []
    for folder in candidate_dirs(data_dir):
        found = find_raw(folder)
        if found:
            return found
        tried.append(f"{folder} (not all four files)")
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(data_dir), train=True, download=True)
            found = find_raw(data_dir / "FashionMNIST" / "raw")
            if found:
                return found
            tried.append("torchvision download (finished without the files)")
        except Exception as err:  # noqa: BLE001 - any download failure becomes the one error below
            tried.append(f"torchvision download ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
    else:
        tried.append("torchvision download (off: download=False)")
    raise DataError(f"Fashion-MNIST not found; tried {'; '.join(tried)}. To fix: "
                    + FIX_HINT.format(data_dir=data_dir))


def load_raw(data_dir: Path, download: bool = True) -> dict[str, torch.Tensor]:
    """Find, verify and parse the four IDX files into {'train_images': (60000, 28, 28) uint8, ...}."""
    paths = locate_raw(data_dir, download)
    arrays = {}
    for key, prefix in SPLITS.items():
        for kind, ndim in (("images", 3), ("labels", 1)):
            stem = f"{prefix}-{kind}-idx{ndim}-ubyte"
            raw = read_idx_file(paths[stem])
            arrays[f"{key}_{kind}"] = parse_idx(raw, str(paths[stem]), ndim)
            verify(raw, stem, paths[stem])
        n_images, n_labels = len(arrays[f"{key}_images"]), len(arrays[f"{key}_labels"])
        if n_images != n_labels:
            raise DataError(f"{key} set: {n_images} images but {n_labels} labels in {paths[stem].parent}; "
                            "the files do not belong together, replace them with the originals")
    return arrays


# ----------------------------------------------------------------------------------------------------
# The uint8 cache: written once, verified against the pinned hashes, rebuilt when stale or corrupt

def cache_is_valid(arrays: dict) -> bool:
    """True when the cached tensors re-encode to IDX files with exactly the pinned SHA-256 values."""
    try:
        if arrays.get("format") != CACHE_FORMAT:
            return False
        for key, prefix in SPLITS.items():
            for kind, ndim in (("images", 3), ("labels", 1)):
                tensor = arrays[f"{key}_{kind}"]
                if tensor.dtype != torch.uint8 or tensor.dim() != ndim:
                    return False
                if sha256(encode_idx(tensor)) != IDX_SHA256[f"{prefix}-{kind}-idx{ndim}-ubyte"]:
                    return False
        return True
    except (KeyError, AttributeError, TypeError):
        return False


def read_cache(path: Path) -> dict | None:
    """The cache as a dict of tensors, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 - a cache we cannot read is simply rebuilt
        return None


def write_cache(path: Path, arrays: dict) -> None:
    """Write atomically (checkpoint_io.atomic_torch_save): a reader sees the old cache or the new one."""
    try:
        atomic_torch_save({"format": CACHE_FORMAT, **arrays}, path)
    except OSError as err:
        raise DataError(f"cannot write the data cache in {path.parent} ({err.strerror}); "
                        "pass a writable folder with --data.data_dir") from err


def prepare(data_dir: str | Path, download: bool = True) -> Path:
    """Make sure ``data_dir`` holds a valid uint8 cache; return its path. The file work behind prepare_data."""
    data_dir = Path(data_dir)
    path = data_dir / CACHE_NAME
    cached = read_cache(path)
    if cached is None or not cache_is_valid(cached):
        write_cache(path, load_raw(data_dir, download))
    return path


def load_cache(data_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(data_dir) / CACHE_NAME
    arrays = read_cache(path)
    if arrays is None or arrays.get("format") != CACHE_FORMAT:
        raise DataError(f"no usable data cache at {path}; run prepare_data() first (the Trainer does), "
                        "or `make data`")
    return arrays


# ----------------------------------------------------------------------------------------------------
# Splits, batches and the DataModule

def split_indices(n_total: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (train, val) partition of range(n_total) that depends only on ``seed``."""
    if not 0 <= n_val < n_total:
        raise DataError(f"val_size={n_val} must be between 0 and {n_total - 1}; fix --data.val_size")
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


class ImageBatches(Dataset):
    """uint8 images (N, 28, 28) and int64 labels (N,) that hand out whole batches by index."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].unsqueeze(0), self.labels[i]  # (1, 28, 28) uint8, () int64

    def to(self, device: torch.device | str) -> "ImageBatches":
        """Move the whole data set to ``device`` once (uint8: 4x less memory and bandwidth than float)."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.labels.device)
        return self.images[index].unsqueeze(1), self.labels[index]  # (B, 1, 28, 28) uint8, (B,) int64


def keep_batch(batch):
    """collate_fn for ImageBatches: ``__getitems__`` already returns a stacked batch."""
    return batch


class EpochShuffle(DistributedSampler):
    """This process's share of a random order of range(size) that depends only on (seed, epoch).

    With ``replicas`` processes (DDP), global step t covers order[t*B*R : (t+1)*B*R] and process ``rank``
    takes the rank-th block of B = ``batch_size`` of it: together the processes see exactly the batches one
    process with batch B*R sees, each image once per epoch (the last, partial step is split evenly; a size
    not divisible by R is padded by repeating the first images). With R = 1 this is plain ``randperm``.
    A DistributedSampler subclass, so Lightning uses it as is instead of wrapping it in its own.

    ``resume_at(epoch, done)`` skips the first ``done`` of this process's indices in that epoch once: what
    a mid-epoch checkpoint needs to continue from the exact batch where it stopped.
    """

    def __init__(self, size: int, seed: int, batch_size: int = 1, replicas: int = 1, rank: int = 0):
        super().__init__(range(size), num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
        self.size, self.batch_size = size, batch_size
        self.resume: tuple[int, int] | None = None  # (epoch, indices already done)

    def resume_at(self, epoch: int, done: int) -> None:
        self.resume = (epoch, done)

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas)  # ceil: the padded share

    def indices(self) -> torch.Tensor:
        """All of this process's indices for the current epoch, in order. (len(self),) int64."""
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        replicas, step = self.num_replicas, self.batch_size * self.num_replicas
        order = torch.cat([order, order[: len(self) * replicas - self.size]])  # pad to a multiple of R
        full = len(order) // step * step
        head = order[:full].view(-1, replicas, self.batch_size)[:, self.rank]  # (steps, B)
        tail = order[full:].view(replicas, -1)[self.rank]  # (rest / R,)
        return torch.cat([head.reshape(-1), tail])

    def __iter__(self):
        mine = self.indices()
        if self.resume is not None:
            epoch, done = self.resume
            self.resume = None
            if epoch == self.epoch:
                mine = mine[done:]
        return iter(mine.tolist())


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST: 55,000 train / 5,000 val (seeded split of the 60k set), 10,000 test; predict = test.

    Batches are (images uint8 (B, 1, 28, 28), labels int64 (B,)) until they reach the device; then
    ``on_after_batch_transfer`` turns the images into float in [0, 1], what the model's ``forward`` takes.
    """

    def __init__(
        self,
        data_dir: str = "data",  # holds the IDX files and/or the uint8 cache
        batch_size: int = 256,  # training images per step
        eval_batch_size: int = 1000,  # images per validation / test / predict step
        val_size: int = 5000,  # images held out of the 60k training set
        seed: int = 42,  # fixes the train/val split and the shuffle order of every epoch
        download: bool = True,  # allow torchvision's download when no local copy is found
        num_workers: int = 0,  # the data set is one in-memory tensor; workers only add overhead
        data_on_device: bool = False,  # keep the whole uint8 data set on the training device (GPU) and batch
        # there: no host-to-device copy per step
        crop_padding: int = 0,  # training only: shift each image by up to this many pixels (random crop), 0 = off
        hflip: bool = False,  # training only: mirror each image left-right with probability 0.5
        predict_dir: str | None = None,  # predict: a folder of image files (PNG, JPEG, ...); None = the test set
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.seed, self.download, self.num_workers = val_size, seed, download, num_workers
        self.data_on_device = data_on_device
        self.crop_padding, self.hflip = crop_padding, hflip
        self._resume_position: tuple[int, int] | None = None  # (epoch, samples done) from a checkpoint
        self.predict_dir = predict_dir
        self.predict_names: list[str] = []  # one per predicted image, in order
        self.predict_skipped: dict[str, str] = {}  # file name -> why it could not be read
        self.class_names = CLASS_NAMES

    def prepare_data(self) -> None:
        prepare(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_dir is not None:
            self._setup_predict_folder(Path(self.predict_dir))
        if hasattr(self, "test_set"):
            return
        arrays = load_cache(self.data_dir)
        train_idx, val_idx = split_indices(len(arrays["train_labels"]), self.val_size, self.seed)
        images, labels = arrays["train_images"], arrays["train_labels"]
        self.train_set = ImageBatches(images[train_idx], labels[train_idx])
        self.val_set = ImageBatches(images[val_idx], labels[val_idx])
        self.test_set = ImageBatches(arrays["test_images"], arrays["test_labels"])
        if self.data_on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            for dataset in (self.train_set, self.val_set, self.test_set):
                dataset.to(device)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochShuffle(len(self.train_set), self.seed, self.batch_size, replicas, rank)
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
            self._resume_position = None
        return self._loader(self.train_set, self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            self.predict_names = [f"test[{i}]" for i in range(len(self.test_set))]
        return self._loader(getattr(self, "predict_set", self.test_set), self.eval_batch_size)

    def _setup_predict_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DataError(f"--data.predict_dir {folder} is not a folder; pass a folder of image files")
        self.predict_names, images, self.predict_skipped = read_folder(folder)
        for name, why in self.predict_skipped.items():
            print(f"skipped {folder / name}: {why}", file=sys.stderr)
        if not self.predict_names:
            raise DataError(f"no readable image files in {folder}; pass a folder of PNG or JPEG files")
        unknown = torch.full((len(images),), -1)  # no labels for the user's images
        self.predict_set = ImageBatches(images, unknown)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        workers = 0 if self.data_on_device else self.num_workers  # worker processes cannot share GPU tensors
        # its own generator: creating an iterator must not draw from the global RNG (exact resume)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=keep_batch,
                          num_workers=workers, persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))

    # ------------------------------------------------------------------------------------------------
    # checkpoint state: the position inside the training epoch, for an exact mid-epoch resume

    def state_dict(self) -> dict:
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # batches of this epoch
        return {"epoch": trainer.current_epoch, "samples_done": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume_position = (state["epoch"], state["samples_done"])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = images.float().div_(255)  # (B, 1, 28, 28) float in [0, 1]; labels (B,) int64
        if self.trainer is not None and self.trainer.training and (self.crop_padding or self.hflip):
            images = augment_batch(images, self.crop_padding, self.hflip)
        return images, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Find, verify and cache Fashion-MNIST (what `make data` runs).")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--no-download", dest="download", action="store_false")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless a valid cache or a local copy exists (no download)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if args.check:
        cached = read_cache(data_dir / CACHE_NAME)
        local = any(find_raw(folder) for folder in candidate_dirs(data_dir))
        return 0 if local or (cached is not None and cache_is_valid(cached)) else 1
    try:
        path = prepare(data_dir, args.download)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    arrays = load_cache(data_dir)
    print(f"Fashion-MNIST ready: {len(arrays['train_labels'])} train + {len(arrays['test_labels'])} test "
          f"images, verified, cached in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
