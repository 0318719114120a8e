"""data/folder.py: a user's own photos, one subfolder per class -> cached uint8 tensors, decoded again on change."""

import csv
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_mnist_lightning.data import folder
from fashion_mnist_lightning.data.files import DataError
from fashion_mnist_lightning.data.folder import load_folder, scan
from fashion_mnist_lightning.data.images import convert_image
from helpers.photos import write_photo_folder


def skipped_csv(cache_dir) -> list[list[str]]:
    (path,) = cache_dir.glob("*-skipped.csv")
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ----------------------------------------------------------------------------------------------------
# Layouts, classes, labels


def test_flat_layout_classes_are_the_sorted_folder_names_and_labels_their_index(tmp_path):
    root = write_photo_folder(tmp_path / "photos", classes=("zebra", "apple", "mango"), per_class=4)
    data = load_folder(root, tmp_path / "cache", 3, (32, 32))
    assert data["class_names"] == ["apple", "mango", "zebra"]
    assert data["train_images"].shape == (12, 3, 32, 32) and data["train_images"].dtype == torch.uint8
    assert data["train_labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4 and data["train_labels"].dtype == torch.int64
    assert "val_images" not in data and "test_images" not in data and data["skipped"] == {}
    first_zebra = sorted((root / "zebra").iterdir())[0]
    assert torch.equal(data["train_images"][8], convert_image(Image.open(first_zebra), 3, (32, 32)))
    assert skipped_csv(tmp_path / "cache") == [["file", "error"]]  # header only: nothing skipped


def test_split_layout_gives_train_val_and_test_labelled_by_the_train_classes(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=10, layout="split")  # 6 / 2 / 2 per class
    data = load_folder(root, tmp_path / "cache", 3, (32, 32))
    assert data["class_names"] == ["circle", "square", "triangle"]
    assert [len(data[f"{split}_images"]) for split in ("train", "val", "test")] == [18, 6, 6]
    assert data["val_labels"].tolist() == [0, 0, 1, 1, 2, 2] == data["test_labels"].tolist()
    assert scan(root).splits["val"][0] == (root / "val" / "circle" / "circle_006.png", 0)


def test_a_split_layout_without_val_has_no_val_split(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=5, layout="split")
    shutil.rmtree(root / "val")
    data = load_folder(root, tmp_path / "cache", 1, (16, 16))
    assert "val_images" not in data and len(data["test_labels"]) == 3 and len(data["train_labels"]) == 9


def test_hidden_entries_and_folders_inside_a_class_folder_are_ignored(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=3)
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / ".thumbnails").mkdir()
    (root / "circle" / "._circle_000.png").write_bytes(b"AppleDouble")
    (root / "circle" / "more").mkdir()
    shutil.copy(root / "circle" / "circle_000.png", root / "circle" / "more" / "deep.png")
    data = load_folder(root, tmp_path / "cache", 3, (16, 16))
    assert data["class_names"] == ["circle", "square", "triangle"] and len(data["train_labels"]) == 9
    assert data["skipped"] == {}


# ----------------------------------------------------------------------------------------------------
# Modes, sizes, formats


def test_colour_photos_load_as_grey_and_grey_photos_as_colour(tmp_path):
    colour = write_photo_folder(tmp_path / "colour", per_class=3)
    grey = load_folder(colour, tmp_path / "cache", 1, (40, 48))["train_images"]  # the files' own size
    files = sorted(colour.glob("*/*.png"))
    expected = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("L")))[None] for f in files])
    assert grey.shape == (9, 1, 40, 48) and torch.equal(grey, expected)
    grey_root = write_photo_folder(tmp_path / "grey", per_class=3, mode="L")
    rgb = load_folder(grey_root, tmp_path / "cache", 3, (40, 48))["train_images"]
    assert rgb.shape == (9, 3, 40, 48) and torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])


def test_each_size_and_channel_count_is_its_own_cache(tmp_path, capsys):
    root = write_photo_folder(tmp_path / "photos", per_class=3)
    colour = load_folder(root, tmp_path / "cache", 3, (32, 32))
    small = load_folder(root, tmp_path / "cache", 1, (16, 24))
    assert colour["train_images"].shape == (9, 3, 32, 32) and small["train_images"].shape == (9, 1, 16, 24)
    assert len(list((tmp_path / "cache").glob("folder-*.pt"))) == 2
    capsys.readouterr()
    assert torch.equal(load_folder(root, tmp_path / "cache", 3, (32, 32))["train_images"], colour["train_images"])
    assert "decoding" not in capsys.readouterr().err


def test_png_and_jpeg_files_load_side_by_side(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=4, fmt="mixed")
    assert {f.suffix for f in root.glob("*/*")} == {".png", ".jpg"}
    data = load_folder(root, tmp_path / "cache", 3, (24, 24))
    assert len(data["train_labels"]) == 12 and data["skipped"] == {}


def test_16_bit_and_transparent_photos_keep_their_grey_levels(tmp_path):
    sixteen = write_photo_folder(tmp_path / "sixteen", per_class=2, mode="I;16")
    assert Image.open(next(sixteen.glob("*/*.png"))).mode.startswith("I;16")
    dark = load_folder(sixteen, tmp_path / "cache", 1, (40, 48))["train_images"]
    assert dark.float().median() < 60  # a dark background, not clipped to white
    transparent = write_photo_folder(tmp_path / "rgba", per_class=2, mode="RGBA")
    grey = load_folder(transparent, tmp_path / "cache", 1, (40, 48))["train_images"]
    assert 110 < grey.float().median() < 160  # the half-transparent dark background, composited on white


# ----------------------------------------------------------------------------------------------------
# Unreadable files: a row each, never the whole folder


def test_a_corrupt_file_is_a_skipped_row_on_stderr_and_in_the_csv(tmp_path, capsys):
    root = write_photo_folder(tmp_path / "photos", per_class=4)
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    (root / "square" / "notes.txt").write_text("not an image")
    data = load_folder(root, tmp_path / "cache", 3, (24, 24))
    assert len(data["train_labels"]) == 12 and data["train_labels"].bincount().tolist() == [4, 4, 4]
    assert list(data["skipped"]) == ["square/broken.png", "square/notes.txt"]
    err = capsys.readouterr().err
    assert f"skipped {root / 'square' / 'broken.png'}: {data['skipped']['square/broken.png']}\n" in err
    assert f"skipped {root / 'square' / 'notes.txt'}: UnidentifiedImageError" in err
    assert skipped_csv(tmp_path / "cache") == [["file", "error"], *map(list, data["skipped"].items())]


def test_a_decompression_bomb_is_a_skipped_row_not_a_crash(tmp_path, monkeypatch):
    root = write_photo_folder(tmp_path / "photos", per_class=3)  # 40 x 48 = 1920 pixels each
    Image.new("RGB", (100, 100)).save(root / "circle" / "warns.png")  # over the limit: Pillow only warns
    Image.new("RGB", (200, 200)).save(root / "circle" / "refused.png")  # over twice the limit: Pillow refuses
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    data = load_folder(root, tmp_path / "cache", 3, (24, 24))
    assert sorted(data["skipped"]) == ["circle/refused.png", "circle/warns.png"]
    assert data["skipped"]["circle/refused.png"].startswith("DecompressionBombError")
    assert data["skipped"]["circle/warns.png"].startswith("DecompressionBombWarning")
    assert len(data["train_labels"]) == 9


# ----------------------------------------------------------------------------------------------------
# The cache: reused when nothing changed, never stale


def test_an_unchanged_folder_is_loaded_from_the_cache_without_decoding(tmp_path, capsys, monkeypatch):
    root = write_photo_folder(tmp_path / "photos", per_class=4)
    first = load_folder(root, tmp_path / "cache", 3, (24, 24))
    (cache,) = (tmp_path / "cache").glob("*.u8")
    assert capsys.readouterr().err == f"decoding 12 images from {root} into {cache}\n"
    decoded = []
    monkeypatch.setattr(folder, "convert_image", lambda *args: decoded.append(args))
    second = load_folder(root, tmp_path / "cache", 3, (24, 24))
    assert decoded == [] and capsys.readouterr().err == ""
    assert second["fingerprint"] == first["fingerprint"] and torch.equal(second["train_images"], first["train_images"])


def test_a_reused_cache_still_says_which_files_were_left_out(tmp_path, capsys):
    root = write_photo_folder(tmp_path / "photos", per_class=3)
    (root / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 20)
    load_folder(root, tmp_path / "cache", 3, (24, 24))
    capsys.readouterr()
    load_folder(root, tmp_path / "cache", 3, (24, 24))
    (listing,) = (tmp_path / "cache").glob("*-skipped.csv")
    assert capsys.readouterr().err == f"1 unreadable files in {root} were left out (listed in {listing})\n"


@pytest.mark.parametrize("change", ["add", "remove", "touch", "rewrite"])
def test_a_changed_folder_is_decoded_again_not_served_stale(tmp_path, capsys, change):
    root = write_photo_folder(tmp_path / "photos", per_class=4)
    before = load_folder(root, tmp_path / "cache", 3, (24, 24))
    capsys.readouterr()
    file, square = root / "circle" / "circle_000.png", root / "square" / "square_000.png"
    if change == "add":
        shutil.copy(file, root / "circle" / "circle_new.png")
    elif change == "remove":
        file.unlink()
    else:
        if change == "rewrite":
            shutil.copyfile(square, file)  # the same name, another picture
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # clocks are coarse: a clear step
    after = load_folder(root, tmp_path / "cache", 3, (24, 24))
    expected = {"add": 13, "remove": 11}.get(change, 12)
    (cache,) = (tmp_path / "cache").glob("*.u8")
    assert (
        capsys.readouterr().err
        == f"{root} changed since it was cached: decoding {expected} images from {root} into {cache}\n"
    )
    assert len(after["train_labels"]) == expected and after["fingerprint"] != before["fingerprint"]
    if change == "rewrite":
        assert torch.equal(after["train_images"][0], before["train_images"][4])  # now the square's picture


def test_decoding_in_threads_gives_the_same_order_as_one_thread(tmp_path, monkeypatch):
    root = write_photo_folder(tmp_path / "photos", per_class=6, fmt="mixed")
    threaded = load_folder(root, tmp_path / "threads", 3, (24, 24))
    monkeypatch.setattr(folder, "DECODE_THREADS", 1)
    single = load_folder(root, tmp_path / "single", 3, (24, 24))
    assert torch.equal(threaded["train_images"], single["train_images"])


def test_an_unwritable_cache_dir_is_one_error_naming_the_flag(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=2)
    (tmp_path / "cache").write_text("a file, not a folder")
    with pytest.raises(DataError, match="--data.cache_dir") as error:
        load_folder(root, tmp_path / "cache", 3, (24, 24))
    assert str(tmp_path / "cache") in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------------------------------
# Folders that are not one of the two layouts: one line each, naming the path and the fix


def missing(tmp_path):
    return tmp_path / "nowhere", "does not exist", tmp_path / "nowhere"


def a_file(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", "is not a folder", tmp_path / "photo.png"


def empty(tmp_path):
    (tmp_path / "photos").mkdir()
    return tmp_path / "photos", "has no class folders;", tmp_path / "photos"


def only_loose_files(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "photos" / "a.png")
    return tmp_path / "photos", "has no class folders (only loose files)", tmp_path / "photos"


def train_beside_a_class(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=5, layout="split")
    shutil.copytree(root / "train" / "circle", root / "cats")
    return root, "mixes the two layouts", root / "cats"


def a_loose_image_beside_class_folders(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=2)
    Image.new("L", (4, 4)).save(root / "stray.jpg")
    return root, "is an image outside any class folder; move it into its class folder", root / "stray.jpg"


def a_class_folder_without_files(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=2)
    (root / "hexagon").mkdir()
    return root, "class hexagon has no files", root / "hexagon"


def a_class_without_a_readable_image(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=2)
    (root / "broken").mkdir()
    (root / "broken" / "a.png").write_bytes(b"not a png")
    return root, "class broken has no readable image: none of the 1 files in", root / "broken"


def val_without_train(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=2)
    shutil.copytree(root / "circle", root / "val" / "circle")
    return root, "has val/ but no train/", root / "train"


def val_with_an_unknown_class(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=5, layout="split")
    shutil.copytree(root / "val" / "circle", root / "val" / "hexagon")
    return root, "is not a class of", root / "val" / "hexagon"


@pytest.mark.parametrize(
    "make",
    [
        missing,
        a_file,
        empty,
        only_loose_files,
        train_beside_a_class,
        a_loose_image_beside_class_folders,
        a_class_folder_without_files,
        a_class_without_a_readable_image,
        val_without_train,
        val_with_an_unknown_class,
    ],
)
def test_a_folder_that_is_not_a_layout_is_one_error_naming_the_path(tmp_path, make):
    root, problem, named = make(tmp_path)
    with pytest.raises(DataError) as error:
        load_folder(root, tmp_path / "cache", 3, (16, 16))
    message = str(error.value)
    assert problem in message and str(named) in message and "\n" not in message


# ----------------------------------------------------------------------------------------------------
# The helper's promise: other tests can train on these photos


def test_the_photo_folder_is_learnable_by_a_tiny_cnn(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=20, layout="split")
    data = load_folder(root, tmp_path / "cache", 3, (32, 32))
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 3),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = data["train_images"].float() / 255, data["train_labels"]  # (36, 3, 32, 32), (36,)
    start = time.perf_counter()
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (net(data["test_images"].float() / 255).argmax(1) == data["test_labels"]).float().mean()
    assert accuracy >= 0.9, f"test accuracy {accuracy:.2f} after 40 steps ({time.perf_counter() - start:.1f} s)"


def test_the_cache_is_read_memory_mapped_and_the_splits_are_views_of_one_mapping(tmp_path):
    from fashion_mnist_lightning.image_folder import ImageFolderDataModule

    root = write_photo_folder(tmp_path / "photos", per_class=10)
    data = load_folder(root, tmp_path / "cache", 3, (24, 24))
    (images_file,) = (tmp_path / "cache").glob("*.u8")
    assert str(images_file) in Path("/proc/self/maps").read_text()  # mapped, not read into memory
    assert images_file.stat().st_size == 30 * 3 * 24 * 24 == data["train_images"].untyped_storage().nbytes()
    module = ImageFolderDataModule(str(root), image_size=24, cache_dir=str(tmp_path / "cache2"))
    module.setup("fit")
    train, val = module.train_set, module.val_set
    assert train.images.data_ptr() == val.images.data_ptr() and train.index is not None  # no copy per split
    assert len(train) + len(val) + len(module.test_set) == 30
