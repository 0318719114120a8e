# What scripts/slurm/*.sbatch share: the project's environment, one srun of `fashion-mnist`, and the requeue rule.
#
# Who requeues: `scontrol requeue`, a preemption and the time limit itself signal the whole job, this shell
# included, and Slurm requeues (or ends) the job by itself. `--signal=TERM@S` (and `scancel --signal=TERM`)
# signal only the tasks: they stop with a checkpoint and exit 143 (128 + SIGTERM), and this shell asks Slurm to
# requeue the job. Lightning's own auto-requeue (SIGUSR1) is off (src/fashion_mnist_lightning/runs/slurm.py).
# Any other failure (a typo in a flag: exit 2) ends the job once, with its one-line error in the output.
set -uo pipefail
JOB="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"  # as squeue and the output file name it
JOB="${JOB:-$SLURM_JOB_ID}"
if [ -x .venv/bin/fashion-mnist ]; then  # `make install`'s environment; else whatever `fashion-mnist` is on PATH
  PATH="$PWD/.venv/bin:$PATH"
fi
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"  # torch's threads per task: the CPUs Slurm gave it
signalled=""
trap 'signalled=1' TERM  # the whole job is being requeued, preempted or cancelled: Slurm decides what follows

run() {
  echo "$(date -Is) job ${JOB} start ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}: fashion-mnist $*"
  srun fashion-mnist "$@" &  # no --kill-on-bad-exit: a task SIGTERMed for a peer's error would look like a requeue
  local step=$!
  wait "$step"
  local status=$?
  while kill -0 "$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the tasks to finish
    wait "$step"
    status=$?
  done
  echo "$(date -Is) job ${JOB}: fashion-mnist exited ${status}"
  if [ "$status" -eq 143 ] && [ -z "$signalled" ]; then
    echo "$(date -Is) job ${JOB}: requeued (its tasks were signalled: --signal or scancel --signal)"
    scontrol requeue "${SLURM_JOB_ID}"
  elif [ "$status" -eq 143 ] && [ "$1" = fit ]; then
    echo "$(date -Is) job ${JOB}: stopped by Slurm; requeued, it continues by itself; cancelled, continue its run" \
      "in a new job: sbatch scripts/slurm/fit.sbatch ... --trainer.logger.init_args.version=slurm_${JOB}"
  fi
  exit "$status"
}
