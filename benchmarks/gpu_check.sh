#!/usr/bin/env bash
# The GPU recipes on a GPU, in one go: configs/gpu.yaml, the strong recipe on one GPU, and configs/gpu_ddp.yaml on
# every visible GPU when there are several. For each it prints the wall time (start-up and compile included), the
# time per epoch after the first (the first pays torch.compile), the test accuracy, the peak GPU memory and whether
# torch.compile and bf16 were active (seen from inside the network's forward, not read from the config). Then the
# template against its own step run bare on the device (benchmarks/bare_step.py, 3 epochs of gpu and strong): the
# seconds per epoch of each and their ratio, what the framework costs where a step takes well under a millisecond.
#
#   make install && benchmarks/gpu_check.sh           # from the checkout, on the GPU machine (about 10 minutes
#                                                     # on one modern GPU: an estimate, it has not run on one yet)
#   benchmarks/gpu_check.sh --trainer.max_epochs 2    # flags after the script go to every run
#   GPU_CHECK_DEVICES=2 benchmarks/gpu_check.sh ...   # the DDP run on 2 devices whatever torch.cuda counts
#
# The tests run it on the CPU with --trainer.accelerator cpu and tiny limits, so it is known to work up to the
# device. The runs go to build/gpu_check/<date-time>/<run>/ (GPU_CHECK_DIR=... elsewhere; it must be new or empty),
# each with its own lightning_logs and output.log.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/.venv/bin  # make install's environment; else the one on PATH (a wheel installed elsewhere)
if [ ! -x "$bin/fashion-mnist" ]; then
  installed=$(command -v fashion-mnist) || { echo "gpu_check: no fashion-mnist found; run make install first" >&2; exit 2; }
  bin=$(dirname "$installed")
fi
python=$bin/python
out=$(realpath -m "${GPU_CHECK_DIR:-$root/build/gpu_check/$(date +%Y%m%d-%H%M%S)}")
if [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "gpu_check: $out is not empty (an earlier check?); set GPU_CHECK_DIR to a new folder" >&2
  exit 2
fi
devices=${GPU_CHECK_DEVICES:-$("$python" -c 'import torch; print(torch.cuda.device_count())')}

declare -A flags=(
  [gpu]="--config $root/configs/gpu.yaml"
  # the strong recipe as shipped, on one GPU: the data set on the device and the network compiled
  [strong]="--config $root/configs/strong.yaml --trainer.accelerator gpu --trainer.devices 1
            --data.data_on_device true --model.compile true"
  [gpu_ddp]="--config $root/configs/gpu_ddp.yaml --trainer.devices $devices"
)
runs=(gpu strong)
if [ "$devices" -gt 1 ]; then runs+=(gpu_ddp); fi

mkdir -p "$out"
for run in "${runs[@]}"; do
  mkdir -p "$out/$run"
  echo "== $run: fashion-mnist fit ${flags[$run]//$'\n'/} $*" | tr -s ' '
  start=$(date +%s.%N)
  # shellcheck disable=SC2086  # the flags are words on purpose
  (cd "$out/$run" && GPU_CHECK_OUT="$out/$run/stats.json" PYTHONPATH="$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}" \
    "$bin/fashion-mnist" fit ${flags[$run]} --data.data_dir "$root/data" --test_after_fit true \
    --trainer.callbacks+=gpu_stats.GpuCheckStats "$@") > "$out/$run/output.log" 2>&1 \
    || { tail -n 5 "$out/$run/output.log" >&2; echo "gpu_check: $run failed; its output: $out/$run/output.log" >&2; exit 1; }
  grep "^test accuracy" "$out/$run/output.log" || true
  end=$(date +%s.%N)
  echo "$start $end" > "$out/$run/wall.txt"
done

# the same recipes' step run bare on the same device (benchmarks/bare_step.py: the objects `fashion-mnist fit` builds,
# in a plain loop), 3 epochs each: what the template costs over its own step there
for run in gpu strong; do
  # shellcheck disable=SC2086  # the flags are words on purpose
  (cd "$out/$run" && PYTHONPATH="$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}" "$python" "$root/benchmarks/bare_step.py" \
    ${flags[$run]} --data.data_dir "$root/data" --trainer.max_epochs 3 "$@" \
    --trainer.logger.init_args.save_dir "$out/$run/bare") > "$out/$run/bare.jsonl" 2> "$out/$run/bare.log" \
    || { tail -n 5 "$out/$run/bare.log" >&2; echo "gpu_check: $run's bare step failed; see $out/$run/bare.log" >&2; exit 1; }
done

"$python" - "$out" "${runs[@]}" <<'EOF'
import json, sys
from pathlib import Path
from statistics import median

out, runs = Path(sys.argv[1]), sys.argv[2:]
print(f"\n{'run':8} {'devices':>9} {'wall':>8} {'epoch':>8} {'test acc':>9} {'peak mem':>9} {'compile':>8} {'bf16':>5}")
for run in runs:
    stats = json.loads((out / run / "stats.json").read_text())
    start, end = map(float, (out / run / "wall.txt").read_text().split())
    later = stats["epoch_s"][1:] or stats["epoch_s"]
    epoch = sum(later) / len(later)
    memory = "n/a" if stats["peak_memory"] is None else f"{stats['peak_memory'] / 2**30:.2f}GiB"
    devices = f"{stats['devices']} {stats['device']}"
    print(
        f"{run:8} {devices:>9} {end - start:7.1f}s {epoch:7.2f}s {100 * stats['test_acc']:8.2f}% {memory:>9} "
        f"{'yes' if stats['compiled'] else 'no':>8} {'yes' if stats['logits_dtype'] == 'bfloat16' else 'no':>5}"
    )
print("epoch: mean seconds per epoch after the first (validation included); peak mem: rank 0's CUDA allocator")

print("\nthe template against its own step run bare on the same device (median seconds per epoch after the first):")
for run in ("gpu", "strong"):
    template = json.loads((out / run / "stats.json").read_text())["epoch_s"]
    bare = [r["epoch_s"] for r in map(json.loads, (out / run / "bare.jsonl").read_text().splitlines())]
    template_s, bare_s = median(template[1:] or template), median(bare[1:] or bare)
    print(f"own step: {run:8} template {template_s:7.3f}s  bare {bare_s:7.3f}s  template/bare {template_s / bare_s:.3f}x")
EOF
