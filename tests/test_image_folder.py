"""Your own photos: ImageFolderDataModule through `fashion-mnist` as a user runs it (configs/folder.yaml), grey and
colour, any size, both folder layouts; and the DataModule's own guarantees (splits, resume position, statistics)."""

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import SMALL, Workspace, precision_fix, weights
from fashion_mnist_lightning.data.sampler import ImageBatches
from fashion_mnist_lightning.image_folder import ImageFolderDataModule
from helpers.photos import write_photo_folder
from helpers.serving import bench, csv_probabilities, multipart, predict, request

CLASSES = ["circle", "square", "triangle"]
FOLDER = "fashion-mnist fit --config configs/folder.yaml"


@pytest.fixture
def photos(workspace) -> Workspace:
    """A workspace with the user's photos: photos/<class>/ (40x48 RGB, PNG and JPEG) and rgb32/{train,val,test}/."""
    write_photo_folder(workspace.path / "photos", per_class=30, size=(40, 48), fmt="mixed")
    write_photo_folder(workspace.path / "rgb32", per_class=30, size=(32, 32), layout="split")
    (workspace.path / "data").unlink()  # a clone's own data/ (the caches go there), not the shared Fashion-MNIST
    (workspace.path / "data").mkdir()
    return workspace


def hparams(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)["hyper_parameters"]


# ----------------------------------------------------------------------------------------------------
# through the command line


def test_fit_on_a_folder_of_photos_links_classes_and_shape_then_predicts_new_photos(photos):
    result = photos.run(f"{FOLDER} --data.root photos --test_after_fit true {' '.join(SMALL)}")
    assert "decoding 90 images from photos" in result.output
    run = photos.runs()[0]
    saved = hparams(run / "checkpoints/last.ckpt")
    assert saved["class_names"] == CLASSES and tuple(saved["image_shape"]) == (3, 64, 64)
    network = saved["network"]["init_args"]
    assert (network["num_classes"], network["in_channels"], tuple(network["image_size"])) == (3, 3, (64, 64))
    assert len(network["mean"]) == 3 and all(0 < m < 1 for m in network["mean"])  # the photos' own statistics
    matrix = (run / "confusion_matrix_test.csv").read_text().splitlines()
    assert len(matrix) == 3 and all(len(row.split(",")) == 3 for row in matrix)  # 3 classes, not 10

    new = photos.path / "new_photos"
    new.mkdir()
    for name in ("circle", "triangle"):
        source = sorted((photos.path / "photos" / name).iterdir())[0]
        (new / f"mine_{name}{source.suffix}").write_bytes(source.read_bytes())
    (new / "notes.txt").write_text("not an image")
    names = sorted(path.name for path in new.iterdir() if path.name.startswith("mine_"))
    result = photos.run(
        f"fashion-mnist predict --config configs/folder.yaml --data.root photos --ckpt_path best "
        f"--data.predict_dir {new}"
    )
    assert "decoding" not in result.output  # the cache of the training folder is reused
    rows = list(csv.DictReader((run / "evaluations/predict_0/predictions.csv").open()))
    assert [r["file"] for r in rows] == [*names, "notes.txt"]
    assert list(rows[0].keys())[3:6] == CLASSES and rows[0]["predicted"] in CLASSES
    assert rows[-1]["error"] and not rows[0]["error"]

    # served: the photos' own classes and colour input, the same numbers as predict; SIGTERM stops it cleanly
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    process, url = bench.start(str(best), [], photos.path / "serve.log", cwd=photos.path)
    try:
        info = request(url, "GET", "/info")[1]["model"]
        assert info["class_names"] == CLASSES and info["input_shape"] == [3, 64, 64]
        status, answer = predict(url, *multipart([("images", n, (new / n).read_bytes()) for n in names]))
    finally:
        assert bench.stop(process) == 0
    expected = csv_probabilities(run / "evaluations/predict_0/predictions.csv")
    assert status == 200 and [a["file"] for a in answer["predictions"]] == names
    for a in answer["predictions"]:
        assert max(abs(a["probabilities"][c] - p) for c, p in zip(CLASSES, expected[a["file"]])) <= 1e-6
    output = (photos.path / "serve.log").read_text()
    assert "server stopped" in output and "Traceback" not in output, output[-3000:]


def test_colour_32px_with_its_own_val_and_test_folders_through_the_strong_recipe_report_and_export(photos):
    photos.run(
        "fashion-mnist fit --config configs/strong.yaml "
        "--data fashion_mnist_lightning.image_folder.ImageFolderDataModule "
        "--data.root rgb32 --data.image_size=[32,32] --model.network.init_args.widths=[8,16,16] "
        "--trainer.check_val_every_n_epoch=1 --test_after_fit true " + " ".join(SMALL + tuple(precision_fix("strong")))
    )
    run = photos.runs()[0]
    assert (run / "checkpoints/last.ckpt").is_file() and list(run.glob("events.out.tfevents.*"))
    report = photos.run("fashion-mnist report --ckpt_path last")
    table = list(csv.DictReader((run / "report/per_class.csv").open()))
    assert [row["class"] for row in table] == CLASSES
    assert sum(int(row["support"]) for row in table) == 18  # rgb32/test: 20 % of 30 per class
    assert "report.md" in report.output and (run / "report/confident_mistakes.png").is_file()
    photos.run("fashion-mnist export --ckpt_path last --format onnx")
    import onnxruntime

    from fashion_mnist_lightning.extras.export import load_network

    network = load_network(run / "checkpoints/last.ckpt")
    images = torch.rand(5, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(run / "export/last.onnx"))
    [logits] = session.run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), network(images).detach(), atol=1e-4, rtol=1e-4)


def test_an_unreadable_photo_is_named_on_stderr_and_listed_and_the_rest_trains(photos):
    (photos.path / "photos/square/broken.jpg").write_bytes(b"\xff\xd8 truncated")
    result = photos.run(f"{FOLDER} --data.root photos {' '.join(SMALL)}")
    assert any("broken.jpg" in line for line in result.lines("skipped"))
    [listing] = (photos.path / "data").glob("folder-*-skipped.csv")
    assert "photos/square/broken.jpg" in listing.read_text()
    again = photos.run(f"{FOLDER} --data.root photos {' '.join(SMALL)}")
    assert any("1 unreadable files in photos were left out" in line for line in again.output.splitlines())


def test_a_folder_model_predicts_without_its_photos_and_never_mirrors_what_the_data_must_not(photos):
    # image_size 32 means 32x32; hflip false is the one place that says "never mirror": the flip TTA of the recipe
    # follows it (a digit and its mirror are not the same class)
    augment = "--data.resized_crop 0.35 --data.colour_jitter 0.2"  # the photos' augmentation, on the device
    photos.run(f"{FOLDER} --data.root photos --data.image_size 32 --data.hflip false {augment} {' '.join(SMALL)}")
    run = photos.runs()[0]
    saved = hparams(run / "checkpoints/last.ckpt")
    assert tuple(saved["image_shape"]) == (3, 32, 32) and saved["tta"] == "flip" and saved["mirror"] is False

    new = photos.path / "new_photos"
    new.mkdir()
    for name in ("circle", "square"):
        shutil.copy(sorted((photos.path / "photos" / name).iterdir())[0], new / f"mine_{name}.png")
    shutil.move(photos.path / "photos", photos.path / "moved_away")  # handed to a colleague: no photos, no cache
    shutil.rmtree(photos.path / "data")
    photos.run(f"fashion-mnist predict --config {run}/config.yaml --ckpt_path best --data.predict_dir {new}")
    rows = list(csv.DictReader((run / "evaluations/predict_0/predictions.csv").open()))
    assert [r["file"] for r in rows] == ["mine_circle.png", "mine_square.png"] and list(rows[0])[3:6] == CLASSES

    for command in ("test", "validate"):  # these evaluate the photos' own splits: one line that says so
        refused = photos.run(f"fashion-mnist {command} --config {run}/config.yaml --ckpt_path best", expect=2)
        assert "--data.root photos does not exist" in refused.error and "predict_dir" in refused.error
    assert not (run / "evaluations/test_0").exists()
    photos.run("fashion-mnist export --ckpt_path best --format onnx")


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda root: root.mkdir(), "has no class folders"),
        (lambda root: (root / "cat").mkdir(parents=True), "class cat has no files"),
        (lambda root: [(root / d / "cat").mkdir(parents=True) for d in ("train", "dog")], "mixes the two layouts"),
        (lambda root: None, "does not exist"),
    ],
)
def test_a_folder_that_holds_no_data_set_is_one_line_exit_2_and_leaves_no_run(workspace, in_process, make, expected):
    make(workspace.path / "mine")
    result = in_process(f"{FOLDER} --data.root mine {' '.join(SMALL)}", expect=2)
    assert expected in result.error and "mine" in result.error
    assert not workspace.runs()


@pytest.mark.slow
def test_ddp_on_photos_shards_the_folder_and_matches_one_process(photos, tmp_path):
    """Two real processes (gloo) on the photos, each half of every batch: the weights follow the one-process run."""
    same = (
        "--data.root photos --data.hflip=false --data.crop_padding=0 --model.tta none "
        f"--model.network fashion_mnist_lightning.network.SeedCNN {' '.join(SMALL)}"  # no BatchNorm: its statistics
    )  # are per process
    photos.run(f"{FOLDER} {same} --data.batch_size=16 --trainer.accelerator cpu", timeout=300)
    photos.run(
        f"{FOLDER} {same} --data.batch_size=8 --trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp",
        env={"OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    one, two = (
        {k: v for k, v in weights(run / "checkpoints/last.ckpt").items() if k.startswith("network.")}
        for run in photos.runs()
    )  # (the metrics' running states are per process)
    assert one.keys() == two.keys() and len(one) == 12
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------
# the DataModule in Python


@pytest.fixture
def flat(tmp_path) -> Path:
    return write_photo_folder(tmp_path / "photos", per_class=20, size=(40, 48), fmt="png")


def test_the_split_is_seeded_and_covers_every_image_once(flat, tmp_path):
    def splits(seed: int) -> dict:
        dm = ImageFolderDataModule(str(flat), image_size=(16, 16), cache_dir=str(tmp_path / "cache"), seed=seed)
        sets = {name: ImageBatches(*split) for name, split in dm.load_splits().items()}
        return {name: images.first(len(images)) for name, images in sets.items()}  # each split's own images

    a, b, c = splits(0), splits(0), splits(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["val"], c["val"])
    assert [len(a[k]) for k in ("train", "val", "test")] == [48, 6, 6]
    together = torch.cat([a[k] for k in ("train", "val", "test")]).flatten(1)
    assert len(together.unique(dim=0)) == 60


def test_own_val_and_test_folders_are_used_as_given(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=10, size=(20, 20), layout="split")
    dm = ImageFolderDataModule(str(root), image_size=(20, 20), channels=1, cache_dir=str(tmp_path / "cache"))
    sizes = {name: len(split[1]) for name, split in dm.load_splits().items()}
    files = {name: sum(1 for _ in (root / name).rglob("*.*")) for name in ("train", "val", "test")}
    assert sizes == files
    assert dm.image_shape == (1, 20, 20) and len(dm.mean) == 1


def test_a_resumed_sampler_hands_out_exactly_the_rest_of_the_epoch(flat, tmp_path):
    def datamodule():
        dm = ImageFolderDataModule(str(flat), image_size=(16, 16), cache_dir=str(tmp_path / "c"), batch_size=5)
        dm.setup("fit")
        return dm

    straight = [labels for _, labels in datamodule().train_dataloader()]
    first = datamodule()
    loader = iter(first.train_dataloader())
    seen = [next(loader)[1] for _ in range(3)]
    resumed = datamodule()
    resumed.load_state_dict({"train_sampler": first.train_sampler.state_dict()})  # what a checkpoint holds
    rest = [labels for _, labels in resumed.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(seen + rest, straight)) and len(seen + rest) == len(straight)


def write_imbalanced(root: Path) -> None:
    """train/ 80 circles and 8 squares (10:1), val/ 10 + 10, test/ 30 + 30."""
    for split, counts in (("train", (80, 8)), ("val", (10, 10)), ("test", (30, 30))):
        for name, count in zip(CLASSES[:2], counts):
            scratch = root / f".{split}-{name}"
            write_photo_folder(scratch, classes=tuple(CLASSES[:2]), per_class=count, size=(32, 32), seed=len(split))
            (root / split).mkdir(parents=True, exist_ok=True)
            (scratch / name).rename(root / split / name)
            shutil.rmtree(scratch)


def test_on_a_10_to_1_folder_class_weights_or_balanced_sampling_raise_the_minoritys_recall(photos):
    write_imbalanced(photos.path / "imbalanced")
    recipe = f"{FOLDER} --data.root imbalanced --data.image_size 32 --data.batch_size 16 --test_after_fit true"
    recipe += " --trainer.max_epochs=1"  # 6 steps: long enough to learn the majority, not the minority unaided
    recall = {}
    for name, extra in (
        ("plain", ""),
        ("weighted", "--model.class_weights balanced"),
        ("sampled", "--data.balanced_sampling true"),
    ):
        photos.run(f"{recipe} {extra}")
        matrix = [
            [int(v) for v in row.split(",")]
            for row in (photos.runs()[-1] / "confusion_matrix_test.csv").read_text().split()
        ]
        recall[name] = matrix[1][1] / sum(matrix[1])  # the squares found among the test set's 30
    saved = hparams(photos.runs()[1] / "checkpoints/last.ckpt")
    assert saved["class_counts"] == [80, 8] and saved["class_weights"] == "balanced"
    assert recall["weighted"] > recall["plain"] + 0.2 and recall["sampled"] > recall["plain"] + 0.2, recall


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--data.channels abc", "--data.channels: expected int, got abc"),
        ("--data.image_size [32,x]", "--data.image_size: expected int or tuple[int, int], got [32, 'x']"),
        (
            "--data.imagesize 32",
            "--data.imagesize is not an argument of the chosen class (did you mean 'data.image_size'?)",
        ),
    ],
)
def test_a_wrong_value_names_its_own_key_never_an_unrelated_one(photos, in_process, flag, expected):
    result = in_process(f"{FOLDER} --data.root photos {flag}", expect=2)
    assert expected in result.error and "val_size" not in result.error and len(result.error) < 200
    assert not photos.runs()


def test_values_the_datamodule_rejects_are_one_line(flat, tmp_path):
    for arguments, word in (({"channels": 2}, "channels"), ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum")):
        with pytest.raises(ValueError, match=word):
            ImageFolderDataModule(str(flat), cache_dir=str(tmp_path), **arguments)
    assert os.listdir(tmp_path) == ["photos"]  # nothing decoded for a refused value


def test_a_sweep_searches_on_the_photos_and_crosscheck_refuses_them_in_one_line(photos, in_process):
    """Downstream tools on another data set: an Optuna sweep over configs/folder.yaml trains on the photos (its
    trials' checkpoints have their 3 classes); crosscheck, the NumPy reference of the 1x28x28 SeedCNN, refuses."""
    sweep = photos.path / "photos_sweep.yaml"
    sweep.write_text(
        "configs: [configs/folder.yaml]\n"
        "overrides: {data.root: photos, trainer.max_epochs: 1, trainer.limit_train_batches: 4, "
        "trainer.limit_val_batches: 1}\n"
        "space:\n  model.optimizer.init_args.weight_decay: {type: categorical, choices: [0.0, 0.05]}\n"
        "n_trials: 2\nsampler: {type: grid}\npruner: {type: none}\n"
    )
    photos.run(f"fashion-mnist sweep --config {sweep.name}", timeout=400)
    trials = sorted((photos.path / "lightning_logs/sweeps/photos_sweep").glob("trial_*/checkpoints/last.ckpt"))
    assert len(trials) == 2 and all(hparams(t)["class_names"] == CLASSES for t in trials)
    refused = in_process(f"fashion-mnist crosscheck --ckpt_path {trials[0]}", expect=2)
    assert "does not hold a SeedCNN" in refused.error
