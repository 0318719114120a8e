"""Every shipped config through the commands users run on it, progress bar on: fit, SIGTERM mid-epoch, resume
with --ckpt_path last, validate / test / predict on its best checkpoint, report, export. GPU-only configs: the
one-line error, then the same with --trainer.accelerator cpu. And the debug presets stacked on a recipe."""

import signal

import pytest
import torch
import yaml

from conftest import ROOT, finish, precision_fix, progress, wait_for
from helpers.photos import write_photo_folder
from helpers.weights import offline_hub

RECIPES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem != "base")
GPU_ONLY = {"gpu", "gpu_ddp"}
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "debug").glob("*.yaml"))
# `make test` hands each file to one worker (pytest-xdist's loadfile): the recipes' runs are split over three files,
# so that three workers run them side by side; each file parametrizes its own group
GROUPS = {
    "test_configs.py": ["default", "fast", "folder", "seed"],
    "test_configs_strong.py": ["finetune", "gpu", "strong"],
    "test_configs_ddp.py": ["ddp_cpu", "gpu_ddp"],
}
# training batches per epoch: the signal goes at the first progress-bar update (base.yaml: every 50 steps, and at an
# epoch's end) and must land before the run's end; strong.yaml's 26 end its first epoch at its first update, leaving
# the second epoch (26 steps of ~0.25-1.3 s by CPU) for the signal to arrive
EPOCHS = {"strong": 26, "finetune": 8}  # finetune: a ResNet-18 at 128 px, 8 steps an epoch on 240 photos
# fewer processes than gpu_ddp.yaml's 4 GPUs (a size limit, like the batches): the DDP path is the same with 2
DEVICES = {"gpu_ddp": 2}


PHOTOS = {"folder": 400, "finetune": 100}  # photos per class (3 classes) for the recipes that train on photos


def per_config(name: str) -> str:
    """The size limit on processes, and --trainer.precision=32-true where this CPU emulates a bf16 recipe."""
    return " ".join(([f"--trainer.devices={DEVICES[name]}"] if name in DEVICES else []) + precision_fix(name))


def limits(name: str) -> str:
    """Two short epochs, validated each (strong.yaml validates every 12th; a best checkpoint must exist)."""
    return (
        f"--trainer.max_epochs=2 --trainer.limit_train_batches={EPOCHS.get(name, 120)} "
        f"--trainer.limit_val_batches=2 --trainer.check_val_every_n_epoch=1 {per_config(name)}"
    )


EVAL_LIMITS = "--trainer.limit_val_batches=2 --trainer.limit_test_batches=2 --trainer.limit_predict_batches=2"


def test_the_recipe_list_is_what_the_readme_promises():
    assert RECIPES == ["ddp_cpu", "default", "fast", "finetune", "folder", "gpu", "gpu_ddp", "seed", "strong"]
    assert PRESETS == ["anomaly", "early_stopping", "limit", "overfit", "profiler"]


def test_recipes_state_only_what_they_change():
    """The shared setup lives in base.yaml only: no recipe repeats the logger or the callback list, and none sets
    an optimizer lr that a OneCycle schedule would overwrite."""
    for name in RECIPES:
        recipe = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        trainer = recipe.get("trainer", {})
        assert "logger" not in trainer and "callbacks" not in trainer, name
        model = recipe.get("model", {})
        if (model.get("scheduler") or {}).get("class_path", "").endswith("OneCycleLR"):
            assert "lr" not in model["optimizer"].get("init_args", {}), name


def test_every_recipe_is_in_one_group():
    assert sorted(name for group in GROUPS.values() for name in group) == RECIPES
    assert all((ROOT / "tests" / file).is_file() for file in GROUPS)


@pytest.mark.slow
@pytest.mark.parametrize("name", GROUPS["test_configs.py"])
def test_every_config_through_fit_interrupt_resume_evaluate_report_export(workspace, name):
    through_every_command(workspace, name)


def through_every_command(workspace, name: str) -> None:
    """fit, SIGTERM at the first progress-bar update, resume to the end, validate / test / predict on the best
    checkpoint, report, export; a GPU-only recipe first gives its one-line error, then runs on the CPU."""
    env = {"OMP_NUM_THREADS": "1"} if "ddp" in name else None
    config = f"--config configs/{name}.yaml"
    cpu = ""
    if name in PHOTOS:  # the user's photos where the recipe looks for them, the caches in the clone's own data/
        write_photo_folder(workspace.path / "photos", per_class=PHOTOS[name], size=(40, 48), fmt="mixed")
        (workspace.path / "data").unlink()
        (workspace.path / "data").mkdir()
    if name == "finetune":  # its hub weights, as an earlier online run leaves them in the Hugging Face cache
        env = offline_hub(workspace.path / "hf", "resnet18.a1_in1k")
    if name in GPU_ONLY:
        result = workspace.run(f"fashion-mnist fit {config}", expect=2, env=env)
        assert "--trainer.accelerator cpu" in result.error and not (workspace.path / "lightning_logs").exists()
        cpu = "--trainer.accelerator cpu"

    process, log = workspace.start(f"fashion-mnist fit {config} {cpu} {limits(name)}", env=env)
    wait_for(lambda: progress(log, 0) >= 1 or progress(log, 1) >= 1, 600, "the first progress-bar update", process)
    process.send_signal(signal.SIGTERM)
    stopped = finish(process, log, timeout=300)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.output[-2000:]
    [run] = workspace.runs()
    steps = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    recipe = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    processes = DEVICES.get(name) or recipe.get("trainer", {}).get("devices", 1)
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]
    photos = 3 * PHOTOS.get(name, 0)
    training_images = photos - 2 * round(0.1 * photos) if photos else 60_000 - data["val_size"]  # 10 % val, 10 % test
    per_process = -(-training_images // processes)  # each process's share of the training images
    total = 2 * min(EPOCHS.get(name, 120), -(-per_process // data["batch_size"]))
    assert 0 < steps < total, (steps, total)

    workspace.run(f"fashion-mnist fit {config} {cpu} {limits(name)} --ckpt_path last", env=env, timeout=600)
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == total
    assert [p.name for p in workspace.runs()] == ["version_0"]

    for command in ("validate", "test", "predict"):
        workspace.run(
            f"fashion-mnist {command} {config} {cpu} {per_config(name)} --ckpt_path best {EVAL_LIMITS}",
            env=env,
            timeout=600,
        )
    evaluations = run / "evaluations"
    assert sorted(p.name for p in evaluations.iterdir()) == ["predict_0", "test_0", "validate_0"]
    assert (evaluations / "predict_0/predictions.csv").is_file()
    assert (evaluations / "test_0/confusion_matrix_test.png").is_file()

    workspace.run("fashion-mnist report --ckpt_path best")
    assert (run / "report/report.md").is_file()
    workspace.run("fashion-mnist export --ckpt_path best --format onnx")
    assert len(list((run / "export").glob("*.onnx"))) == 1


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p == "overfit" else p for p in PRESETS])
def test_every_debug_preset_stacks_on_a_recipe(workspace, preset):
    small = (
        ""
        if preset == "overfit"
        else "--trainer.max_epochs=1 --trainer.limit_train_batches=10 --trainer.limit_val_batches=1"
    )
    result = workspace.run(
        f"fashion-mnist fit --config configs/fast.yaml --config configs/debug/{preset}.yaml {small}", timeout=600
    )
    recipe = yaml.safe_load((workspace.runs()[0] / "config.yaml").read_text())
    if preset == "profiler":
        assert "FIT Profiler Report" in result.output
    if preset == "anomaly":
        assert recipe["trainer"]["detect_anomaly"] is True
    if preset == "limit":
        assert recipe["trainer"]["limit_train_batches"] == 10 and recipe["trainer"]["limit_predict_batches"] == 2
    if preset == "early_stopping":
        assert recipe["trainer"]["callbacks"][-1]["class_path"].endswith("EarlyStopping")
        assert len(recipe["trainer"]["callbacks"]) == 7  # the shared six, plus this one
    if preset == "overfit":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(workspace.runs()[0]), size_guidance={"scalars": 0})
        events.Reload()
        assert events.Scalars("train/acc")[-1].value >= 0.99  # four batches, learned by heart
