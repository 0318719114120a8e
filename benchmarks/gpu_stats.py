"""A callback for benchmarks/gpu_check.sh: what one run did on its device, as one JSON file at $GPU_CHECK_OUT.

epoch_s        seconds of every training epoch (its validation included), from its start to its end
peak_memory    bytes: the most the device's caching allocator held at once (CUDA; null on the CPU), rank 0
compiled       the network's forward ran as torch.compile'd code (seen from inside it, not read from the config)
logits_dtype   the dtype of the network's output in training: bfloat16 when bf16 autocast was on
test_acc       the test accuracy of `--test_after_fit true`
"""

import json
import os
import time

import lightning as L
import torch


class Seen:
    """A forward hook that notes how the network ran. Copies of the network (Lookahead's AveragedModel deep-copies
    it, hooks included) share this one object instead of copying it."""

    def __init__(self):
        self.compiled, self.logits_dtype = False, None

    def __call__(self, network, inputs, output):
        # inside a compiled forward this hook is traced: is_compiling() is True there and the store is replayed
        self.compiled = torch.compiler.is_compiling()
        if network.training:
            self.logits_dtype = output.dtype

    def __deepcopy__(self, memo):
        return self


class GpuCheckStats(L.Callback):
    def __init__(self):
        self.epoch_s: list[float] = []
        self.seen, self.start = Seen(), 0.0

    def on_fit_start(self, trainer, pl_module):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)
        pl_module.network.register_forward_hook(self.seen)

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_s.append(time.perf_counter() - self.start)

    def on_test_end(self, trainer, pl_module):
        device = trainer.strategy.root_device
        peak = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
        if trainer.is_global_zero:
            record = {
                "epoch_s": self.epoch_s,
                "peak_memory": peak,
                "compiled": self.seen.compiled,
                "logits_dtype": str(self.seen.logits_dtype).removeprefix("torch."),
                "test_acc": float(trainer.callback_metrics["test/acc"]),
                "devices": trainer.world_size,
                "device": device.type,
            }
            with open(os.environ["GPU_CHECK_OUT"], "w") as f:
                json.dump(record, f)
