"""A bf16 precision on a CPU without bfloat16 instructions gets one line with the fix; nothing else changes."""

from pathlib import Path

import pytest

from fashion_mnist_lightning.runs.precision import cpu_has_bf16, warn_if_emulated

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni vaes\n"  # AVX2 only: emulated
SAPPHIRE_RAPIDS = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "Features\t: fp asimd sve bf16 i8mm\n"


def cpuinfo(tmp_path: Path, text: str, name: str = "cpuinfo") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "has"), [(ZEN3, False), (SAPPHIRE_RAPIDS, True), (GRAVITON3, True)])
def test_the_cpu_flags_tell_whether_bfloat16_is_in_hardware(tmp_path, text, has):
    assert cpu_has_bf16(cpuinfo(tmp_path, text)) is has


def test_without_a_cpuinfo_it_is_unknown_and_says_nothing(tmp_path, capsys):
    assert cpu_has_bf16(tmp_path / "absent") is None
    assert not warn_if_emulated("bf16-mixed", True, tmp_path / "absent")
    assert capsys.readouterr().err == ""


def test_one_line_with_the_fix_only_for_bf16_on_a_cpu_that_emulates_it(tmp_path, capsys):
    zen3, spr = cpuinfo(tmp_path, ZEN3, "zen3"), cpuinfo(tmp_path, SAPPHIRE_RAPIDS, "spr")
    assert warn_if_emulated("bf16-mixed", True, zen3)
    [line] = capsys.readouterr().err.splitlines()
    assert "bf16-mixed" in line and "--trainer.precision 32-true" in line
    quiet = [("bf16-true", True, spr), ("32-true", True, zen3), ("16-mixed", True, zen3), ("bf16-mixed", False, zen3)]
    assert not any(warn_if_emulated(*case) for case in quiet)
    assert warn_if_emulated("bf16-true", True, zen3)
    assert capsys.readouterr().err.count("\n") == 1


def test_the_command_says_it_once_on_this_machine_exactly_when_it_applies(workspace):
    """On this machine, whichever kind it is: a bf16 run prints the note once iff the CPU emulates bf16."""
    small = "--trainer.max_epochs=1 --trainer.limit_train_batches=2 --trainer.limit_val_batches=1"
    result = workspace.run(f"fashion-mnist fit --config configs/fast.yaml --trainer.precision bf16-mixed {small}")
    assert len(result.lines("note: trainer.precision bf16-mixed")) == (1 if cpu_has_bf16() is False else 0)
    float32 = workspace.run(f"fashion-mnist fit --config configs/fast.yaml {small}")
    assert not float32.lines("note: trainer.precision")
