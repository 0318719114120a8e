"""datamodule.py: the split sizes, batches as uint8 until the device, augmentation only while training."""

import pytest
import torch

from fashion_mnist_lightning.data.sampler import split_indices
from fashion_mnist_lightning.datamodule import FashionMNISTDataModule


def make_datamodule(data_dir, **kwargs) -> FashionMNISTDataModule:
    kwargs = {"val_size": 100, "batch_size": 64, "eval_batch_size": 50, "download": False, **kwargs}
    dm = FashionMNISTDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_split_sizes_and_no_overlap(synthetic_dir):
    dm = make_datamodule(synthetic_dir)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (500, 100, 100)
    train_idx, val_idx = split_indices(600, 100, seed=dm.seed)
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(600))


def test_split_same_across_datamodule_instances(synthetic_dir):
    first, second = make_datamodule(synthetic_dir), make_datamodule(synthetic_dir)
    assert torch.equal(first.val_set.images, second.val_set.images)
    assert not torch.equal(first.val_set.images, make_datamodule(synthetic_dir, seed=7).val_set.images)


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


def test_real_data_sizes_and_classes(real_data_dir):
    dm = FashionMNISTDataModule(data_dir=str(real_data_dir), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    assert torch.bincount(dm.test_set.labels).tolist() == [1000] * 10
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (256, 1, 28, 28) and images.dtype == torch.uint8


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"batch_size": 0}, "--data.batch_size"),
        ({"eval_batch_size": -1}, "--data.eval_batch_size"),
        ({"val_size": 60_000}, "--data.val_size"),
        ({"crop_padding": -2}, "--data.crop_padding"),
    ],
)
def test_values_that_cannot_work_are_refused_naming_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        FashionMNISTDataModule(**kwargs)
