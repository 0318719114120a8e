"""`fashion-mnist report`, the TensorBoard extras, and the real TensorBoard server over a finished tiny run."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import Workspace, free_port
from fashion_mnist_lightning.extras.report import class_statistics, most_confident_mistakes, read_curves


def scalars(run: Path, tag: str) -> list:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars(tag)


def best_checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("epoch*.ckpt"))


@pytest.fixture
def tool(tmp_path, real_data_dir) -> Workspace:
    return Workspace(tmp_path)


# ----------------------------------------------------------------------------------------------------
# the arithmetic, against torchmetrics


def test_class_statistics_equal_a_hand_count():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])  # class 0: 2 of 3 right; class 1: 1 of 2; class 2: 1 of 1
    matrix, table = class_statistics(labels, predicted, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert table["support"].tolist() == [3, 2, 1]
    assert np.allclose(table["recall"], [2 / 3, 1 / 2, 1])  # the class's own accuracy
    assert np.allclose(table["precision"], [1, 1 / 2, 1 / 2])  # of what was called the class, how much was
    assert np.allclose(table["f1"], [0.8, 0.5, 2 / 3])
    assert np.allclose(table["accuracy_ovr"], [5 / 6, 4 / 6, 5 / 6])  # right about "is it this class" per image


def test_confident_mistakes_are_wrong_and_sorted():
    labels = np.array([0, 1, 2, 3])
    probabilities = np.array([[0.9, 0.1, 0, 0], [0.8, 0.2, 0, 0], [0, 0.6, 0.4, 0], [0, 0, 0.05, 0.95]])
    assert most_confident_mistakes(labels, probabilities, 5).tolist() == [1, 2]


# ----------------------------------------------------------------------------------------------------
# the report of a finished run


def test_report_writes_images_table_and_markdown(tool, trained):
    finished_run = trained
    tool.run(f"fashion-mnist report --ckpt_path {best_checkpoint(finished_run)}")
    report = finished_run / "report"
    pictures = [
        "learning_curves.png",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "confident_mistakes.png",
    ]
    for name in pictures:
        pixels = imread(report / name)  # (H, W, 3 or 4) floats: a real, decodable image
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200, name
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"
    markdown = (report / "report.md").read_text()
    assert all(f"({name})" in markdown for name in pictures)

    # the per-class recall is the per-class test accuracy the run itself logged for the same checkpoint
    rows = [line.split(",") for line in (report / "per_class.csv").read_text().splitlines()[1:]]
    assert len(rows) == 10 and sum(int(row[1]) for row in rows) == 10_000
    for name, _, _, recall, *_ in rows:
        logged = scalars(finished_run, f"test/acc_class/{name.replace('/', '_').replace(' ', '_')}")[-1].value
        assert abs(float(recall) - logged) < 1e-4, name


def test_learning_curves_have_one_point_per_epoch(trained):
    finished_run = trained
    curves = read_curves(finished_run)
    for tag in ("train/loss_epoch", "val/loss", "train/acc", "val/acc"):
        assert [epoch for epoch, _ in curves[tag]] == [1, 2], tag
    assert [v for _, v in curves["val/acc"]] == [e.value for e in scalars(finished_run, "val/acc")]


def test_report_on_a_missing_checkpoint_is_one_line(tool):
    assert "does not exist" in tool.run(f"fashion-mnist report --ckpt_path {tool.path / 'nope.ckpt'}", expect=2).error


# ----------------------------------------------------------------------------------------------------
# the real TensorBoard server, as `make tensorboard` starts it


def get(url: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


@pytest.fixture
def tensorboard_server(trained, tmp_path):
    finished_run = trained
    port = free_port()
    executable = Path(sys.executable).with_name("tensorboard")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "tensorboard.main"]
    log = (tmp_path / "tensorboard.log").open("w")
    server = subprocess.Popen(
        [*command, "--logdir", str(finished_run.parent), "--host", "localhost", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # wait until it serves and has loaded the run's val/acc
            assert server.poll() is None, f"tensorboard exited: {(tmp_path / 'tensorboard.log').read_text()[-500:]}"
            try:
                if json.loads(get(f"{base}/data/plugin/scalars/scalars?run=version_0&tag=val/acc")):
                    break
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, "tensorboard did not serve the run within 90 s"
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_tensorboard_serves_scalars_images_hparams_and_graph(tensorboard_server, trained):
    base, finished_run = tensorboard_server, trained
    served = json.loads(get(f"{base}/data/plugin/scalars/scalars?run=version_0&tag=val/acc"))  # [[time, step, v]]
    assert [row[2] for row in served] == pytest.approx([e.value for e in scalars(finished_run, "val/acc")])
    assert len(served) == 2 and all(0.1 < row[2] <= 1 for row in served)

    tags = json.loads(get(f"{base}/data/plugin/images/tags"))["version_0"]
    assert {"val/confusion_matrix", "test/confusion_matrix", "val/sample_predictions"} <= tags.keys()
    for tag in ("test/confusion_matrix", "val/sample_predictions"):
        entry = json.loads(get(f"{base}/data/plugin/images/images?run=version_0&tag={tag}"))[-1]
        png = get(f"{base}/data/plugin/images/individualImage?{entry['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, tag

    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    query = {"experimentName": "", "allowedStatuses": statuses, "colParams": [], "startIndex": 0, "sliceSize": 10}
    groups = json.loads(get(f"{base}/data/plugin/hparams/session_groups", query))["sessionGroups"]
    final = {m["name"]["tag"]: m["value"] for m in groups[0]["metricValues"]}
    assert final["hp/test_acc"] == pytest.approx(scalars(finished_run, "test/acc")[-1].value)
    assert final["hp/val_acc_best"] == pytest.approx(max(e.value for e in scalars(finished_run, "val/acc")))
    assert groups[0]["hparams"]["model/network/class_path"] == "fashion_mnist_lightning.network.SeedCNN"

    assert json.loads(get(f"{base}/data/plugin/graphs/info"))["version_0"]["run_graph"] is True
