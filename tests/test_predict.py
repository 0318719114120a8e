"""Predicting real image files: the Fashion-MNIST-style conversion, the CSV, and unreadable files."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_mnist_lightning.cli import main
from fashion_mnist_lightning.data import CLASS_NAMES, load_cache
from fashion_mnist_lightning.images import fashion_mnist_like

ROOT = Path(__file__).resolve().parents[1]
FAST = str(ROOT / "configs" / "fast.yaml")


def test_a_light_background_colour_image_is_inverted_trimmed_and_centred():
    dark = torch.zeros(28, 28, dtype=torch.uint8)
    dark[6:22, 10:18] = 200  # a light 16x8 object on black
    big = np.kron(255 - dark.numpy(), np.ones((4, 4), dtype=np.uint8))  # dark object on white, 112x112
    rgb = Image.fromarray(np.stack([big] * 3, axis=-1))
    out = fashion_mnist_like(rgb)
    assert out.shape == (28, 28) and out.dtype == torch.uint8
    assert out[:, :5].max() == 0 and out[:, -5:].max() == 0  # background dark again beside the object
    rows, cols = torch.nonzero(out > 100, as_tuple=True)
    assert rows.min() == 0 and rows.max() == 27  # longest edge fills 28 px
    assert abs((cols.min() + cols.max()).item() / 2 - 13.5) <= 1  # centred


def test_a_fashion_mnist_image_saved_as_png_is_used_unchanged(tmp_path, real_data_dir):
    image = load_cache(real_data_dir)["test_images"][0]
    Image.fromarray(image.numpy()).save(tmp_path / "a.png")
    assert torch.equal(fashion_mnist_like(Image.open(tmp_path / "a.png")), image)


@pytest.fixture
def trained(tmp_path, monkeypatch, real_data_dir) -> Path:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", FAST, "--trainer.enable_progress_bar=false",
                 f"--data.data_dir={real_data_dir}"]) == 0
    return tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"


def predict(ckpt: Path, real_data_dir: Path, *extra: str) -> list[dict]:
    assert main(["predict", "--config", FAST, f"--ckpt_path={ckpt}", "--trainer.enable_progress_bar=false",
                 f"--data.data_dir={real_data_dir}", *extra]) == 0
    newest = sorted(Path("lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    with open(newest / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_predict_folder_matches_the_test_set_and_reports_bad_files(trained, tmp_path, real_data_dir, capsys):
    images = load_cache(real_data_dir)["test_images"][:40]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.numpy()).save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)

    rows = predict(trained, real_data_dir, f"--data.predict_dir={folder}")
    assert list(rows[0].keys()) == ["file", "predicted", "probability", *CLASS_NAMES, "error"]
    good = [r for r in rows if not r["error"]]
    assert [r["file"] for r in good] == [f"{i:03d}.png" for i in range(40)]
    assert {r["file"] for r in rows if r["error"]} == {"notes.txt", "broken.jpg"}
    assert "skipped" in capsys.readouterr().err
    for r in good:
        probabilities = [float(r[name]) for name in CLASS_NAMES]
        assert abs(sum(probabilities) - 1) < 1e-4 and float(r["probability"]) == max(probabilities)
        assert r["predicted"] == CLASS_NAMES[int(np.argmax(probabilities))]

    direct = predict(trained, real_data_dir)  # no predict_dir: the 10k test set
    assert len(direct) == 10_000 and direct[0]["file"] == "test[0]"
    assert [r["predicted"] for r in good] == [r["predicted"] for r in direct[:40]]


def test_predict_dir_that_is_not_a_folder_is_one_line(trained, real_data_dir, capsys, tmp_path):
    assert main(["predict", "--config", FAST, f"--ckpt_path={trained}", "--trainer.enable_progress_bar=false",
                 f"--data.data_dir={real_data_dir}", f"--data.predict_dir={tmp_path / 'nope'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err
