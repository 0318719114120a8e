"""The `fashion-mnist` command as users type it: where each command writes, what `last` and `best` mean, and one
line (exit 2, nothing left behind) for every mistake. Runs the console script in a workspace (conftest)."""

import csv
import subprocess
import sys
import threading

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, SMALL, Workspace, weights

FAST = "fashion-mnist fit --config configs/fast.yaml"


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_fit_writes_one_run_folder_with_events_checkpoints_config_and_test_pngs(workspace):
    result = workspace.run(f"{FAST} --test_after_fit true")
    [run] = workspace.runs()
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names[-1] == "last.ckpt" and names[0].startswith("epoch00-val_acc") and len(names) == 2
    assert 0.5 < scalars(run, "val/acc")[-1][1] <= 1 and scalars(run, "test/acc")
    for name in ("confusion_matrix_test.png", "confusion_matrix_test_normalized.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = result.lines("test accuracy:")[0]
    assert "on 2,000 test images" in summary  # fast.yaml tests 2 batches of 1000
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    assert recipe["ckpt_path"] is None and recipe["trainer"]["logger"]["init_args"]["version"] is None


def test_config_yaml_of_a_run_reloads_with_fit_and_trains_a_new_run(workspace):
    workspace.run(f"{FAST} {' '.join(SMALL)}")
    workspace.run(f"fashion-mnist fit --config lightning_logs/version_0/config.yaml {' '.join(SMALL)}")
    assert [p.name for p in workspace.runs()] == ["version_0", "version_1"]
    a, b = (weights(run / "checkpoints" / "last.ckpt") for run in workspace.runs())
    assert all(torch.equal(a[k], b[k]) for k in a)  # the recipe reproduces the run


def test_last_ckpt_is_always_the_newest_state(workspace):
    """save_last on the best-checkpoint callback would keep the epoch of the best val/acc; ours is every epoch."""
    workspace.run(f"{FAST} --trainer.max_epochs=4 --trainer.limit_train_batches=5 --model.optimizer.init_args.lr=0.05")
    [run] = workspace.runs()
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 4 * 5 and last["epoch"] == 3


def test_resume_last_continues_the_newest_run_in_place_bit_identically(workspace, tmp_path):
    workspace.run(f"{FAST} --trainer.max_epochs=2")
    straight = weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    (workspace.path / "lightning_logs").rename(tmp_path / "straight")
    workspace.run(f"{FAST} --trainer.max_epochs=1")
    config_before = (workspace.runs()[0] / "config.yaml").read_text()
    result = workspace.run(f"{FAST} --trainer.max_epochs=2 --ckpt_path last")
    assert "resuming" in result.output and [p.name for p in workspace.runs()] == ["version_0"]
    assert torch.load(workspace.runs()[0] / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 1
    assert (workspace.runs()[0] / "config.yaml").read_text() == config_before.replace("max_epochs: 1", "max_epochs: 2")
    assert weights(workspace.runs()[0] / "checkpoints/last.ckpt").keys() == straight.keys()
    resumed = weights(workspace.runs()[0] / "checkpoints/last.ckpt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resume_picks_version_10_over_version_9(workspace):
    workspace.run(f"{FAST} {' '.join(SMALL)}")
    logs = workspace.path / "lightning_logs"
    for n in (9, 10):  # copies of the run as version_9 and version_10 (a name-sorted search would take 9)
        subprocess.run(["cp", "-r", str(logs / "version_0"), str(logs / f"version_{n}")], check=True)
    result = workspace.run(f"{FAST} --trainer.max_epochs=2 --trainer.limit_train_batches=12 --ckpt_path last")
    assert "lightning_logs/version_10/checkpoints/last.ckpt" in result.output
    assert torch.load(logs / "version_10/checkpoints/last.ckpt", weights_only=True)["epoch"] == 1
    assert torch.load(logs / "version_9/checkpoints/last.ckpt", weights_only=True)["epoch"] == 0


def test_a_named_run_is_resumed_by_name_started_fresh_once_and_never_overwritten(workspace, in_process):
    # the Slurm script's way (scripts/slurm/fit.sbatch): the run is named by the job, --ckpt_path last always
    named = f"{FAST} {' '.join(SMALL)} --trainer.logger.init_args.version=4242 --ckpt_path last"
    first = workspace.run(named)
    assert "starting lightning_logs/version_4242: it has no checkpoint to resume yet" in first.output
    workspace.run(f"{FAST} {' '.join(SMALL)}")  # a newer run (version_4243) that `last` alone would pick
    again = workspace.run(named.replace("max_epochs=1", "max_epochs=2"))
    assert "resuming lightning_logs/version_4242/checkpoints/last.ckpt" in again.output
    saved = workspace.path / "lightning_logs/version_4242/checkpoints/last.ckpt"
    assert torch.load(saved, weights_only=True)["epoch"] == 1
    before = saved.read_bytes()
    refused = in_process(f"{FAST} {' '.join(SMALL)} --trainer.logger.init_args.version=4242", expect=2)
    assert "already holds a run's checkpoints" in refused.error and "--ckpt_path last" in refused.error
    assert saved.read_bytes() == before


def test_evaluations_go_to_their_own_folder_inside_the_run_and_touch_nothing_of_it(workspace):
    workspace.run(f"{FAST} {' '.join(SMALL)}")
    [run] = workspace.runs()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for command in ("validate", "test", "predict", "test"):
        workspace.run(f"fashion-mnist {command} --config configs/fast.yaml --ckpt_path best")
    assert [p.name for p in workspace.runs()] == ["version_0"]  # no new "runs"
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["predict_0", "test_0", "test_1", "validate_0"]
    assert all(p.read_bytes() == content for p, content in before.items())  # the training record is untouched
    assert (run / "evaluations/predict_0/predictions.csv").is_file()
    assert (run / "evaluations/test_1/confusion_matrix_test.png").is_file()
    assert not list((run / "evaluations").rglob("*.ckpt"))  # evaluations write no checkpoints


def test_last_outside_fit_is_the_newest_runs_last_checkpoint_not_untrained_weights(workspace):
    workspace.run(f"{FAST} {' '.join(SMALL)}")
    result = workspace.run("fashion-mnist validate --config configs/fast.yaml --ckpt_path last")
    [run] = workspace.runs()
    trained = scalars(run, "val/acc")[-1][1]
    evaluated = scalars(run / "evaluations/validate_0", "val/acc")[-1][1]
    assert evaluated == pytest.approx(trained) and evaluated > 0.5 and "evaluating" in result.output


def test_test_on_a_checkpoint_reproduces_the_val_acc_in_its_file_name_through_validate(workspace):
    workspace.run(f"{FAST} --trainer.limit_val_batches=5")  # the whole validation set
    best = next((workspace.runs()[0] / "checkpoints").glob("epoch*.ckpt"))
    workspace.run(f"fashion-mnist validate --config configs/fast.yaml --ckpt_path {best} --trainer.limit_val_batches=5")
    evaluated = scalars(workspace.runs()[0] / "evaluations/validate_0", "val/acc")[-1][1]
    assert f"val_acc{evaluated:.4f}" in best.name


def test_checkpoint_reload_gives_the_test_metrics_the_run_logged(workspace, real_data_dir):
    from lightning import Trainer

    from fashion_mnist_lightning.datamodule import FashionMNISTDataModule
    from fashion_mnist_lightning.module import FashionMNISTClassifier

    workspace.run(f"{FAST} --test_after_fit true")
    [run] = workspace.runs()
    logged = scalars(run, "test/acc")[-1][1]
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    model = FashionMNISTClassifier.load_from_checkpoint(best, weights_only=True)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_test_batches=2)
    reloaded = trainer.test(model, FashionMNISTDataModule(data_dir=str(real_data_dir)), verbose=False)[0]
    assert reloaded["test/acc"] == pytest.approx(logged, abs=1e-6)


def test_print_config_feeds_back_as_config(workspace):
    printed = workspace.run(f"{FAST} --trainer.max_epochs=3 --print_config").output
    (workspace.path / "printed.yaml").write_text(printed)
    again = workspace.run("fashion-mnist fit --config printed.yaml --print_config").output
    assert again == printed and "max_epochs: 3" in printed
    assert "AtomicCheckpointIO" in printed  # the template's plugin is a visible default


def test_progress_bar_flag_works_with_every_config(workspace, in_process):
    for config in sorted((workspace.path / "configs").glob("*.yaml")):
        printed = in_process(
            f"fashion-mnist fit --config configs/{config.name} --trainer.enable_progress_bar=false --print_config"
        )
        assert "enable_progress_bar: false" in printed.output


def test_two_fits_started_at_once_get_two_run_folders(workspace):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(workspace.run(f"{FAST} {' '.join(SMALL)}"))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and [p.name for p in workspace.runs()] == ["version_0", "version_1"]
    for run in workspace.runs():
        assert (run / "checkpoints/last.ckpt").is_file() and (run / "config.yaml").is_file()


def test_device_resident_data_and_compile_switches(workspace):
    workspace.run(f"{FAST} --trainer.fast_dev_run=true --data.data_on_device=true")
    workspace.run(f"{FAST} --trainer.fast_dev_run=true --model.compile=true")


def test_predict_csv_has_a_row_per_test_image_in_order(workspace):
    workspace.run(f"{FAST} {' '.join(SMALL)}")
    workspace.run("fashion-mnist predict --config configs/fast.yaml --ckpt_path last")
    with open(workspace.runs()[0] / "evaluations/predict_0/predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10_000 and rows[0]["file"] == "test[0]" and rows[-1]["file"] == "test[9999]"


# ----------------------------------------------------------------------------------------------------
# mistakes: one line naming the problem and the fix, exit 2, no folder left behind


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("--trainer.max_epoks=2", "did you mean 'trainer.max_epochs'"),
        ("--trainer.max_epoch=2", "did you mean 'trainer.max_epochs'"),  # a prefix of a key is a typo too
        ("--model.optimizer.init_args.lrr=0.01", "did you mean 'model.optimizer.init_args.lr'"),
        ("--trainer.max_epochs=ten", "--trainer.max_epochs: expected int, got ten"),
        ("--model.optimizer.init_args.lr=abc", "--model.optimizer.init_args.lr: expected float or Tensor, got abc"),
        (
            "--model.tta flipp",
            "--model.tta: expected one of 'none', 'flip', 'flip_shift', got flipp",
        ),  # not a key's typo
        ("--model.network=fashion_mnist_lightning.network.ResNet", "network.ResNet cannot be imported"),
        ("--data.batch_size 0", "--data.batch_size must be >= 1"),
        ("--data.val_size 60000", "--data.val_size must be between"),
        ("--model.optimizer.init_args.lr -1", "Invalid learning rate"),
        ("--ckpt_path best", "best is for validate, test and predict"),
        ("--ckpt_path last", "no run in lightning_logs has a checkpoint"),
        ("--ckpt_path no/such.ckpt", "no/such.ckpt does not exist"),
    ],
)
def test_a_mistake_in_fit_is_one_line_exit_2_and_leaves_no_folder(workspace, in_process, flags, expected):
    result = in_process(f"{FAST} {flags}", expect=2)
    assert expected in result.error and "Traceback" not in result.output
    assert not (workspace.path / "lightning_logs").exists()


def test_a_setting_lightning_refuses_once_the_run_starts_is_one_line_exit_2(workspace, in_process):
    """base.yaml's LearningRateMonitor needs a logger: Lightning refuses it in on_train_start, after set-up."""
    result = in_process(f"{FAST} {' '.join(SMALL)} --trainer.logger=false", expect=2)
    assert "LearningRateMonitor" in result.error and "configs/base.yaml" in result.error
    assert "Traceback" not in result.output


def test_a_run_too_short_for_its_schedule_is_one_line_exit_2_and_leaves_no_folder(workspace):
    """OneCycle with a 10 % warm-up over 10 steps has a one-step phase that torch divides by zero on."""
    result = workspace.run(
        "fashion-mnist fit --config configs/strong.yaml --trainer.max_epochs=1 --trainer.limit_train_batches=10 "
        "--model.scheduler.init_args.pct_start=0.1",
        expect=2,
    )
    assert "10 optimizer steps is too short" in result.error and "pct_start" in result.error
    assert "Traceback" not in result.output
    assert not (workspace.path / "lightning_logs").exists()


def test_the_same_typo_in_a_config_file_gets_the_same_suggestion(workspace, in_process):
    config = workspace.path / "typo.yaml"
    config.write_text("trainer:\n  max_epoks: 2\n")
    result = in_process("fashion-mnist fit --config configs/fast.yaml --config typo.yaml", expect=2)
    assert "did you mean 'trainer.max_epochs'" in result.error


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_or_with_nothing_trained_is_one_line(workspace, in_process, command):
    assert "--ckpt_path" in in_process(f"fashion-mnist {command} --config configs/fast.yaml", expect=2).error
    for keyword in ("best", "last"):
        result = in_process(f"fashion-mnist {command} --config configs/fast.yaml --ckpt_path {keyword}", expect=2)
        assert "train one first" in result.error
    assert not (workspace.path / "lightning_logs").exists()


def test_gpu_configs_without_a_gpu_are_one_line_and_run_with_accelerator_cpu(workspace, in_process):
    for config in ("gpu", "gpu_ddp"):
        result = in_process(f"fashion-mnist fit --config configs/{config}.yaml", expect=2)
        assert "--trainer.accelerator cpu" in result.error
    assert not (workspace.path / "lightning_logs").exists()
    result = workspace.run(
        f"fashion-mnist fit --config configs/gpu.yaml --trainer.accelerator cpu {' '.join(SMALL)}", timeout=400
    )
    assert "torch.jit.trace a dynamo-optimized function" not in result.output  # no graph of a compiled network


def test_corrupt_and_foreign_checkpoints_are_one_line_and_left_alone(workspace):
    bad = workspace.path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    assert (
        "is not a readable checkpoint"
        in workspace.run(f"fashion-mnist test --config configs/fast.yaml --ckpt_path {bad}", expect=2).error
    )
    assert bad.read_bytes() == b"not a checkpoint at all"
    other = workspace.path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(4, 4)}, "hyper_parameters": {}}, other)
    line = workspace.run(f"fashion-mnist test --config configs/fast.yaml --ckpt_path {other}", expect=2).error
    assert "holds a different network than the config's" in line and "encoder.weight" in line
    foreign = workspace.path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "somewhere.OtherModel", "depth": 3}}, foreign)
    before = foreign.read_bytes()
    assert (
        "was not written for this model"
        in workspace.run(f"fashion-mnist test --config configs/fast.yaml --ckpt_path {foreign}", expect=2).error
    )
    assert foreign.read_bytes() == before
    assert not (workspace.path / "lightning_logs").exists()


def test_a_checkpoint_brings_its_own_network_config(workspace):
    """LightningCLI takes the model hyper-parameters from the checkpoint: a VGGNet checkpoint tests as a VGGNet
    under a SeedCNN config, instead of failing on mismatched weights."""
    workspace.run(
        f"{FAST} --model.network=fashion_mnist_lightning.network.VGGNet --model.network.width=4 {' '.join(SMALL)}"
    )
    workspace.run("fashion-mnist test --config configs/fast.yaml --ckpt_path last")


def test_a_run_folder_that_cannot_be_created_is_one_line(workspace):
    (workspace.path / "lightning_logs").write_text("a file where the runs folder should be")
    result = workspace.run(FAST, expect=2)
    assert "cannot create a run folder" in result.error and "save_dir" in result.error
    assert (workspace.path / "lightning_logs").read_text() == "a file where the runs folder should be"


def test_a_limit_of_1_means_one_batch_not_100_percent(workspace):
    """jsonargparse reads `1` as 1.0, which Lightning would take as 100 %; the CLI keeps the user's meaning."""
    result = workspace.run(f"{FAST} --trainer.limit_train_batches=1 --trainer.limit_val_batches=1")
    assert "Validation DataLoader 0: 100%|██████████| 1/1" in result.output
    assert torch.load(workspace.runs()[0] / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 1


def test_module_entry_point_matches_the_console_script(workspace):
    result = subprocess.run(
        [sys.executable, "-m", "fashion_mnist_lightning.cli", "fit", "--config", "configs/fast.yaml", "--print_config"],
        cwd=workspace.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout == workspace.run(f"{FAST} --print_config").output


def test_help_lists_every_command_and_a_misspelt_one_gets_a_suggestion(workspace, in_process):
    helped = in_process("fashion-mnist --help")
    assert all(command in helped.output for command in ("fit", "predict", "sweep", "report", "export", "crosscheck"))
    result = in_process("fashion-mnist swep --config configs/sweeps/smoke.yaml", expect=2)
    [line] = result.error.strip().splitlines()
    assert "unknown command 'swep'" in line and "did you mean 'sweep'" in line, line
    assert not (workspace.path / "lightning_logs").exists()


# ----------------------------------------------------------------------------------------------------
# leaning on LightningCLI: one optimizer (the model's), errors from the library's own words, no private members


@pytest.mark.parametrize("how", ["flag", "config file"])
def test_the_top_level_optimizer_does_not_exist_and_the_hint_names_the_models(workspace, in_process, how):
    """LightningCLI's --optimizer would replace the module's parameter groups and schedule (a silent recipe swap);
    with auto_configure_optimizers=False it is a typo-style error pointing at model.optimizer."""
    if how == "flag":
        extra = "--optimizer torch.optim.SGD --optimizer.lr 0.05"
    else:
        sgd = "optimizer:\n  class_path: torch.optim.SGD\n  init_args:\n    lr: 0.05\n"
        (workspace.path / "sgd.yaml").write_text(sgd)
        extra = "--config sgd.yaml"
    result = in_process(f"{FAST} {extra}", expect=2)
    assert "did you mean 'model.optimizer" in result.error
    assert not (workspace.path / "lightning_logs").exists()
    assert "--lr_scheduler" not in in_process("fashion-mnist fit --help").output


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("--model.label_smoothing 1.5", "label_smoothing must be in [0, 1)"),
        ("--model.optimizer.init_args.momentum 2 --model.optimizer torch.optim.SGD", "momentum"),
        ("--trainer.callbacks+=fashion_mnist_lightning.speedrun.Lookahead --trainer.callbacks.decay 0", "decay"),
    ],
)
def test_values_a_loss_optimizer_or_callback_would_reject_later_are_refused_at_once(
    workspace, in_process, flags, expected
):
    result = in_process(f"{FAST} {flags}", expect=2)
    assert expected in result.error
    assert not (workspace.path / "lightning_logs").exists()


def test_no_private_member_of_lightning_jsonargparse_or_optuna_is_used():
    """The names the template used to reach into (issue #20); README "Library internals" lists what remains."""
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
    privates = ("_parse_ckpt_path", "_subcommands_action", "_name_parser_map", "_average_model",
                "_copy_average_to_current", "._storage", "self._trainer", "import WeightAveraging")  # fmt: skip
    for private in privates:
        assert private not in source, private


def test_importing_the_package_changes_no_process_wide_state():
    """Warning filters, logging filters and the umask are as they were after importing every module."""
    code = """
import importlib, logging, os, pkgutil, warnings
import fashion_mnist_lightning as package
import lightning.pytorch, torch  # the libraries' own import-time changes are theirs
before = (list(warnings.filters), {n: list(l.filters) for n, l in logging.Logger.manager.loggerDict.items()
                                   if isinstance(l, logging.Logger)}, os.umask(0o022))
os.umask(before[2])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
after = (list(warnings.filters), {n: list(l.filters) for n, l in logging.Logger.manager.loggerDict.items()
                                  if isinstance(l, logging.Logger) and n in before[1]}, os.umask(0o022))
assert after[0] == before[0], [f for f in after[0] if f not in before[0]]
assert after[1] == {n: f for n, f in before[1].items() if n in after[1]}
assert after[2] == before[2]
print("unchanged")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "unchanged", done.stderr[-2000:]


def test_a_command_reads_its_checkpoint_once(trained, monkeypatch, tmp_path):
    """The CLI reads a --ckpt_path file once (weights_only) for every check; Lightning reads it for itself."""
    from fashion_mnist_lightning import cli
    from fashion_mnist_lightning.runs import checkpoint_io

    reads = []
    real = checkpoint_io.read_checkpoint
    monkeypatch.setattr(checkpoint_io, "read_checkpoint", lambda path: reads.append(str(path)) or real(path))
    import shutil

    workspace = Workspace(tmp_path)  # a copy of the trained run: the evaluation folder goes there
    shutil.copytree(trained, tmp_path / "lightning_logs" / "version_0")
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    argv = ["validate", "--config", "configs/default.yaml", "--ckpt_path", str(checkpoint)]
    argv.append("--trainer.limit_val_batches=1")
    assert cli.main(argv) == 0
    assert reads.count(str(checkpoint)) == 1, reads
    assert (workspace.runs()[0] / "evaluations" / "validate_0").is_dir()


def test_best_and_last_with_a_runs_own_config_are_that_runs_not_the_newest(workspace):
    for _ in range(2):
        workspace.run(f"{FAST} --trainer.limit_train_batches=5 --trainer.limit_val_batches=1")
    first, second = workspace.runs()
    result = workspace.run(
        f"fashion-mnist predict --config {first.relative_to(workspace.path)}/config.yaml --ckpt_path best "
        "--trainer.limit_predict_batches=1"
    )
    assert f"evaluating {first.relative_to(workspace.path)}/checkpoints/epoch" in result.output
    assert (first / "evaluations/predict_0").is_dir() and not (second / "evaluations").exists()
    plain = workspace.run(
        "fashion-mnist test --config configs/fast.yaml --ckpt_path best --trainer.limit_test_batches=1"
    )
    assert f"evaluating {second.relative_to(workspace.path)}/" in plain.output  # a recipe: the newest run
