"""Fashion-MNIST files: find the four IDX files, verify them against pinned SHA-256 values, cache them as uint8.

Where the raw files come from, first hit wins:
  1. ``data_dir`` (default ``data/``) holding the four IDX files, gzipped or not
     (also ``data_dir/FashionMNIST/raw``, where torchvision's download puts them);
  2. the system copy from Debian's ``dataset-fashion-mnist`` package;
  3. torchvision's download into ``data_dir`` (needs internet).
The files are verified against pinned SHA-256 values and parsed once into ``data_dir/fashion-mnist-uint8.pt``.
Nothing here ever deletes or rewrites a file it did not create.
"""

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import torch

from fashion_mnist_lightning.errors import UserError
from fashion_mnist_lightning.runs.checkpoint_io import atomic_torch_save

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
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


class DataError(UserError, RuntimeError):
    """A problem with the user's data files, stated in one line with its fix."""


# ----------------------------------------------------------------------------------------------------
# IDX files: parse, encode, read, verify


def parse_idx(raw: bytes, name: str, ndim: int) -> torch.Tensor:
    """IDX bytes -> uint8 tensor. Header: 0x00 0x00 0x08 (unsigned byte) ndim, then ndim big-endian uint32 sizes."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(
            f"{name}: wrong IDX magic {raw[:4].hex() or 'empty'}, expected 0000080{ndim}; "
            "it is not the original file, replace it with the original"
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    payload = memoryview(raw)[4 + 4 * ndim :]
    if len(payload) != _prod(dims):
        raise DataError(
            f"{name}: header says {'x'.join(map(str, dims))} = {_prod(dims)} bytes of data but the "
            f"file holds {len(payload)}; the file is truncated or corrupt, replace it with the original"
        )
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
        raise DataError(
            f"{path}: cannot be read ({err}); the download is truncated or the file is corrupt, "
            "replace it with the original"
        ) from err


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def verify(raw: bytes, stem: str, path: Path) -> None:
    expected, actual = IDX_SHA256[stem], sha256(raw)
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 of the decompressed file is {actual}, expected {expected}; "
            "the file is corrupt or not the original Fashion-MNIST, replace it "
            "(this program never deletes it for you)"
        )


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
    raise DataError(f"Fashion-MNIST not found; tried {'; '.join(tried)}. To fix: " + FIX_HINT.format(data_dir=data_dir))


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
            raise DataError(
                f"{key} set: {n_images} images but {n_labels} labels in {paths[stem].parent}; "
                "the files do not belong together, replace them with the originals"
            )
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
        raise DataError(
            f"cannot write the data cache in {path.parent} ({err.strerror}); "
            "pass a writable folder with --data.data_dir"
        ) from err


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
        raise DataError(f"no usable data cache at {path}; run prepare_data() first (the Trainer does), or `make data`")
    return arrays
