"""Pretrained backbones (backbones.Pretrained): a timm or torchvision model by name behind the template's contract,
weights from a file the test writes or from a Hugging Face cache the test writes with the hub offline, and the
weights that cannot be had or do not fit refused in one line, within seconds, with no run left behind."""

import csv
import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import weights
from fashion_mnist_lightning.backbones import Pretrained, WeightsError, fit_state_dict, read_weights
from helpers.weights import TINY, hub_cache, timm_weights

PRETRAINED = (
    "fashion-mnist fit --config configs/default.yaml --model.network fashion_mnist_lightning.backbones.Pretrained "
    "--trainer.max_epochs=1 --trainer.limit_train_batches=3 --trainer.limit_val_batches=1"
)

# ----------------------------------------------------------------------------------------------------
# the network itself


@pytest.mark.parametrize("name", [TINY, "torchvision.models.resnet18"])
def test_a_model_by_name_takes_the_datas_channels_and_classes_and_keeps_the_contract(name):
    network = Pretrained(name, weights=None, num_classes=3, in_channels=1, mean=(0.3,), std=(0.2,)).eval()
    images = torch.rand(2, 1, 28, 28)  # raw [0, 1], the data's shape
    logits = network(images)
    assert logits.shape == (2, 3)
    assert torch.allclose(network.normalize.mean.flatten(), torch.tensor([0.3]))  # not pretrained: the data's
    assert network.get_classifier().out_features == 3


def test_pretrained_normalises_with_the_weights_own_statistics_fitted_to_the_channels():
    grey = Pretrained("resnet18", weights="hub", num_classes=3, in_channels=1, mean=(0.3,), std=(0.2,))
    assert torch.allclose(grey.normalize.mean.flatten(), torch.tensor([(0.485 + 0.456 + 0.406) / 3]))
    colour = Pretrained("resnet18", weights="some.safetensors", num_classes=3, in_channels=3)
    assert torch.allclose(colour.normalize.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_weights_from_a_file_fit_the_stem_and_leave_a_new_head(tmp_path):
    state = timm_weights(tmp_path / "w.pth")
    network = Pretrained(TINY, weights=str(tmp_path / "w.pth"), num_classes=4, in_channels=1)
    head = network.get_classifier().weight.clone()
    done = network.load_pretrained()
    assert "head fc.weight, fc.bias new" in done
    loaded = network.model.state_dict()
    assert torch.equal(loaded["conv1.0.weight"], state["conv1.0.weight"].sum(dim=1, keepdim=True))  # RGB -> grey
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != "conv1.0.weight" and not k.startswith("fc"))
    assert torch.equal(network.get_classifier().weight, head)  # 4 classes, not ImageNet's 1000: left as built


def test_a_weights_file_that_does_not_fit_or_holds_code_is_refused_in_one_line(tmp_path):
    other = tmp_path / "other.safetensors"
    timm_weights(other, name="test_efficientnet")
    with pytest.raises(WeightsError, match="does not fit ResNet") as error:
        Pretrained(TINY, weights=str(other), num_classes=3).load_pretrained()
    assert "\n" not in str(error.value)
    code = tmp_path / "code.pth"
    torch.save({"weights": torch.zeros(1), "hook": Path}, code)  # a pickled class: weights_only refuses it
    with pytest.raises(WeightsError, match="cannot read weights file"):
        read_weights(code)
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(tmp_path / "missing.safetensors")


def test_a_template_checkpoint_fits_another_data_sets_channels_and_classes(trained):
    from fashion_mnist_lightning.network import SeedCNN

    source = weights(trained / "checkpoints/last.ckpt")
    network = SeedCNN(num_classes=3, in_channels=3, image_size=(28, 28))
    fresh = fit_state_dict(network, read_weights(trained / "checkpoints/last.ckpt"), "last.ckpt")
    assert fresh == ["out.weight", "out.bias"]
    assert torch.allclose(network.conv1.weight, source["network.conv1.weight"].repeat(1, 3, 1, 1) / 3)
    assert torch.equal(network.fc2.weight, source["network.fc2.weight"])
    assert torch.allclose(network.normalize.mean.flatten(), source["network.normalize.mean"].flatten().expand(3))


# ----------------------------------------------------------------------------------------------------
# through the command line


def test_fit_starts_from_exactly_the_weights_file_the_test_wrote(workspace):
    state = timm_weights(workspace.path / "backbone.safetensors")
    result = workspace.run(
        f"{PRETRAINED} --model.network.init_args.name {TINY} --model.network.init_args.weights backbone.safetensors "
        "--trainer.callbacks+=fashion_mnist_lightning.finetune.FreezeBackbone --trainer.limit_train_batches=2"
    )
    assert f"{TINY}: pretrained weights from backbone.safetensors" in result.output
    trained = weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    # one epoch with the backbone frozen: it is still exactly the file's (BatchNorm statistics included)
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        expected = value.sum(dim=1, keepdim=True) if key == "conv1.0.weight" else value
        assert torch.equal(trained[f"network.model.{key}"], expected), key
    assert trained["network.model.fc.weight"].shape == (10, state["fc.weight"].shape[1])


def test_the_hub_cache_a_test_wrote_is_used_offline_and_without_it_the_run_is_one_line(workspace, tmp_path):
    state = timm_weights(tmp_path / "unused.safetensors", seed=2)
    hub_cache(tmp_path / "hf", "timm/test_resnet.r160_in1k", state)
    offline = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    name = "--model.network.init_args.name test_resnet.r160_in1k --model.network.init_args.weights hub"
    freeze = "--trainer.callbacks+=fashion_mnist_lightning.finetune.FreezeBackbone"  # the backbone stays as loaded
    result = workspace.run(f"{PRETRAINED} {name} {freeze}", env=offline)
    assert "pretrained weights from hf-hub:timm/test_resnet.r160_in1k (cached" in result.output
    network = weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    assert torch.equal(network["network.model.layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])

    started = time.monotonic()
    empty = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    refused = workspace.run(f"{PRETRAINED} {name}", env=empty, expect=2)
    assert time.monotonic() - started < 60
    assert "not in the Hugging Face cache" in refused.error and "--model.network.init_args.weights" in refused.error
    assert len(workspace.runs()) == 1  # no run folder left behind


def test_no_network_and_no_cache_is_one_line_within_seconds_not_the_hub_clients_retries(workspace, tmp_path):
    if os.environ.get("HF_ENDPOINT") or os.environ.get("HTTPS_PROXY"):
        pytest.skip("a hub endpoint or proxy is configured: this machine may reach the hub")
    started = time.monotonic()
    result = workspace.run(
        f"{PRETRAINED} --model.network.init_args.name {TINY}.r160_in1k",
        env={"HF_HOME": str(tmp_path / "empty"), "HF_ENDPOINT": "http://127.0.0.1:9"},  # nothing listens there
        expect=2,
    )
    assert time.monotonic() - started < 60
    assert "cannot be had" in result.error and "--model.network.init_args.weights PATH" in result.error
    assert not workspace.runs()


def test_an_unknown_model_name_is_one_line_with_the_close_name(in_process):
    result = in_process(f"{PRETRAINED} --model.network.init_args.name resnet1800", expect=2)
    assert "'resnet1800' is not a timm model" in result.error and "did you mean" in result.error


def test_a_torchvision_factory_as_the_network_names_the_supported_way(in_process):
    result = in_process(
        "fashion-mnist fit --config configs/default.yaml --model.network torchvision.models.resnet18", expect=2
    )
    assert "is a function, not an nn.Module class" in result.error
    assert "backbones.Pretrained --model.network.init_args.name torchvision.models.resnet18" in result.error


def test_a_checkpoint_of_other_classes_gives_a_new_head_even_when_their_count_is_the_same(trained):
    from fashion_mnist_lightning.backbones import start_weights
    from fashion_mnist_lightning.network import SeedCNN

    last = trained / "checkpoints/last.ckpt"
    source = weights(last)
    for names, head_kept in ((list("abcdefghij"), False), (None, True)):
        torch.manual_seed(0)
        network = SeedCNN()  # 10 classes, as the checkpoint's
        initial = network.out.weight.clone()
        names = names or torch.load(last, weights_only=True)["hyper_parameters"]["class_names"]
        done = start_weights(network, str(last), names)
        assert torch.equal(network.fc1.weight, source["network.fc1.weight"])
        assert torch.equal(network.out.weight, source["network.out.weight"] if head_kept else initial), done
        assert ("new for this data's classes" in done) is not head_kept


def test_a_pretrained_network_predicts_serves_and_sweeps_unchanged(workspace):
    from PIL import Image

    from helpers.serving import bench, csv_probabilities, multipart, predict, request

    timm_weights(workspace.path / "backbone.safetensors")
    workspace.run(
        f"{PRETRAINED} --model.network.init_args.name {TINY} --model.network.init_args.weights backbone.safetensors"
    )
    run = workspace.runs()[0]
    photos = workspace.path / "mine"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(photos / f"p{i}.png")
    (workspace.path / "backbone.safetensors").unlink()  # predict and serve need the checkpoint only
    workspace.run(f"fashion-mnist predict --config {run}/config.yaml --ckpt_path best --data.predict_dir {photos}")
    expected = csv_probabilities(run / "evaluations/predict_0/predictions.csv")
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    process, url = bench.start(str(best), [], workspace.path / "serve.log", cwd=workspace.path)
    try:
        assert request(url, "GET", "/info")[1]["model"]["input_shape"] == [1, 28, 28]
        names = sorted(expected)
        status, answer = predict(url, *multipart([("images", n, (photos / n).read_bytes()) for n in names]))
    finally:
        assert bench.stop(process) == 0
    assert status == 200 and [a["file"] for a in answer["predictions"]] == names
    for a in answer["predictions"]:
        served = list(a["probabilities"].values())
        assert max(abs(s - e) for s, e in zip(served, expected[a["file"]])) <= 1e-5

    spec = {
        "configs": ["configs/fast.yaml"],
        "overrides": {
            "model.network.class_path": "fashion_mnist_lightning.backbones.Pretrained",
            "model.network.init_args.name": TINY,
            "model.network.init_args.weights": None,
            "trainer.limit_train_batches": 3,
            "trainer.limit_val_batches": 1,
        },
        "space": {"model.optimizer.init_args.lr": {"type": "float", "low": 0.0005, "high": 0.005, "log": True}},
        "n_trials": 2,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
    }
    (workspace.path / "pretrained.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    workspace.run("fashion-mnist sweep --config pretrained.yaml", timeout=600)
    with open(workspace.path / "lightning_logs/sweeps/pretrained/trials.csv", newline="") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["COMPLETE", "COMPLETE"]
