"""benchmarks/gpu_check.sh, run on the CPU as the GPU machine will run it (the tests' only change: the accelerator
and tiny limits), with the DDP run forced on: every run finishes, the table reports what each one did, and the
template's epoch is set against its own step run bare."""

import copy
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, precision_fix

sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_stats import Seen  # noqa: E402  (benchmarks/gpu_stats.py: the script's callback)

TINY = (
    "--trainer.accelerator cpu --trainer.max_epochs 2 --trainer.limit_train_batches 4 --trainer.limit_val_batches 1 "
    "--trainer.limit_test_batches 1 --trainer.check_val_every_n_epoch 1"
)
# a CPU without bfloat16 instructions emulates them (~9x slower): there the runs take the note's fix, float32, and
# the table must say bf16 was off; on a GPU, or a CPU with them, bf16 autocast runs and the table says so
EMULATED = precision_fix("gpu")


@pytest.mark.slow
def test_the_gpu_check_runs_every_recipe_up_to_the_device_and_prints_what_it_measured(tmp_path):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path / "check"), "GPU_CHECK_DEVICES": "2", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), *TINY.split(), *EMULATED],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = result.stdout + result.stderr
    (tmp_path / "output.txt").write_text(output)
    assert result.returncode == 0 and "Traceback" not in output, output[-3000:]
    rows = {line.split()[0]: line.split() for line in output.splitlines() if re.match(r"(gpu|strong|gpu_ddp) ", line)}
    assert set(rows) == {"gpu", "strong", "gpu_ddp"}, output[-3000:]
    for name, (_, devices, device, wall, epoch, accuracy, memory, compiled, bf16) in rows.items():
        assert (devices, device) == ("2" if name == "gpu_ddp" else "1", "cpu"), rows[name]
        assert float(wall.rstrip("s")) > float(epoch.rstrip("s")) > 0 and 5 < float(accuracy.rstrip("%")) <= 100
        assert memory == "n/a" and bf16 == ("no" if EMULATED else "yes"), rows[name]  # the CPU has no CUDA memory
        assert compiled == "yes", rows[name]  # every GPU run compiles its network, and it ran compiled
        run = tmp_path / "check" / name / "lightning_logs/version_0"
        assert (run / "checkpoints/last.ckpt").is_file() and (run / "config.yaml").is_file()
    own = {line.split()[2]: line.split() for line in output.splitlines() if line.startswith("own step: ")}
    assert set(own) == {"gpu", "strong"}, output[-3000:]  # the template against its own bare step, each recipe
    for name, (*_, template, _, bare, _, ratio) in own.items():
        seconds = float(template.rstrip("s")), float(bare.rstrip("s"))
        assert min(seconds) > 0 and float(ratio.rstrip("x")) == pytest.approx(seconds[0] / seconds[1], rel=0.01)
        assert len((tmp_path / "check" / name / "bare.jsonl").read_text().splitlines()) == 2  # one line per epoch
    assert not (tmp_path / "lightning_logs").exists()  # the runs stay in GPU_CHECK_DIR

    before = {p: p.read_bytes() for p in (tmp_path / "check").rglob("*") if p.is_file()}
    again = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), *TINY.split()],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "GPU_CHECK_DIR" in again.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "check").rglob("*") if p.is_file()} == before  # nothing lost


def test_the_check_tells_an_eager_float32_forward_from_a_bf16_one_and_survives_a_copy_of_the_network():
    seen, network = Seen(), torch.nn.Linear(4, 2)
    network.register_forward_hook(seen)
    network(torch.rand(3, 4))
    assert (seen.compiled, seen.logits_dtype) == (False, torch.float32)
    with torch.autocast("cpu", torch.bfloat16):
        network(torch.rand(3, 4))
    assert seen.logits_dtype == torch.bfloat16
    assert copy.deepcopy(network)._forward_hooks.popitem()[1] is seen  # a copy of the network shares it
