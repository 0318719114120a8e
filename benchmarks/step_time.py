"""AirNet's CPU training step (batch 512, bf16 autocast, channels_last, Nesterov SGD) with and without the two
ideas tried for configs/strong.yaml's speed: glibc keeping freed memory (runs/memory.py, used) and a frozen
whitening bias, so that no gradient flows into the first group's input (speedrun.FreezeWhiteningBias, opt-in: with
the bias frozen after 3 of 24 epochs strong.yaml scored 95.02 / 94.87 % on seeds 1 / 2 against 95.13 / 95.09 %
trained throughout). Each variant runs in its own process (mallopt cannot be undone). The medians of 3 interleaved
runs move by ~10 % from one invocation to the next on this VM; compare variants within one invocation.

.venv/bin/python benchmarks/step_time.py   -> prints a table, writes benchmarks/results/step_time.json
"""

import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPS = 3
VARIANTS = {  # name: (keep freed memory, whitening bias trained)
    "glibc default (before)": (False, True),
    "glibc default, whitening bias frozen": (False, False),
    "keep freed memory (now)": (True, True),
    "keep freed memory, whitening bias frozen": (True, False),
}


def measure(keep: bool, whitening_bias: bool, steps: int = 30) -> float:
    """Mean milliseconds per training step after 5 warm-up steps."""
    import torch
    import torch.nn.functional as F

    from fashion_mnist_lightning.network import AirNet
    from fashion_mnist_lightning.runs.memory import keep_freed_memory

    if keep:
        assert keep_freed_memory()
    torch.manual_seed(0)
    network = AirNet().to(memory_format=torch.channels_last)
    network.whiten.bias.requires_grad_(whitening_bias)  # frozen: backward stops at the first group's conv
    optimizer = torch.optim.SGD(
        [p for p in network.parameters() if p.requires_grad], lr=0.01, momentum=0.85, nesterov=True
    )
    images = torch.rand(512, 1, 28, 28).contiguous(memory_format=torch.channels_last)  # (N, 1, 28, 28)
    labels = torch.randint(0, 10, (512,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(network(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    if len(sys.argv) == 3:  # a child: one variant
        print(measure(sys.argv[1] == "1", sys.argv[2] == "1"))
        return
    times = {name: [] for name in VARIANTS}
    for _ in range(REPS):  # interleaved: this VM's speed drifts by several % over minutes
        for name, (keep, bias) in VARIANTS.items():
            out = subprocess.run(
                [sys.executable, __file__, str(int(keep)), str(int(bias))],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            times[name].append(round(float(out.stdout.strip().splitlines()[-1]), 1))
    rows = {name: statistics.median(ms) for name, ms in times.items()}
    for name, ms in rows.items():
        print(f"{ms:7.1f} ms/step (median of {times[name]})  {name}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    record = {"ms_per_step_median": rows, "runs": times, "date": date.today().isoformat()}
    (RESULTS / "step_time.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
