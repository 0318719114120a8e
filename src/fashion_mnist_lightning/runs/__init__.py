"""How a run survives and is found again: its folder, ``--ckpt_path last``/``best``, atomic checkpoint writes,
RNG states in every checkpoint, checkpoint-and-stop on SIGINT/SIGTERM, the stop on a non-finite loss, and the
notes that keep a run from silently taking hours.

Everything resume-related is here, one idea per file:

    folders.py        run folders, evaluation folders, ``last``/``best`` -> a checkpoint path
    checkpoint_io.py  atomic writes (temp file, fsync, rename) and ``weights_only`` reads with one-line errors
    rng.py            RNGStates callback: torch/NumPy/Python generator states in every checkpoint
    signals.py        CheckpointOnSignal callback: Ctrl-C / SIGTERM -> checkpoint at the next batch, exit 128+n
    guards.py         FiniteLossGuard callback: NaN/Inf gradients stop training before the step
    memory.py         glibc keeps freed memory for the next step instead of page-faulting it back in
    precision.py      one line when a bf16 precision would run emulated on a CPU without bfloat16 instructions

The position inside an epoch is the training sampler's state (``data/sampler.py``), saved through the
DataModule's ``state_dict``; the running training metrics are persistent metric states of the module.
"""
