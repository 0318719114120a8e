"""The data path: IDX parsing, checksums, sources, the cache, splits and batches."""

import gzip
import os

import pytest
import torch

from conftest import write_synthetic_idx
from fashion_mnist_lightning import data
from fashion_mnist_lightning.data import DataError, FashionMNISTDataModule


def make_datamodule(data_dir, **kwargs) -> FashionMNISTDataModule:
    kwargs = {"val_size": 100, "batch_size": 64, "eval_batch_size": 50, "download": False, **kwargs}
    dm = FashionMNISTDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_idx_round_trip():
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (7,), dtype=torch.uint8)
    assert torch.equal(data.parse_idx(data.encode_idx(images), "x", 3), images)
    assert torch.equal(data.parse_idx(data.encode_idx(labels), "y", 1), labels)


def test_idx_header_is_the_published_format():
    raw = data.encode_idx(torch.zeros(2, 28, 28, dtype=torch.uint8))
    assert raw[:16] == bytes.fromhex("00000803" "00000002" "0000001c" "0000001c")


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


def test_split_sizes_and_no_overlap(synthetic_dir):
    dm = make_datamodule(synthetic_dir)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (500, 100, 100)
    train_idx, val_idx = data.split_indices(600, 100, seed=dm.seed)
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(600))


def test_split_is_deterministic_and_changes_with_seed():
    a, b, c = (data.split_indices(60_000, 5_000, seed) for seed in (42, 42, 43))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_split_same_across_datamodule_instances(synthetic_dir):
    first, second = make_datamodule(synthetic_dir), make_datamodule(synthetic_dir)
    assert torch.equal(first.val_set.images, second.val_set.images)
    assert not torch.equal(first.val_set.images, make_datamodule(synthetic_dir, seed=7).val_set.images)


def test_shuffle_depends_only_on_seed_and_epoch():
    a, b = data.EpochShuffle(1000, seed=3), data.EpochShuffle(1000, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(1000))
    a.set_epoch(0)
    assert list(a) == first


def batches(sampler: data.EpochShuffle, size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_two_process_shards_make_up_the_one_process_batches():
    """DDP: at every step the two processes' batches together are the one-process batch of twice the size."""
    single = batches(data.EpochShuffle(1000, seed=3, batch_size=64), 64)
    ranks = [batches(data.EpochShuffle(1000, seed=3, batch_size=32, replicas=2, rank=r), 32) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, whole in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(whole)
        assert not set(ranks[0][step]) & set(ranks[1][step])


def test_uneven_size_is_padded_so_every_process_gets_the_same_count():
    shards = [list(data.EpochShuffle(1001, seed=0, batch_size=10, replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 501 and set(shards[0]) | set(shards[1]) == set(range(1001))


def test_resume_at_skips_what_was_done_in_that_epoch_only():
    sampler = data.EpochShuffle(100, seed=1, batch_size=10)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume_at(epoch=2, done=30)
    assert list(sampler) == full[30:]
    assert list(sampler) == full  # once only
    sampler.resume_at(epoch=1, done=30)
    assert list(sampler) == full  # another epoch: nothing skipped


def test_batches_shapes_dtypes_and_range(synthetic_dir):
    dm = make_datamodule(synthetic_dir)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (64,) and labels.dtype == torch.int64
    floats, same_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert floats.dtype == torch.float32 and floats.shape == (64, 1, 28, 28)
    assert 0.0 <= floats.min() and floats.max() <= 1.0 and floats.max() > 0.9
    assert torch.equal(floats, images.float() / 255) and torch.equal(same_labels, labels)
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sum(sizes) == 500 and max(sizes) == 64


def test_one_epoch_covers_the_train_set_once(synthetic_dir):
    dm = make_datamodule(synthetic_dir)
    seen = torch.cat([images.flatten(1) for images, _ in dm.train_dataloader()])
    assert len(seen) == len(dm.train_set)
    assert torch.equal(seen.unique(dim=0), dm.train_set.images.flatten(1).unique(dim=0))


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


def test_real_data_sizes_and_classes(real_data_dir):
    dm = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    assert torch.bincount(dm.test_set.labels).tolist() == [1000] * 10
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (256, 1, 28, 28) and images.dtype == torch.uint8
