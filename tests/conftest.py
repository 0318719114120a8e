"""Shared fixtures: a tiny synthetic IDX data set, and the real data when this machine has it."""

import gzip
import os
from pathlib import Path

import pytest
import torch

from fashion_mnist_lightning import data
from fashion_mnist_lightning.cli import main

REAL_DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def write_synthetic_idx(folder: Path, n_train: int = 600, n_test: int = 100, gz: bool = True) -> dict:
    """Write the four IDX files of a tiny random data set; return {stem: sha256 of the decompressed file}."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    hashes = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        for stem, tensor in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            raw = data.encode_idx(tensor)
            hashes[stem] = data.sha256(raw)
            if gz:
                with gzip.open(folder / f"{stem}.gz", "wb") as f:
                    f.write(raw)
            else:
                (folder / stem).write_bytes(raw)
    return hashes


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Hide the Debian system copy so only what a test writes is found."""
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "no-system-copy")


@pytest.fixture
def synthetic_dir(tmp_path, monkeypatch, no_system_data) -> Path:
    """A data_dir holding a tiny synthetic Fashion-MNIST whose hashes are the pinned ones for this test."""
    folder = tmp_path / "data"
    monkeypatch.setattr(data, "IDX_SHA256", write_synthetic_idx(folder))
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data set, cached by `make data`. Outside CI a missing copy skips; in CI it fails."""
    try:
        data.prepare(REAL_DATA_DIR, download=False)
    except data.DataError as err:
        if os.environ.get("CI"):
            pytest.fail(f"real Fashion-MNIST is required in CI: {err}")
        pytest.skip(f"real Fashion-MNIST not present ({err}); run `make data`")
    return REAL_DATA_DIR


@pytest.fixture
def run_dir(tmp_path, monkeypatch, real_data_dir):
    """Run the CLI inside tmp_path so lightning_logs/ lands there; return a function that runs it."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> int:
        return main([*args, "--trainer.enable_progress_bar=false", f"--data.data_dir={real_data_dir}"])

    run.path = tmp_path
    return run
