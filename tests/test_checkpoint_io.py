"""runs/checkpoint_io.py through the commands: checkpoints are read without running code, and the CLI's Trainer
really writes them atomically and stops on signals (the template's plugin and callbacks are installed)."""

import pickle

import pytest

from conftest import ROOT


class RunsCode:
    """Unpickling this calls os.system: what a malicious .ckpt would do under torch.load(weights_only=False)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def poisoned(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "poisoned.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": {}, "payload": RunsCode(marker)}, f)
    return path, marker


@pytest.mark.parametrize(
    "command",
    [
        "test --config configs/fast.yaml --ckpt_path {ckpt}",
        "validate --config configs/fast.yaml --ckpt_path {ckpt}",
        "export --ckpt_path {ckpt} --output {out}",
        "report --ckpt_path {ckpt}",
        "crosscheck --ckpt_path {ckpt}",
    ],
)
def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_the_code_never_runs(
    workspace, in_process, poisoned, command
):
    path, marker = poisoned
    result = in_process(f"fashion-mnist {command.format(ckpt=path, out=workspace.path / 'out.pt')}", expect=2)
    assert "is not a readable checkpoint" in result.error
    assert not marker.exists() and not (workspace.path / "out.pt").exists()


def test_the_cli_trainer_uses_the_atomic_writer_and_the_signal_callback(workspace):
    env = {"PYTHONPATH": str(ROOT / "tests" / "helpers")}
    workspace.run(
        "fashion-mnist fit --config configs/fast.yaml --trainer.fast_dev_run=true "
        "--trainer.callbacks+=inspect_trainer.ReportTrainer",
        env=env,
    )
    report = (workspace.path / "trainer.txt").read_text().split()
    assert report == ["AtomicCheckpointIO", "CheckpointOnSignal", "FiniteLossGuard", "RNGStates"]
