#!/usr/bin/env python3
"""`make bench`: one training epoch of the seed CNN through four paths, interleaved, in ONE run.

  (a) template  - `fashion-mnist fit --config configs/default.yaml`, default callbacks, logger, progress bar on
  (b) raw       - benchmarks/anchors/raw_loop.py: a hand-written in-memory loop
  (c) seed      - benchmarks/anchors/seed_loop.py: the seed article's loop (torchvision + ToTensor + DataLoader)
  (d) peer      - benchmarks/peer_path.py: the same LightningModule fed the usual way (torchvision + ToTensor)

Each repetition runs every path once, in turn, for 2 epochs; the second (steady-state) epoch is the figure.

Then the template against its own step run bare (benchmarks/bare_step.py: the objects `fashion-mnist fit` builds,
in a plain loop) and against Lightning's floor (`bare_step.py --floor`: the same step in a LightningModule with
nothing else, a Trainer with everything off), for the default and the strong recipe, 3 epochs each, interleaved;
the second epoch's training steps and its whole (start to the next epoch's start) are the figures. Then two runs
of each of the template and the floor under Lightning's SimpleProfiler: the table of what only the template does.
Also: the data loader alone, time to the first training step, predict throughput and peak memory, the
NumPy reference's forward over the 10k test images, and a cProfile summary of the template's epoch.
Writes benchmarks/results/bench.json and bench.md. Fails only on errors, never on a ratio.
  python benchmarks/bench.py [--reps 3] [--batch-size 256] [--make-train] [--smoke]
"""

import argparse
import io
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fashion_mnist_lightning.runs.precision import cpu_model  # noqa: E402

BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
ANCHORS = BENCH / "anchors"  # the baseline loops, as shipped with the project brief (shared/anchors)
PY = sys.executable
# The template trains on its 55k split; the anchors and the peer path on all 60k: ratios compare time per image.
IMAGES = {"template": 55_000, "raw": 60_000, "seed": 60_000, "peer": 60_000}
EPOCHS = 2  # per path and repetition; --smoke: 1
SMOKE_LIMITS: list[str] = []  # --smoke: the template's runs see a few batches only
SMOKE_BATCHES = 20  # --smoke: the template's training batches per run
SMOKE_IMAGES = (6_000, 1_000)  # --smoke: the first training and test images, what the other paths read


def run(
    cmd: list[str], env_extra: dict | None = None, log: Path | None = None, stderr_out: bool = False
) -> tuple[str, float, int]:
    """Run a command; return (stdout, wall seconds, peak RSS in MiB of that process).

    ``stderr_out``: stderr goes into the returned text too (Lightning prints its profiler summary there)."""
    env = {**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env_extra or {})}
    out = tempfile.TemporaryFile()
    err = subprocess.STDOUT if stderr_out else open(log, "ab") if log else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    out.seek(0)
    stdout = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed (exit {proc.returncode}): {' '.join(cmd)}; see {log}")
    return stdout, wall, usage.ru_maxrss // 1024


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def raw_data_dir() -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from fashion_mnist_lightning.data.files import candidate_dirs, find_raw

    for folder in candidate_dirs(ROOT / "data"):
        if find_raw(folder):
            return folder
    raise SystemExit("no raw Fashion-MNIST IDX files found; run `make data` first")


def smoke_subset(data_dir: Path, folder: Path) -> Path:
    """--smoke: the first SMOKE_IMAGES of the real IDX files, written as IDX files to ``folder`` for the paths that
    read raw files (they only have to run: a smoke run's figures are not the benchmark's)."""
    import gzip

    from fashion_mnist_lightning.data.files import encode_idx, find_raw, parse_idx, read_idx_file

    folder.mkdir(parents=True, exist_ok=True)
    for stem, path in find_raw(data_dir).items():
        tensor = parse_idx(read_idx_file(path), stem, 3 if "images" in stem else 1)
        keep = SMOKE_IMAGES[0] if stem.startswith("train") else SMOKE_IMAGES[1]
        with gzip.open(folder / f"{stem}.gz", "wb") as f:
            f.write(encode_idx(tensor[:keep]))
    return folder


def template_cmd(logs: Path, *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "fashion_mnist_lightning.cli",
        "fit",
        "--config",
        "configs/default.yaml",
        f"--trainer.logger.init_args.save_dir={logs}",
        "--trainer.callbacks+=timing.BenchTimer",
        *extra,
    ]


def epoch_paths(args, data_dir: Path, logs: Path, log: Path) -> dict[str, list[float]]:
    times = {"template": [], "raw": [], "seed": [], "peer": []}
    bs = str(args.batch_size)
    for rep in range(args.reps):
        for name in times:
            out_file = Path(tempfile.mktemp(suffix=".jsonl"))
            env = {"BENCH_OUT": str(out_file)}
            if name == "template":
                run(
                    template_cmd(logs, f"--trainer.max_epochs={EPOCHS}", f"--data.batch_size={bs}", *SMOKE_LIMITS),
                    env,
                    log,
                )
                epochs = [r["epoch_s"] for r in records(out_file) if "epoch_s" in r]
            elif name == "peer":
                run(
                    [
                        PY,
                        str(BENCH / "peer_path.py"),
                        "--data-dir",
                        str(data_dir),
                        "--epochs",
                        str(EPOCHS),
                        "--batch-size",
                        bs,
                        "--log-dir",
                        str(logs),
                    ],
                    env,
                    log,
                )
                epochs = [r["epoch_s"] for r in records(out_file) if "epoch_s" in r]
            else:
                stdout, _, _ = run(
                    [
                        PY,
                        str(ANCHORS / f"{name}_loop.py"),
                        "--data-dir",
                        str(data_dir),
                        "--epochs",
                        str(EPOCHS),
                        "--batch-size",
                        bs,
                    ],
                    None,
                    log,
                )
                epochs = json.loads(stdout.strip().splitlines()[-1])["epoch_s"]
            times[name].append(epochs[-1])
            print(f"rep {rep + 1}/{args.reps} {name:9s} epoch {epochs[-1]:.2f} s", flush=True)
    return times


# ----------------------------------------------------------------------------------------------------
# the template against its own step run bare (issue #37)

RECIPES = {"default": "configs/default.yaml", "strong": "configs/strong.yaml"}
OWN_EPOCHS = 3  # per run; the second is measured (the first pays warm-up, the last has no next epoch to end at)
OWN_SMOKE_LIMITS: list[str] = []  # --smoke: a few batches per epoch


def own_step_runs(recipe: str, path: str, logs: Path, log: Path, *extra: str) -> list[dict]:
    """One run of ``path`` (template | bare | floor) on ``recipe``: its JSON records."""
    limits = [f"--trainer.max_epochs={OWN_EPOCHS}", *OWN_SMOKE_LIMITS, *extra]
    out = Path(tempfile.mktemp(suffix=".jsonl"))
    if path == "template":
        cmd = template_cmd(logs, *limits)
        cmd[cmd.index("configs/default.yaml")] = RECIPES[recipe]
        run(cmd, {"BENCH_OUT": str(out)}, log)
        return records(out)
    save = f"--trainer.logger.init_args.save_dir={logs}"
    floor = ["--floor"] if path == "floor" else []
    stdout, _, _ = run([PY, str(BENCH / "bare_step.py"), *floor, "--config", RECIPES[recipe], save, *limits], None, log)
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def second_epoch(rows: list[dict]) -> dict:
    """{"train_s", "whole_s"} of the second epoch, from the template's BenchTimer or the bare loops' records."""
    mine = [r for r in rows if r.get("epoch") == 1]
    if any("loop" in r for r in mine):  # the template: training steps as epoch_s, the whole epoch as whole_s
        return {
            "train_s": next(r["epoch_s"] for r in mine if "epoch_s" in r),
            "whole_s": next(r["whole_s"] for r in mine if "whole_s" in r),
        }
    return {"train_s": mine[0]["train_s"], "whole_s": mine[0]["epoch_s"]}


def own_step(args, logs: Path, log: Path) -> dict:
    """Template, bare and floor on each recipe, interleaved (the order turned around every repetition)."""
    result = {}
    for recipe in args.recipes:
        paths = ["template", "bare", "floor"]
        times = {p: [] for p in paths}
        for rep in range(args.reps):
            for path in paths if rep % 2 == 0 else paths[::-1]:
                times[path].append(second_epoch(own_step_runs(recipe, path, logs, log)))
                t = times[path][-1]
                print(f"rep {rep + 1}/{args.reps} {recipe:7s} {path:8s} train {t['train_s']:.2f} s, "
                      f"whole epoch {t['whole_s']:.2f} s", flush=True)  # fmt: skip
        median = {p: {k: statistics.median(t[k] for t in v) for k in ("train_s", "whole_s")} for p, v in times.items()}
        result[recipe] = {"runs": times, "median": median}
        for a, b in (("template", "bare"), ("floor", "bare"), ("template", "floor")):  # runs side by side share
            # the VM's drift (its speed wanders by 10-20 % within minutes): the median of each repetition's ratio
            result[recipe][f"{a}_over_{b}"] = {
                k: statistics.median(x[k] / y[k] for x, y in zip(times[a], times[b])) for k in ("train_s", "whole_s")
            }
    return result


def short_action(action: str) -> str:
    """Lightning's SimpleProfiler names, comparable between the two runs: ModelCheckpoint{'monitor': ...}.hook ->
    ModelCheckpoint.hook, [LightningModule]FashionMNISTClassifier.hook / [LightningModule]StepOnly.hook and the
    DataModule's -> [module].hook (the floor's module does the DataModule's on_after_batch_transfer itself)."""
    action = re.sub(r"\{.*\}", "", action).replace("SingleDeviceStrategy", "Strategy")
    return re.sub(r"\[Lightning(Data)?Module\]\w+", "[module]", action)


def where_the_time_goes(logs: Path, log: Path, recipe: str = "default") -> dict:
    """The template and the floor under Lightning's SimpleProfiler (2 epochs), two runs each in the order template,
    floor, floor, template: every action's seconds per epoch in each (its calls per epoch x a call's median, the
    mean of the two runs), and the difference; the template's largest first, the set-up done once (per "once") last.
    `[Strategy]Strategy.backward` does the same work on both sides: its difference is this table's noise (the VM's
    drift between runs). The profiler adds a few microseconds to every action it times."""
    profiles: dict[str, list[dict]] = {"template": [], "floor": []}
    for path in ("template", "floor", "floor", "template"):
        rows = own_step_runs(recipe, path, logs, log, "--trainer.profiler=simple", f"--trainer.max_epochs={EPOCHS}")
        profiles[path].append(next(r["profile"] for r in rows if "profile" in r))
    epochs, steps = EPOCHS, profiles["floor"][0]["run_training_batch"][0]  # the training steps of the run
    table = {}
    for path, runs in profiles.items():
        for profile in runs:
            for action, (calls, _, median) in profile.items():  # a call's median: a slow first call is not an epoch's
                row = table.setdefault(short_action(action), {"calls": 0, "template": 0.0, "floor": 0.0})
                row[path] += median * calls / epochs / len(runs)
                row["calls"] = max(row["calls"], calls)
    for row in table.values():
        row["extra"] = row["template"] - row["floor"]
        row["per"] = "step" if row["calls"] >= steps else "epoch" if row["calls"] >= epochs else "once"
    ranked = dict(sorted(table.items(), key=lambda item: (item[1]["per"] == "once", -item[1]["template"])))
    return {"recipe": recipe, "epochs": epochs, "steps_per_epoch": steps // epochs, "actions": ranked}


def loader_epoch(batch_size: int) -> float:
    code = f"""
import time
from fashion_mnist_lightning.datamodule import FashionMNISTDataModule
dm = FashionMNISTDataModule(batch_size={batch_size})
dm.prepare_data()
dm.setup("fit")
seconds = []
for _ in range(5):
    start = time.perf_counter()
    for batch in dm.train_dataloader():
        pass
    seconds.append(time.perf_counter() - start)
print(min(seconds))
"""
    return float(run([PY, "-c", code])[0].strip())


def first_step_and_predict(logs: Path, log: Path) -> dict:
    out_file = Path(tempfile.mktemp(suffix=".jsonl"))
    env = {"BENCH_OUT": str(out_file), "BENCH_T0": str(time.time())}
    run(
        template_cmd(
            logs, "--trainer.max_epochs=1", "--trainer.limit_train_batches=5", "--trainer.limit_val_batches=1"
        ),
        env,
        log,
    )
    first = next(r["first_step_s"] for r in records(out_file) if "first_step_s" in r)
    ckpt = max(logs.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    predict_out = Path(tempfile.mktemp(suffix=".jsonl"))
    _, predict_wall, predict_rss = run(
        [
            PY,
            "-m",
            "fashion_mnist_lightning.cli",
            "predict",
            "--config",
            "configs/default.yaml",
            f"--ckpt_path={ckpt}",
            f"--trainer.logger.init_args.save_dir={logs}",
            "--trainer.callbacks+=timing.BenchTimer",
            *(["--trainer.limit_predict_batches=4"] if SMOKE_LIMITS else []),
        ],
        {"BENCH_OUT": str(predict_out)},
        log,
    )
    predicted = next(r for r in records(predict_out) if "images_per_s" in r)
    return {
        "first_step_s": first,
        "predict_images_per_s": predicted["images_per_s"],
        "predict_images": predicted["predict_images"],
        "predict_wall_s": predict_wall,
        "predict_max_rss_mib": predict_rss,
        "ckpt": str(ckpt),
    }


def reference_forward(ckpt: str) -> float:
    stdout, _, _ = run([PY, "-m", "fashion_mnist_lightning.cli", "crosscheck", "--ckpt_path", ckpt])
    line = next(line for line in stdout.splitlines() if line.startswith("NumPy forward time"))
    return float(line.split(":")[1].split()[0])


OP_PROFILE = """
import torch
from torch.profiler import ProfilerActivity, profile
from fashion_mnist_lightning.datamodule import FashionMNISTDataModule
from fashion_mnist_lightning.module import FashionMNISTClassifier
torch.manual_seed(0)
dm = FashionMNISTDataModule(batch_size=256)
dm.prepare_data()
dm.setup("fit")
model = FashionMNISTClassifier(label_smoothing=0.1, channels_last=True)  # the default config's module
model.configure_model()
optimizer = torch.optim.AdamW(model.parameters(), lr=0.006, weight_decay=0.05)
batches = [dm.on_after_batch_transfer(batch, 0) for _, batch in zip(range(120), dm.train_dataloader())]
def step(images, labels):
    loss = model.model_step((images, labels))[0]  # the module's own forward and loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
for batch in batches[:20]:
    step(*batch)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for batch in batches[20:]:
        step(*batch)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=45))
"""


def profile(logs: Path, log: Path) -> str:
    """Three views of where a training epoch goes, largest first, into profile.txt."""
    sections = []
    simple, _, _ = run(
        [
            PY,
            "-m",
            "fashion_mnist_lightning.cli",
            "fit",
            "--config",
            "configs/default.yaml",
            f"--trainer.logger.init_args.save_dir={logs}",
            f"--trainer.max_epochs={EPOCHS}",
            "--trainer.limit_val_batches=0",
            "--trainer.profiler=simple",
            *SMOKE_LIMITS,
            "--trainer.enable_progress_bar=false",
        ],
        {"PYTHONUNBUFFERED": "1"},
        log,
        stderr_out=True,
    )
    cells = [[c.strip() for c in line.strip("|\t ").split("|")] for line in simple.splitlines() if line.startswith("|")]
    rows = [f"{c[0][:58]:58s} {c[1]:>18s} {c[2]:>10s} {c[3]:>15s} {c[4]:>13s}" for c in cells[:14] if len(c) >= 5]
    sections.append(
        "1. Lightning's SimpleProfiler over 2 training epochs (`--trainer.profiler=simple`): seconds per "
        "hook and step phase\n\n" + "\n".join(rows)
    )
    ops, _, _ = run([PY, "-c", OP_PROFILE])
    sections.append(
        "2. torch.profiler over 100 training steps of the default config's module (batch 256, "
        "channels_last): the ops\n\n"
        + "\n".join(line for line in ops.splitlines() if not line.startswith(("USDT", "ERROR")))
    )
    prof = RESULTS / "template_epoch.prof"
    run(
        [
            PY,
            "-m",
            "cProfile",
            "-o",
            str(prof),
            "-m",
            "fashion_mnist_lightning.cli",
            "fit",
            "--config",
            "configs/default.yaml",
            f"--trainer.logger.init_args.save_dir={logs}",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=0",
            *SMOKE_LIMITS,
        ],
        None,
        log,
    )
    stream = io.StringIO()
    pstats.Stats(str(prof), stream=stream).strip_dirs().sort_stats("tottime").print_stats(15)
    sections.append(
        "3. cProfile of one `fashion-mnist fit` epoch, imports and set-up included (Python-level "
        "view)\n" + stream.getvalue()
    )
    summary = RESULTS / "profile.txt"
    summary.write_text("\n\n".join(sections) + "\n")
    return summary.read_text()


def make_train(extra: str = "") -> dict:
    text, wall, rss = run(
        ["make", "train", f"ARGS=--trainer.enable_progress_bar=false {extra}".strip()], None, RESULTS / "make_train.log"
    )
    return {
        "make_train_wall_s": wall,
        "make_train_max_rss_mib": rss,
        "make_train_summary": [line for line in text.splitlines() if line.startswith("test accuracy")],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256, help="the default config's batch size")
    p.add_argument("--make-train", action="store_true", help="also time a full `make train` (about 80 s)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="one repetition of one short epoch per path (20 batches of the template's, the other paths on the "
        "first 6,000 images), profiles of a few batches and a 20-batch `make train`: checks that every step runs; "
        "results go to benchmarks/results/smoke/, not over the real ones",
    )
    p.add_argument(
        "--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="the recipes run against their own "
        "bare step (default: all)",
    )  # fmt: skip
    p.add_argument(
        "--own-step-only",
        action="store_true",
        help="only the template against its own bare step and Lightning's floor, and where the time goes",
    )
    args = p.parse_args()
    global RESULTS, EPOCHS, SMOKE_LIMITS, OWN_SMOKE_LIMITS
    if args.smoke:
        args.reps, RESULTS, EPOCHS = 1, RESULTS / "smoke", 1
        SMOKE_LIMITS = [f"--trainer.limit_train_batches={SMOKE_BATCHES}"]
        OWN_SMOKE_LIMITS = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]
        args.recipes = args.recipes[:1]  # the strong recipe's bare step runs in tests/test_gpu_check.py
        IMAGES.update(
            template=SMOKE_BATCHES * args.batch_size, raw=SMOKE_IMAGES[0], seed=SMOKE_IMAGES[0], peer=SMOKE_IMAGES[0]
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "bench.log"
    log.write_text("")
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    data_dir = smoke_subset(raw_data_dir(), logs / "smoke-data") if args.smoke else raw_data_dir()

    own = {
        "date": date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "command": "make bench" + (" ARGS=--smoke" if args.smoke else ""),
        "reps": args.reps,
        "epochs_per_run": OWN_EPOCHS,
        **own_step(args, logs / "own_step", log),  # runs of other recipes: apart from the paths' SeedCNN runs
        "where": where_the_time_goes(logs / "own_step", log),
    }
    (RESULTS / "own_step.json").write_text(json.dumps(own, indent=2) + "\n")
    (RESULTS / "own_step.md").write_text(own_step_markdown(own))
    print(own_step_markdown(own), flush=True)
    if args.own_step_only:
        return
    times = epoch_paths(args, data_dir, logs, log)
    summary = {
        name: {
            "median_s": statistics.median(v),
            "min_s": min(v),
            "all_s": v,
            "images": IMAGES[name],
            "median_us_per_image": 1e6 * statistics.median(v) / IMAGES[name],
        }
        for name, v in times.items()
    }
    per_image = {name: s["median_us_per_image"] for name, s in summary.items()}
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}",
        "batch_size": args.batch_size,
        "reps": args.reps,
        "epochs": summary,
        "ratios_per_image": {
            "template_over_raw": per_image["template"] / per_image["raw"],
            "seed_over_template": per_image["seed"] / per_image["template"],
            "peer_over_template": per_image["peer"] / per_image["template"],
        },
        "loader_epoch_s_batch100": loader_epoch(100),
        **first_step_and_predict(logs, log),
    }
    result["numpy_reference_forward_10k_s"] = reference_forward(result.pop("ckpt"))
    if args.make_train:
        result.update(make_train(" ".join(["--trainer.max_epochs=1", *SMOKE_LIMITS]) if args.smoke else ""))
    profile(logs, log)
    (RESULTS / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "bench.md").write_text(markdown(result))
    print(markdown(result))


def own_step_markdown(r: dict) -> str:
    lines = [
        f"The template against its own step run bare, {r['date']}, {r['cpu']} ({r['cores']} cores); `{r['command']}`: "
        f"{r['reps']} interleaved repetitions of {r['epochs_per_run']}-epoch runs, medians of the second epoch.",
        "",
        "| recipe | path | training steps (s) | whole epoch (s) | / bare: steps | / bare: whole epoch |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratio = lambda recipe, path, k: 1.0 if path == "bare" else r[recipe][f"{path}_over_bare"][k]  # noqa: E731
    labels = {
        "template": "template (`fashion-mnist fit`: default callbacks, logger, progress bar, checkpoints)",
        "bare": "its own step, bare (`benchmarks/bare_step.py`)",
        "floor": "Lightning's floor (`bare_step.py --floor`: the step alone in a LightningModule)",
    }
    recipes = [recipe for recipe in RECIPES if recipe in r]
    for recipe in recipes:
        for path, label in labels.items():
            m = r[recipe]["median"][path]
            lines.append(
                f"| {recipe} | {label} | {m['train_s']:.2f} | {m['whole_s']:.2f} | "
                f"{ratio(recipe, path, 'train_s'):.3f}x | {ratio(recipe, path, 'whole_s'):.3f}x |"
            )
    lines += [
        "",
        "Times: medians over the repetitions; ratios: the median of each repetition's ratio (the runs of one "
        "repetition run side by side and share the VM's drift). Template / floor, whole epoch: "
        + ", ".join(f"{recipe} {r[recipe]['template_over_floor']['whole_s']:.3f}x" for recipe in recipes)
        + ".",
    ]
    where = r["where"]
    actions = {a: row for a, row in where["actions"].items() if row["per"] != "once"}
    own = {a: row for a, row in actions.items() if row["floor"] <= 0.2 * row["template"]}  # (nearly) template-only
    total = sum(row["template"] for a, row in own.items() if a != "save_checkpoint")  # inside ModelCheckpoint's hook
    noise = actions.get("[Strategy]Strategy.backward", {"template": 0.0, "floor": 0.0})
    lines += [
        "",
        f"Where the template's extra time goes ({where['recipe']} recipe, {where['steps_per_epoch']} steps per epoch; "
        "Lightning's SimpleProfiler, two runs of the template and two of the floor in the order template, floor, "
        f"floor, template, {where['epochs']} epochs each): what only the template does, ms per epoch (a step's "
        "items: their calls in an epoch x a call's median), largest first",
        "",
        "| action (SimpleProfiler) | per | template (ms per epoch) |",
        "|---|---|---:|",
        *(f"| {a} | {row['per']} | {1e3 * row['template']:.1f} |" for a, row in list(own.items())[:14]),
        f"| all {len(own)} of them (`save_checkpoint` is inside ModelCheckpoint's hooks) | | {1e3 * total:.1f} |",
        "",
        "The actions both sides run (the step's forward and backward, the data, validation) differ between runs by "
        "the VM's drift: `[Strategy]Strategy.backward`, the same work on both sides, took "
        f"{1e3 * noise['template']:.0f} ms per epoch in the template's runs and {1e3 * noise['floor']:.0f} ms in "
        "the floor's. The template's own work inside `training_step` (the metrics, the step's logging) is within "
        "that noise here.",
    ]
    return "\n".join(lines) + "\n"


def markdown(r: dict) -> str:
    e, q = r["epochs"], r["ratios_per_image"]
    rows = [
        ("(a) template: `fashion-mnist fit`, default callbacks, logger, progress bar", "template"),
        ("(b) hand-written in-memory loop (anchors/raw_loop.py)", "raw"),
        ("(c) the seed article's loop (anchors/seed_loop.py)", "seed"),
        ("(d) same LightningModule, torchvision + ToTensor + DataLoader", "peer"),
    ]
    lines = [
        f"Benchmark of {r['date']} on {r['machine']}; batch {r['batch_size']}, {r['reps']} interleaved "
        "repetitions, second epoch of each run (`make bench`).",
        "",
        "| path | images / epoch | epoch median (s) | epoch min (s) | median us / image |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {e[k]['images']:,} | {e[k]['median_s']:.2f} | {e[k]['min_s']:.2f} "
        f"| {e[k]['median_us_per_image']:.1f} |"
        for label, k in rows
    ]
    lines += [
        "",
        f"Ratios compare time per image (the template's epoch: {e['template']['images']:,} images of its train split):",
        f"- template / raw loop: **{q['template_over_raw']:.2f}x** (target <= 1.15x)",
        f"- seed loop / template: **{q['seed_over_template']:.2f}x** faster (target >= 1.5x)",
        f"- peer path / template: **{q['peer_over_template']:.2f}x** faster (target >= 2.5x)",
        f"- data loader alone, one epoch of 55k images at batch 100: {r['loader_epoch_s_batch100']:.3f} s",
        f"- time to first training step (imports + set-up): {r['first_step_s']:.1f} s",
        f"- predict: {r['predict_images_per_s']:,.0f} images/s over {r['predict_images']} images; "
        f"peak RSS {r['predict_max_rss_mib']} MiB",
        f"- NumPy reference CNN forward over the 10k test images: {r['numpy_reference_forward_10k_s']:.2f} s",
    ]
    if "make_train_wall_s" in r:
        lines.append(
            f"- `make train`: {r['make_train_wall_s']:.0f} s wall, peak RSS {r['make_train_max_rss_mib']} MiB"
            f"; {' '.join(r['make_train_summary'])}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
