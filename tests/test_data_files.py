"""data/files.py: IDX parsing, checksums, sources and the verified uint8 cache."""

import gzip
import os

import pytest
import torch

from conftest import write_synthetic_idx
from fashion_mnist_lightning.data import files as data
from fashion_mnist_lightning.data.files import DataError


def test_idx_round_trip():
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (7,), dtype=torch.uint8)
    assert torch.equal(data.parse_idx(data.encode_idx(images), "x", 3), images)
    assert torch.equal(data.parse_idx(data.encode_idx(labels), "y", 1), labels)


def test_idx_header_is_the_published_format():
    raw = data.encode_idx(torch.zeros(2, 28, 28, dtype=torch.uint8))
    assert raw[:16] == bytes.fromhex("00000803000000020000001c0000001c")


def test_wrong_magic_is_named(synthetic_dir):
    path = synthetic_dir / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[2] = 0x0D  # float instead of unsigned byte
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="wrong IDX magic"):
        data.prepare(synthetic_dir, download=False)


def test_truncated_gz_is_named(synthetic_dir):
    path = synthetic_dir / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot be read"):
        data.prepare(synthetic_dir, download=False)
    assert path.stat().st_size == 500  # the user's file is left as it was


def test_checksum_mismatch_names_file_and_both_hashes(synthetic_dir, monkeypatch):
    wrong = "0" * 64
    monkeypatch.setitem(data.IDX_SHA256, "train-images-idx3-ubyte", wrong)
    before = (synthetic_dir / "train-images-idx3-ubyte.gz").read_bytes()
    with pytest.raises(DataError) as err:
        data.prepare(synthetic_dir, download=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and wrong in message
    assert data.sha256(gzip.decompress(before)) in message
    assert "\n" not in message
    assert (synthetic_dir / "train-images-idx3-ubyte.gz").read_bytes() == before


def test_missing_data_error_lists_places_and_fixes(tmp_path, no_system_data):
    with pytest.raises(DataError) as err:
        data.prepare(tmp_path / "empty", download=False)
    message = str(err.value)
    assert str(tmp_path / "empty") in message
    assert str(data.SYSTEM_DATA_DIR) in message
    assert "torchvision download" in message and "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


def test_image_label_count_mismatch(tmp_path, monkeypatch, no_system_data):
    folder = tmp_path / "data"
    hashes = write_synthetic_idx(folder)
    labels = data.encode_idx(torch.zeros(599, dtype=torch.uint8))
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    monkeypatch.setattr(data, "IDX_SHA256", {**hashes, "train-labels-idx1-ubyte": data.sha256(labels)})
    with pytest.raises(DataError, match="600 images but 599 labels"):
        data.prepare(folder, download=False)


def test_plain_idx_files_are_found(tmp_path, monkeypatch, no_system_data):
    monkeypatch.setattr(data, "IDX_SHA256", write_synthetic_idx(tmp_path, gz=False))
    arrays = data.load_cache(data.prepare(tmp_path, download=False).parent)
    assert arrays["train_images"].shape == (600, 28, 28) and arrays["test_labels"].shape == (100,)


def test_system_copy_is_used_when_data_dir_is_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setattr(data, "IDX_SHA256", write_synthetic_idx(tmp_path / "system"))
    cache = data.prepare(tmp_path / "mine", download=False)
    assert cache.parent == tmp_path / "mine" and cache.is_file()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [data.CACHE_NAME]


def test_cache_is_reused_and_a_corrupt_one_rebuilt(synthetic_dir):
    cache = data.prepare(synthetic_dir, download=False)
    stamp = cache.stat().st_mtime_ns
    assert data.prepare(synthetic_dir, download=False) == cache and cache.stat().st_mtime_ns == stamp
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated
    data.prepare(synthetic_dir, download=False)
    assert data.cache_is_valid(data.read_cache(cache))


def test_stale_cache_is_rebuilt(synthetic_dir):
    cache = data.prepare(synthetic_dir, download=False)
    arrays = data.read_cache(cache)
    arrays["train_images"][0, 0, 0] ^= 1  # one flipped bit: no longer the verified data
    torch.save(arrays, cache)
    assert not data.cache_is_valid(data.read_cache(cache))
    data.prepare(synthetic_dir, download=False)
    assert data.cache_is_valid(data.read_cache(cache))


def test_class_names():
    assert data.CLASS_NAMES[0] == "T-shirt/top" and data.CLASS_NAMES[9] == "Ankle boot"
    assert len(set(data.CLASS_NAMES)) == 10


def test_unwritable_data_dir_is_a_clear_error(synthetic_dir):
    if os.geteuid() == 0:
        target = synthetic_dir / "file-not-dir"
        target.write_text("x")
        data_dir = target / "sub"  # a folder below a file can never be created, even by root
    else:
        synthetic_dir.chmod(0o500)
        data_dir = synthetic_dir
    with pytest.raises(DataError, match="cannot write the data cache"):
        data.write_cache(data_dir / data.CACHE_NAME, {})
