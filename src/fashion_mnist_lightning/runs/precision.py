"""bfloat16 on a CPU without bfloat16 instructions: torch emulates it, and a training step runs ~11x slower than
float32 (AirNet, batch 512, 2 AVX2 cores: 8.22 s vs 0.73 s, benchmarks/cpu_bf16.py). A recipe measured on a CPU
that has them (strong.yaml) would then take hours instead of minutes; this says so once, with the fix, and changes
nothing by itself."""

import platform
import sys
from pathlib import Path

# /proc/cpuinfo's names for bfloat16 arithmetic: x86 AVX-512 BF16 and AMX (Intel Cooper Lake and later, AMD Zen 4
# and later), Arm's FEAT_BF16 (Graviton 3, Apple M2 and later)
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (what every benchmark figure is recorded with)."""
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = (line.partition(":")[2].strip() for line in lines if line.startswith("model name"))
    return next(names, platform.processor())


def cpu_has_bf16(cpuinfo: Path = CPUINFO) -> bool | None:
    """Whether the CPU lists bfloat16 instructions; None where there is no /proc/cpuinfo to ask (not Linux)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return None
    flags = {
        flag for line in lines if line.startswith(("flags", "Features")) for flag in line.partition(":")[2].split()
    }
    return bool(flags & BF16_FLAGS)


def warn_if_emulated(precision: str, on_cpu: bool, cpuinfo: Path = CPUINFO) -> bool:
    """One line on stderr when a bf16 precision would run emulated on this CPU; returns whether it printed."""
    if not (on_cpu and precision.startswith("bf16") and cpu_has_bf16(cpuinfo) is False):
        return False
    print(
        f"note: trainer.precision {precision} on a CPU without bfloat16 instructions (no {'/'.join(sorted(BF16_FLAGS))}"
        " in /proc/cpuinfo): torch emulates them and training runs ~11x slower than float32; on this machine pass "
        "--trainer.precision 32-true",
        file=sys.stderr,
        flush=True,
    )
    return True
