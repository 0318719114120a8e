#!/usr/bin/env python3
"""The template's own training step, run bare: what `fashion-mnist fit --config X` trains, without a Trainer.

The objects are the command's own: `FashionMNISTCLI` parses and builds the recipe (base.yaml + X + flags: the
network, its memory format, the optimizer groups, the schedule sized to the run, the loss, the DataModule and its
augmentation, the recipe's callbacks) and stops before `trainer.fit`. Then a plain loop does the same work:

    for each epoch:  a randperm over the uint8 training tensor, split into batches
        per step:    uint8 -> float [0, 1] -> the DataModule's augmentation -> the module's own model_step
                     (forward, channels_last, loss) under the Trainer's precision -> backward -> optimizer ->
                     schedule; the recipe's Lookahead callback every n steps, as in fit
        validation:  every check_val_every_n_epoch, the module's model_step in eval mode (its test-time views)
                     over the validation set in eval_batch_size batches, under inference_mode; accuracy counted

and nothing else: no callbacks but the recipe's training techniques, no logger, no metrics objects, no
checkpoints, no progress bar. The process makes the same allocator setting as the command (runs/memory.py).
What is left between this and the template's epoch is the framework's cost. Prints one JSON line per epoch:
{"epoch", "train_s" (the training steps), "epoch_s" (start to the next epoch's start: the steps, validation and
epoch end), "steps", "val_acc"}.

    python benchmarks/bare_step.py --config configs/default.yaml [--trainer.max_epochs=3 ...]
"""

import json
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from fashion_mnist_lightning.cli import FashionMNISTCLI
from fashion_mnist_lightning.data.augment import augment_batch
from fashion_mnist_lightning.runs.memory import keep_freed_memory
from fashion_mnist_lightning.speedrun import DataDependentInit, Lookahead
from timing import profiled  # benchmarks/timing.py


class Built(Exception):
    """Raised where fit would start: the CLI has built everything."""

    def __init__(self, cli: FashionMNISTCLI):
        self.cli = cli


class BuildOnly(FashionMNISTCLI):
    def before_fit(self) -> None:
        raise Built(self)


def build(args: list[str]):
    try:
        BuildOnly(args=["fit", *args])
    except Built as built:
        return built.cli.model, built.cli.datamodule, built.cli.trainer
    raise SystemExit("bare_step: the CLI returned without building the run")


def autocast(precision: str, device: torch.device):
    """The Trainer's precision as a context: bf16-mixed / 16-mixed autocast, anything else as it is."""
    if "mixed" not in precision:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision.startswith("bf16") else torch.float16)


def clock(device: torch.device) -> float:
    """perf_counter once the device's queued work is done (a GPU runs ahead of Python)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main(args: list[str]) -> None:
    keep_freed_memory()
    floor = "--floor" in args
    model, data, trainer = build([a for a in args if a != "--floor"])
    data.prepare_data()
    data.setup("fit")
    device = trainer.strategy.root_device
    where = device if data.data_on_device else torch.device("cpu")  # the data set on the device, or a copy a batch
    images, labels = (t.to(where) for t in (data.train_set.first(len(data.train_set)), data.train_set.labels))
    val = tuple(t.to(where) for t in (data.val_set.first(len(data.val_set)), data.val_set.labels))
    epochs, batch = trainer.max_epochs, data.batch_size  # images (N, C, H, W) uint8, labels (N,)
    steps_per_epoch = limited(-(-len(labels) // batch), trainer.limit_train_batches)
    val_batches = limited(-(-len(val[1]) // data.eval_batch_size), trainer.limit_val_batches)
    # what fit's hooks read from the Trainer, for the module's configure_optimizers and the recipe's callbacks
    stand_in = SimpleNamespace(
        estimated_stepping_batches=epochs * steps_per_epoch, ckpt_path=None, datamodule=data, global_step=0
    )
    model.trainer = stand_in
    model.to(device).configure_model()
    techniques = [c for c in trainer.callbacks if isinstance(c, (DataDependentInit, Lookahead))]
    for callback in techniques:
        callback.on_fit_start(stand_in, model)
    lookahead = [c for c in techniques if isinstance(c, Lookahead)]
    precision, every = str(trainer.precision), trainer.check_val_every_n_epoch or 1
    val = tuple(t[: val_batches * data.eval_batch_size] for t in val)
    if floor:  # its Trainer configures the optimizers itself
        return lightning_floor(model, data, trainer, lookahead, (images, labels), val)
    configured = model.configure_optimizers()
    optimizer, schedule = (
        (configured["optimizer"], configured["lr_scheduler"]["scheduler"])
        if isinstance(configured, dict)
        else (configured, None)
    )

    record: dict = {}  # the previous epoch's, completed and printed when the next one starts
    for epoch in range(epochs):
        start = clock(device)
        if record:
            record["epoch_s"] = start - record.pop("start")
            print(json.dumps(record), flush=True)
        model.train()
        for index in torch.randperm(len(labels), device=where).split(batch)[:steps_per_epoch]:
            x, y = images[index].to(device, non_blocking=True), labels[index].to(device, non_blocking=True)
            x = augment_batch(x.float().div_(255), data.crop_padding, data.hflip, epoch)
            with autocast(precision, device):
                loss = model.model_step((x, y))[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            stand_in.global_step += 1
            for callback in lookahead:
                callback.on_train_batch_end(stand_in, model, None, None, 0)
        record = {"epoch": epoch, "train_s": clock(device) - start, "steps": steps_per_epoch, "start": start}
        if (epoch + 1) % every == 0:
            record["val_acc"] = validate(model, *val, data.eval_batch_size, precision, device)
    record["epoch_s"] = clock(device) - record.pop("start")
    print(json.dumps(record), flush=True)


def limited(batches: int, limit: int | float) -> int:
    """The batches a Trainer's limit_*_batches leaves of ``batches``: an int is a count, a float a fraction."""
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


@torch.inference_mode()
def validate(model, images, labels, batch: int, precision: str, device: torch.device) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        x, y = images[i : i + batch].to(device).float().div_(255), labels[i : i + batch].to(device)
        with autocast(precision, device):
            logits = model.model_step((x, y))[1]
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train()
    return correct / len(labels)


# ----------------------------------------------------------------------------------------------------
# --floor: Lightning's own loop with nothing but the step, the floor no template can go below from outside


class StepOnly(L.LightningModule):
    """The template module's model_step and optimizers, nothing else: no metrics, no self.log."""

    def __init__(self, model: L.LightningModule, data):
        super().__init__()
        self.model, self.data = model, data

    @property
    def network(self) -> torch.nn.Module:  # what the recipe's callbacks (Lookahead, DataDependentInit) use
        return self.model.network

    def configure_model(self) -> None:
        self.model.configure_model()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = images.float().div_(255)
        if self.trainer.training:
            images = augment_batch(images, self.data.crop_padding, self.data.hflip, self.current_epoch)
        return images, labels

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.model.model_step(batch)[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        self.model.model_step(batch)

    def configure_optimizers(self):
        return self.model.configure_optimizers()


class Batches(IterableDataset):
    """uint8 batches of a new randperm each pass: the bare loop's indexing, as a loader Lightning can take."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int, shuffle: bool):
        self.images, self.labels, self.batch, self.shuffle = images, labels, batch, shuffle

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch)

    def __iter__(self):
        n, device = len(self.labels), self.labels.device
        order = torch.randperm(n, device=device) if self.shuffle else torch.arange(n, device=device)
        for index in order.split(self.batch):
            yield self.images[index], self.labels[index]


class EpochClock(L.Callback):
    """The bare loop's record per epoch, from Lightning's hooks."""

    def __init__(self, steps: int):
        self.steps, self.began, self.record = steps, None, None

    def on_train_epoch_start(self, trainer, pl_module):
        now = clock(pl_module.device)
        if self.record is not None:
            print(json.dumps({**self.record, "epoch_s": now - self.began}), flush=True)
        self.began, self.record = now, {"epoch": trainer.current_epoch, "steps": self.steps}

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.record.setdefault("train_s", clock(pl_module.device) - self.began)

    def on_train_epoch_end(self, trainer, pl_module):
        self.record.setdefault("train_s", clock(pl_module.device) - self.began)

    def on_train_end(self, trainer, pl_module):
        print(json.dumps({**self.record, "epoch_s": clock(pl_module.device) - self.began}), flush=True)

    def on_fit_end(self, trainer, pl_module):
        if (profile := profiled(trainer)) is not None:
            print(json.dumps({"profile": profile}), flush=True)


def lightning_floor(model, data, trainer, techniques, train, val) -> None:
    """The same epochs through a Trainer with everything the template adds turned off: no logger, callbacks (but
    the recipe's Lookahead; its data-dependent init is done), checkpoints, progress bar or model summary; a loader
    of whole batches. Lightning's sanity check stays: it is Lightning's default, not the template's."""
    loader = lambda split, shuffle, size: DataLoader(Batches(*split, size, shuffle), batch_size=None)  # noqa: E731
    timer = EpochClock(limited(-(-len(train[1]) // data.batch_size), trainer.limit_train_batches))
    floor = L.Trainer(
        accelerator=trainer.strategy.root_device.type, devices=1, max_epochs=trainer.max_epochs,
        precision=trainer.precision, check_val_every_n_epoch=trainer.check_val_every_n_epoch,
        deterministic=torch.are_deterministic_algorithms_enabled(), limit_train_batches=trainer.limit_train_batches,
        limit_val_batches=trainer.limit_val_batches,
        logger=False, callbacks=[*techniques, timer], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, profiler=trainer.profiler,  # --trainer.profiler=simple
    )  # fmt: skip
    floor.fit(
        StepOnly(model, data),
        loader(train, True, data.batch_size),
        loader(val, False, data.eval_batch_size),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
