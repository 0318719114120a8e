"""strong.yaml's training step on this CPU in float32 and under bf16 autocast: AirNet as shipped, batch 512,
channels_last, the mean cross-entropy's backward. Where the CPU has bfloat16 instructions (avx512_bf16 / amx_bf16)
bf16 is the faster; where it has not, torch emulates it and the run prints a note (runs/precision.py) saying to
pass --trainer.precision 32-true. This measures by how much, and records which CPU it was.

.venv/bin/python benchmarks/cpu_bf16.py   -> prints a line, writes benchmarks/results/cpu_bf16_<flags>.json
"""

import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from fashion_mnist_lightning.network import AirNet
from fashion_mnist_lightning.runs.precision import cpu_has_bf16, cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, STEPS, WARMUP = 512, 5, 2


def seconds_per_step(bf16: bool) -> list[float]:
    """Wall seconds of each measured forward + backward (after WARMUP unmeasured ones)."""
    torch.manual_seed(0)
    network = AirNet().to(memory_format=torch.channels_last)
    images = torch.rand(BATCH, 1, 28, 28).to(memory_format=torch.channels_last)  # (512, 1, 28, 28)
    labels = torch.randint(0, 10, (BATCH,))
    times = []
    for step in range(WARMUP + STEPS):
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(network(images), labels)
        loss.backward()
        network.zero_grad(set_to_none=True)
        if step >= WARMUP:
            times.append(time.perf_counter() - began)
    return times


def main() -> int:
    runs = {"float32": seconds_per_step(False), "bf16 autocast": seconds_per_step(True)}
    median = {name: statistics.median(times) for name, times in runs.items()}
    has = cpu_has_bf16()
    result = {
        "date": date.today().isoformat(),
        "command": "python benchmarks/cpu_bf16.py",
        "cpu": cpu_model(),
        "cores": torch.get_num_threads(),
        "bf16_instructions": has,
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "s_per_step_median": median,
        "s_per_step": runs,
        "bf16_over_float32": median["bf16 autocast"] / median["float32"],
    }
    name = {True: "native", False: "emulated", None: "unknown"}[has]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cpu_bf16_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['cpu']} ({result['capability']}, bf16 instructions: {has}): AirNet step at batch {BATCH}: "
        f"float32 {median['float32']:.2f} s, bf16 autocast {median['bf16 autocast']:.2f} s "
        f"({result['bf16_over_float32']:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
