"""What each of issue #36's techniques costs, against configs/strong.yaml's step, in one run (interleaved, median of
REPS): AirNet's CPU training step (batch 640, bf16 autocast, channels_last) with torch's Nesterov SGD and with
MuonSGD (Newton-Schulz on every filter tensor), and the evaluation of the 10,000 test images with the six
test-time views against the selective views (the plain view for all, the other five only where the plain view's top
probability is below 0.85), as FashionMNISTClassifier.evaluate runs them: seconds and images through the network.
Which images are doubtful depends on the trained weights: the evaluation takes a strong recipe's checkpoint.

.venv/bin/python benchmarks/technique_cost.py --ckpt_path lightning_logs/<a strong run>/checkpoints/last.ckpt
  -> prints a table, writes benchmarks/results/technique_cost.json
"""

import argparse
import functools
import json
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from fashion_mnist_lightning.data.files import load_cache
from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.muon import MuonSGD
from fashion_mnist_lightning.network import AirNet
from fashion_mnist_lightning.runs.memory import keep_freed_memory
from fashion_mnist_lightning.runs.precision import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REPS, STEPS, WARMUP, BATCH = 7, 20, 3, 640
SGD = dict(lr=0.05, momentum=0.85, nesterov=True, weight_decay=0.00104)  # strong.yaml's, at a fixed lr
OPTIMIZERS = {
    "Nesterov SGD (strong.yaml before issue #36)": functools.partial(torch.optim.SGD, **SGD),
    "MuonSGD (filters by Muon, 3 Newton-Schulz steps)": functools.partial(MuonSGD, **SGD, muon_lr_ratio=0.1),
}
VIEWS = {"six views for every image": 1.0, "selective: six views where the top probability < 0.85": 0.85}


def module(ckpt_path: Path | None = None) -> FashionMNISTClassifier:
    torch.manual_seed(0)
    made = FashionMNISTClassifier(network=AirNet(), channels_last=True, tta="flip_shift", norm_lr_scale=64.0)
    if ckpt_path is not None:
        made.load_state_dict(torch.load(ckpt_path, weights_only=True)["state_dict"])
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


def evaluation(model: FashionMNISTClassifier, below: float, images, labels) -> tuple[float, int, float]:
    """Seconds, images through the network and accuracy for the test images (N, 1, 28, 28) in batches of 1000 (the
    test loader's), under bf16 autocast as the recipe's Trainer runs them."""
    model.tta_below = below
    seen = []
    hook = model.network.register_forward_hook(lambda net, args, out: seen.append(len(args[0])))
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.cat([model.evaluate(batch) for batch in images.split(1000)])  # (10000, classes)
    seconds = time.perf_counter() - start
    hook.remove()
    return seconds, sum(seen), (logits.argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint of configs/strong.yaml's AirNet")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    trained = module(args.ckpt_path).eval()
    arrays = load_cache(ROOT / "data")
    images, labels = arrays["test_images"].unsqueeze(1).float().div(255), arrays["test_labels"]  # (10000, 1, 28, 28)
    steps = {name: [] for name in OPTIMIZERS}
    evals = {name: [] for name in VIEWS}
    passes, accuracy = {}, {}
    for _ in range(REPS):  # interleaved: this VM's speed drifts by several % over minutes
        for name, make in OPTIMIZERS.items():
            steps[name].append(round(ms_per_step(make), 1))
        for name, below in VIEWS.items():
            seconds, passes[name], accuracy[name] = evaluation(trained, below, images, labels)
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
        "test_accuracy": accuracy,
        "checkpoint": str(args.ckpt_path),
    }
    for name, ms in record["ms_per_training_step_median"].items():
        print(f"{ms:7.1f} ms per training step (median of {steps[name]})  {name}")
    for name, seconds in record["evaluation_seconds_median_10k"].items():
        print(f"{seconds:7.2f} s per 10k test images, {passes[name]:,} passes, {accuracy[name]:.4f} accurate  {name}")
    print(record["cpu"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "technique_cost.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
