"""What each of issue #36's techniques costs, against configs/strong.yaml's step, in one run (interleaved, median of
REPS): AirNet's CPU training step (batch 512, bf16 autocast, channels_last) with torch's Nesterov SGD and with
MuonSGD (Newton-Schulz on every filter tensor), and the evaluation of 10,000 images with the six test-time views
against the selective views (the plain view for all, the other five for the least confident quarter), as
FashionMNISTClassifier.evaluate runs them: seconds and images through the network.

.venv/bin/python benchmarks/technique_cost.py   -> prints a table, writes benchmarks/results/technique_cost.json
"""

import functools
import json
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.muon import MuonSGD
from fashion_mnist_lightning.network import AirNet
from fashion_mnist_lightning.runs.memory import keep_freed_memory
from fashion_mnist_lightning.runs.precision import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
REPS, STEPS, WARMUP, BATCH, TEST_IMAGES = 3, 20, 3, 512, 10_000
SGD = dict(lr=0.05, momentum=0.85, nesterov=True, weight_decay=0.00104)  # strong.yaml's
OPTIMIZERS = {
    "Nesterov SGD (strong.yaml today)": functools.partial(torch.optim.SGD, **SGD),
    "MuonSGD (filters by Muon, 3 Newton-Schulz steps)": functools.partial(MuonSGD, **SGD, muon_lr_ratio=0.1),
}
VIEWS = {"six views for every image": 1.0, "selective: six views for the least confident 25 %": 0.25}


def module() -> FashionMNISTClassifier:
    torch.manual_seed(0)
    made = FashionMNISTClassifier(network=AirNet(), channels_last=True, tta="flip_shift", norm_lr_scale=64.0)
    made.configure_model()
    return made


def ms_per_step(make_optimizer) -> float:
    model = module().train()
    optimizer = make_optimizer(model.parameter_groups())
    images = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)  # (N, 1, 28, 28)
    labels = torch.randint(0, 10, (BATCH,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return 1000 * (time.perf_counter() - start) / STEPS


def evaluation(fraction: float) -> tuple[float, int]:
    """Seconds and images through the network for TEST_IMAGES images in batches of 500 (the test loader's)."""
    model = module().eval()
    model.tta_fraction = fraction
    seen = []
    model.network.register_forward_hook(lambda net, args, out: seen.append(len(args[0])))
    images = torch.rand(TEST_IMAGES, 1, 28, 28)
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in images.split(500):
            model.evaluate(batch)
    return time.perf_counter() - start, sum(seen)


def main() -> None:
    keep_freed_memory()  # as the CLI does
    steps = {name: [] for name in OPTIMIZERS}
    evals = {name: [] for name in VIEWS}
    passes = {}
    for _ in range(REPS):  # interleaved: this VM's speed drifts by several % over minutes
        for name, make in OPTIMIZERS.items():
            steps[name].append(round(ms_per_step(make), 1))
        for name, fraction in VIEWS.items():
            seconds, passes[name] = evaluation(fraction)
            evals[name].append(round(seconds, 2))
    record = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "date": date.today().isoformat(),
        "ms_per_training_step_median": {name: statistics.median(ms) for name, ms in steps.items()},
        "training_step_runs": steps,
        "evaluation_seconds_median_10k": {name: statistics.median(s) for name, s in evals.items()},
        "evaluation_runs": evals,
        "images_through_the_network_10k": passes,
    }
    for name, ms in record["ms_per_training_step_median"].items():
        print(f"{ms:7.1f} ms per training step (median of {steps[name]})  {name}")
    for name, seconds in record["evaluation_seconds_median_10k"].items():
        print(f"{seconds:7.2f} s per 10k test images, {passes[name]:,} images through the network  {name}")
    print(record["cpu"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "technique_cost.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
