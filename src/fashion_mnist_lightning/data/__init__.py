"""Data plumbing behind ``FashionMNISTDataModule``: the IDX files and their cache, the sampler, the batch
augmentation, and reading real image files for ``predict``. The DataModule itself is ``datamodule.py``."""

from fashion_mnist_lightning.data.files import CLASS_NAMES, DataError

__all__ = ["CLASS_NAMES", "DataError"]
