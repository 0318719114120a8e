"""`fashion-mnist predict` on a folder of the user's files: a CSV row for every file, bad ones included."""

import csv
import os

import numpy as np
from PIL import Image

from fashion_mnist_lightning.data.files import CLASS_NAMES, load_cache


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_predict_folder_matches_the_test_set_and_gives_every_file_a_row(workspace, real_data_dir):
    workspace.run("fashion-mnist fit --config configs/fast.yaml")
    images = load_cache(real_data_dir)["test_images"][:40]
    folder = workspace.path / "my_photos"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.numpy()).save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    (folder / "gone.png").symlink_to(workspace.path / "nowhere.png")
    weird = os.fsencode(folder) + b"/caf\xe9.png"  # a name that is not valid UTF-8
    Image.fromarray(images[0].numpy()).save(weird.decode("utf-8", "surrogateescape"))

    result = workspace.run(
        "fashion-mnist predict --config configs/fast.yaml --ckpt_path last --data.predict_dir my_photos/"
    )
    assert "skipped" in result.output
    rows = read_rows(workspace.runs()[0] / "evaluations/predict_0/predictions.csv")
    assert list(rows[0].keys()) == ["file", "predicted", "probability", *CLASS_NAMES, "error"]
    assert len(rows) == 40 + 4  # every file once: 40 images, the odd name, notes, broken, dangling link
    good = [r for r in rows if not r["error"]]
    assert [r["file"] for r in good[:40]] == [f"{i:03d}.png" for i in range(40)]
    assert good[40]["file"] == "caf\\udce9.png"  # the undecodable byte, escaped
    assert {r["file"] for r in rows if r["error"]} == {"notes.txt", "broken.jpg", "gone.png"}
    for r in good:
        probabilities = [float(r[name]) for name in CLASS_NAMES]
        assert abs(sum(probabilities) - 1) < 1e-4 and float(r["probability"]) == max(probabilities)
        assert r["predicted"] == CLASS_NAMES[int(np.argmax(probabilities))]

    workspace.run("fashion-mnist predict --config configs/fast.yaml --ckpt_path last")  # the 10k test set
    direct = read_rows(workspace.runs()[0] / "evaluations/predict_1/predictions.csv")
    assert len(direct) == 10_000 and direct[0]["file"] == "test[0]"
    assert [r["predicted"] for r in good[:40]] == [r["predicted"] for r in direct[:40]]


def test_predict_dir_that_is_not_a_folder_is_one_line_and_leaves_no_folder(workspace):
    workspace.run("fashion-mnist fit --config configs/fast.yaml --trainer.limit_train_batches=5")
    result = workspace.run(
        "fashion-mnist predict --config configs/fast.yaml --ckpt_path last --data.predict_dir nope/", expect=2
    )
    assert "is not a folder" in result.error
    assert not (workspace.runs()[0] / "evaluations").exists()
