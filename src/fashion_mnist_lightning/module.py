"""The LightningModule: one shared step, cross-entropy, torchmetrics, logging, optimizer and schedule."""

import inspect
import warnings
from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from fashion_mnist_lightning.backbones import head_of, start_weights
from fashion_mnist_lightning.data.augment import shift
from fashion_mnist_lightning.errors import UserError, first_line
from fashion_mnist_lightning.network import SeedCNN
from fashion_mnist_lightning.runs import rank_states
from fashion_mnist_lightning.runs.checkpoint_io import run_of

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
PRIMITIVE = (bool, int, float, str, type(None), list, tuple, dict)
MetricCallable = Callable[[int], Metric]  # a torchmetrics class with its init_args, called with the class count

# test-time augmentation: the views of each image as (weight, mirrored, shift in pixels along the diagonal), the
# weights summing to 1; a model whose data must not be mirrored (mirror=False) keeps the unmirrored ones, reweighted
TTA_VIEWS = {
    "none": [(1.0, False, 0)],
    "flip": [(0.5, False, 0), (0.5, True, 0)],
    "flip_shift": [(0.25, False, 0), (0.25, True, 0), *((0.125, m, d) for m in (False, True) for d in (-1, 1))],
}


def tta_views(name: str, images: torch.Tensor, mirror: bool) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs of ``images`` (N, C, H, W) for the test-time augmentation ``name``; the first view is
    the image itself."""
    views = [(w, m, d) for w, m, d in TTA_VIEWS[name] if mirror or not m]
    total = sum(w for w, _, _ in views)
    made = []
    for weight, mirrored, offset in views:
        view = images.flip(-1) if mirrored else images
        made.append((weight / total, shift(view, offset, offset) if offset else view))
    return made


# the views of at most this many images in one forward pass (measured with AirNet on 2 CPU cores, 6 views: one image
# 5.7 ms instead of 12.9, sixteen 29 ms instead of 45; but 500 images 1.40 s instead of 0.98)
ONE_PASS_TTA_IMAGES = 256
COUNT_EVERY = 50  # training steps whose predictions go into train_acc in one update


def shown(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether a training step's logged value is seen: the logger writes this step (every log_every_n_steps
    optimizer steps), the progress bar refreshes after it, or it is an epoch's first (its epoch-end value needs
    the key logged once) or last batch. Other steps skip ``self.log``: what the logs and the bar show is the same.
    (Lightning's logger writes after the step, at (steps before it + 1) % log_every_n_steps == 0.)"""
    if batch_idx == 0 or batch_idx + 1 == trainer.num_training_batches or trainer.fast_dev_run:
        return True
    every = trainer.log_every_n_steps
    if every and (trainer.global_step + 1) % every == 0:
        return True
    bar = trainer.progress_bar_callback
    rate = getattr(bar, "refresh_rate", 0) if bar is not None and bar.is_enabled else 0
    return bool(rate) and (batch_idx + 1) % rate == 0


class ScheduleLengthError(UserError, ValueError):
    """The run's length does not fit its learning-rate schedule: a resumed run asks for another length than the
    schedule was built for, or the run is too short for the schedule's phases."""


def sized_to_run(scheduler_factory, total_steps) -> dict:
    """{"total_steps": total_steps()} for a schedule configured with ``total_steps: null`` (OneCycleLR sized to the
    run), else {}."""
    keywords = getattr(scheduler_factory, "keywords", {})
    return {"total_steps": total_steps()} if keywords.get("total_steps", 0) is None else {}


def check_optimizer(optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None) -> None:
    """Build the optimizer (and schedule) once on a dummy parameter: a value torch rejects (a negative lr, a
    momentum above 1) fails here, when the module is made, not after the first batch."""
    try:
        built = optimizer([{"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 1.0}])
        if scheduler is not None:
            scheduler(built, **sized_to_run(scheduler, lambda: 1000))
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ValueError(
            f"model.optimizer / model.scheduler: {first_line(err)}; "
            "fix its init_args (e.g. --model.optimizer.init_args.lr)"
        ) from None


def keep_accepted_arguments(config: dict | None, network_class: type) -> None:
    """The CLI links the data's shape into every network argument it names (num_classes, in_channels, image_size,
    mean, std); a network takes those it has. Lightning records all of them in the hyper-parameters: keep those the
    network took, so the checkpoint rebuilds it."""
    if not isinstance(config, dict) or not isinstance(config.get("init_args"), dict):
        return
    parameters = inspect.signature(network_class).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        config["init_args"] = {k: v for k, v in config["init_args"].items() if k in parameters}


def check_classes(network: nn.Module, example: torch.Tensor, class_names: list[str] | None) -> list[str]:
    """The class names, checked against the number of logits the network returns for ``example`` (1, C, H, W)."""
    was_training = network.training
    try:
        with torch.no_grad():
            logits = network.eval()(example)  # (1, classes); eval: no BatchNorm statistics touched
    except RuntimeError as err:
        raise ValueError(
            f"{type(network).__name__} does not take images of shape {tuple(example.shape[1:])} (C, H, W): "
            f"{first_line(err)}; give its __init__ in_channels / image_size arguments (the CLI fills them in)"
        ) from None
    finally:
        network.train(was_training)
    if class_names is None:
        return [str(i) for i in range(logits.shape[1])]
    if logits.shape[1] != len(class_names):
        raise ValueError(
            f"{type(network).__name__} returns {logits.shape[1]} logits but the data has {len(class_names)} classes; "
            "give its __init__ a num_classes argument (the CLI fills it in from the data)"
        )
    return list(class_names)


def loss_weights(kind: str, counts: list[int] | None, classes: int) -> torch.Tensor | None:
    """(classes,) cross-entropy weights: None for "none"; for "balanced" N / (K x n_c), the mean weight per image 1."""
    if kind == "none":
        return None
    if counts is None or len(counts) != classes or min(counts) < 1:
        raise ValueError(
            f"--model.class_weights {kind} needs the data's training images per class (class_counts, which "
            f"ImageFolderDataModule publishes), one or more for each of the {classes} classes; got {counts}"
        )
    counts = torch.tensor(counts, dtype=torch.float32)
    return counts.sum() / (len(counts) * counts)


class FashionMNISTClassifier(L.LightningModule):
    """Trains any network that maps raw images (N, C, H, W) in [0, 1] to logits (N, number of classes).

    What the data set knows - its class names (hence their count) and image shape (C, H, W) - the CLI links in
    from the DataModule (``class_names``, ``image_shape``); batches may hold uint8 images (divided by 255 here) or
    floats in [0, 1].

    Metrics are torchmetrics objects handed to ``self.log``: Lightning computes, syncs (DDP) and resets them once
    per epoch, at the same moment on every process. The training metrics' running state is part of the
    checkpoint, so an epoch interrupted and resumed logs the same ``train/acc`` as an uninterrupted one.

    Hyper-parameters are saved primitive, so checkpoints load with ``weights_only=True``: through the CLI the
    network, optimizer and scheduler are saved as their config (class_path + init_args); objects passed in
    Python are not saved and must be passed again to ``load_from_checkpoint``.
    """

    def __init__(
        self,
        network: nn.Module | None = None,  # default: SeedCNN()
        optimizer: OptimizerCallable = torch.optim.Adam,  # called with the parameter groups (see parameter_groups)
        scheduler: LRSchedulerCallable | None = None,  # stepped every optimizer step; OneCycleLR's total_steps
        # may be left null and is then the run's length
        label_smoothing: float = 0.0,  # cross-entropy target smoothing, 0 = plain cross-entropy
        class_names: list[str] | None = None,  # linked from the DataModule; default "0", "1", ... (one per logit)
        image_shape: tuple[int, int, int] = (1, 28, 28),  # (C, H, W), linked from the DataModule
        compile: bool = False,  # torch.compile the network in place (GPU: faster; this tiny CPU net: slower)
        channels_last: bool = False,  # NHWC memory format: on a CPU max-pool runs about 2x faster
        tta: Literal["none", "flip", "flip_shift"] = "none",  # evaluation (val/test/predict) averages the logits
        # of several views of each image: "flip" = image and mirror; "flip_shift" = those two (weight 1/2) and both
        # shifted by one pixel along the diagonal, each way (weight 1/2)
        tta_below: float = 1.0,  # selective test-time views: only an image whose plain view gives its top class a
        # probability below this gets the other views; the rest keep the plain view's logits. 1 = every image all
        # views. Per image, so a prediction never depends on the other images of its batch
        mirror: bool = True,  # linked from the data (false when data.hflip is false): whether an image and its
        # mirror are the same class; false drops the mirrored test-time views, so one setting says "never mirror"
        norm_lr_scale: float = 1.0,  # learning-rate multiplier for the normalisation layers' parameters (airbench: 64)
        metrics: dict[str, MetricCallable] | None = None,  # more validation/test metrics by name, e.g. f1_macro:
        # {class_path: torchmetrics.classification.MulticlassF1Score, init_args: {average: macro}}; updated with the
        # logits, logged as val/<name> and test/<name>, in the run summary and TensorBoard's HPARAMS
        init_weights: str | None = None,  # fit: start the network from this checkpoint of the template's (a .ckpt
        # path; best / last = the newest run's), its head new when the classes differ: a new run, a fresh optimizer
        backbone_lr_scale: float = 1.0,  # learning-rate multiplier for every parameter outside the network's head
        # (fine-tuning a pretrained backbone: 0.1; see finetune.FreezeBackbone)
        class_weights: Literal["none", "balanced"] = "none",  # training loss: "balanced" weighs each class by
        # N / (K x its count), so a class with a tenth of the images counts as much (inverse frequency)
        class_counts: list[int] | None = None,  # training images per class, linked from the data (if it says)
    ):
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"--model.label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0 < tta_below <= 1:
            raise ValueError(f"--model.tta_below must be a probability in (0, 1], got {tta_below}")
        for name, scale in (("norm_lr_scale", norm_lr_scale), ("backbone_lr_scale", backbone_lr_scale)):
            if scale <= 0:
                raise ValueError(f"--model.{name} must be > 0, got {scale}")
        check_optimizer(optimizer, scheduler)
        with warnings.catch_warnings():  # a network object passed in Python is dropped just below
            warnings.filterwarnings("ignore", message="Attribute 'network' is an instance of `nn.Module`")
            self.save_hyperparameters()  # through the CLI: configs (class_path + init_args); in Python: objects
        self.save_hyperparameters(ignore=[k for k, v in self.hparams.items() if not isinstance(v, PRIMITIVE)])
        self.network = network if network is not None else SeedCNN()
        keep_accepted_arguments(self.hparams.get("network"), type(self.network))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.image_shape = tuple(image_shape)
        self.example_input_array = torch.zeros(1, *self.image_shape)  # model summary shapes, graph logging
        self.class_names = check_classes(self.network, self.example_input_array, class_names)
        self.compile_network = compile
        self.channels_last = channels_last
        self.tta, self.tta_below, self.mirror, self.norm_lr_scale = tta, tta_below, mirror, norm_lr_scale
        self.init_weights, self.backbone_lr_scale = init_weights, backbone_lr_scale
        self.register_buffer("loss_weights", loss_weights(class_weights, class_counts, len(self.class_names)), False)

        accuracy = dict(num_classes=len(self.class_names), average="micro")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc, self.test_acc = MulticlassAccuracy(**accuracy), MulticlassAccuracy(**accuracy)
        self.train_acc = MulticlassAccuracy(**accuracy, validate_args=False)  # its inputs are argmaxes
        self.uncounted: list[tuple[torch.Tensor, torch.Tensor]] = []  # training (preds, labels) not yet in train_acc
        self.val_acc_best = MaxMetric()
        extra = MetricCollection({name: make(len(self.class_names)) for name, make in (metrics or {}).items()})
        self.val_metrics, self.test_metrics = extra.clone(prefix="val/"), extra.clone(prefix="test/")
        self.metric_names = list(metrics or {})
        for metric in (self.train_loss, self.train_acc, self.val_acc_best):
            metric.persistent(True)  # in the checkpoint: a resumed epoch continues its running values
        self._resumed_schedule_steps: list[int | None] = []

    def configure_model(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        if self.compile_network:
            self.network.compile()  # in place: state_dict keys stay as they are, checkpoints stay portable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)  # (N, C, H, W) float in [0, 1] -> (N, classes) logits

    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation (N, classes): the weighted mean of the logits of the views ``tta`` names; with
        ``tta_below`` under 1, only for the images the plain view is unsure of."""
        if self.tta == "none" or self.tta_below >= 1:
            return self.mean_of_views(images)
        plain = self(images)  # (N, classes)
        doubtful = (plain.softmax(dim=1).amax(dim=1) < self.tta_below).nonzero().flatten()  # (D,) image indices
        if len(doubtful) == 0:
            return plain
        logits = plain.clone()
        logits[doubtful] = self.mean_of_views(images[doubtful], plain[doubtful]).to(logits.dtype)
        return logits

    def mean_of_views(self, images: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        """(N, classes): the views' weighted mean logits, the plain view's taken from ``plain`` when given. Few
        images (a served request) go through the network as one batch of all views (V*N, C, H, W): one forward
        pass instead of V small ones; a large evaluation batch view by view, which is faster there."""
        weighted = tta_views(self.tta, images, self.mirror)
        mean = 0
        if plain is not None:
            (weight, _), weighted = weighted[0], weighted[1:]
            mean = weight * plain
        weights, views = zip(*weighted)
        if len(views) > 1 and len(views) * len(images) <= ONE_PASS_TTA_IMAGES:
            parts = self(torch.cat(views)).split(len(images))
        else:
            parts = (self(view) for view in views)
        return mean + sum(w * part for w, part in zip(weights, parts))

    # ------------------------------------------------------------------------------------------------
    # steps

    def model_step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        if images.dtype == torch.uint8:  # a DataModule that hands uint8 batches to the model
            images = images.float().div_(255)
        logits = self(images) if self.training else self.evaluate(images)
        weight = self.loss_weights if self.training else None  # evaluation reports the plain loss
        loss = F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing)
        return loss, logits, labels  # (), (N, classes), (N,)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self.model_step(batch)
        self.uncounted.append((logits.argmax(dim=1), labels))  # into train_acc every COUNT_EVERY steps
        if len(self.uncounted) == COUNT_EVERY:
            self.count_training_predictions()
        if not shown(self.trainer, batch_idx):  # most steps: the running sums only (a self.log costs ~0.6 ms)
            self.train_loss.update(loss, len(labels))
            return loss
        self.train_loss(loss, len(labels))  # forward: this batch's value for the step log, plus the epoch mean
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits, labels = self.model_step(batch)
        self.val_loss.update(loss, len(labels))
        self.val_acc.update(preds := logits.argmax(dim=1), labels)
        self.val_metrics.update(logits, labels)
        return {"preds": preds}  # for callbacks (the confusion matrix); the metrics are logged at the epoch's end

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits, labels = self.model_step(batch)
        self.test_loss.update(loss, len(labels))
        self.test_acc.update(preds := logits.argmax(dim=1), labels)
        self.test_metrics.update(logits, labels)
        return {"preds": preds}

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return self.evaluate(images).softmax(dim=1)  # (N, classes) class probabilities

    def count_training_predictions(self) -> None:
        """train_acc's update with the training steps' predictions since the last one, in one call (~0.2 ms a step
        less than one per step). Its states are integer counts, the same however the steps are grouped; counted
        before anything reads them: every COUNT_EVERY steps, at the epoch's end and in a checkpoint."""
        if self.uncounted:
            preds, labels = (torch.cat(parts) for parts in zip(*self.uncounted))  # (n,), (n,)
            self.uncounted.clear()
            self.train_acc.update(preds, labels)

    # ------------------------------------------------------------------------------------------------
    # epoch hooks

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if batch_idx == 0:  # a new epoch; after a resume from an end-of-epoch checkpoint the states are stale
            self.train_loss.reset()
            self.train_acc.reset()
            self.uncounted.clear()

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a new run: from pretrained weights, if any (a resume continues its
            # checkpoint; predict, export and serve read everything from the checkpoint, never the weights' source)
            done = start_weights(self.network, self.init_weights, self.class_names)
            if done and self.trainer.is_global_zero:
                print(done, flush=True)

    def on_train_epoch_end(self) -> None:
        self.count_training_predictions()
        self.log("train/acc", self.train_acc, prog_bar=True)  # Lightning computes, syncs and resets it

    def on_validation_epoch_end(self) -> None:
        # once per epoch, not per batch: an evaluation metric's value is its epoch's (Lightning computes, syncs and
        # resets it), and a self.log costs ~0.6 ms
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log_dict(self.val_metrics)
        if not self.trainer.sanity_checking:  # every process runs this hook: compute() syncs symmetrically
            self.val_acc_best(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log("test/loss", self.test_loss)
        self.log("test/acc", self.test_acc)
        self.log_dict(self.test_metrics)

    # ------------------------------------------------------------------------------------------------

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        if self.scheduler_factory is None:
            return optimizer
        run_length = sized_to_run(self.scheduler_factory, lambda: int(self.trainer.estimated_stepping_batches))
        keywords = getattr(self.scheduler_factory, "keywords", {})
        if isinstance(keywords.get("max_lr"), float):  # OneCycleLR sets every group's lr: scale it per group
            run_length["max_lr"] = [keywords["max_lr"] * group["lr_scale"] for group in optimizer.param_groups]
        try:
            scheduler = self.scheduler_factory(optimizer, **run_length)
        except (ZeroDivisionError, ValueError) as err:  # OneCycleLR when pct_start x total_steps is 1 (a phase of
            # zero steps) or the run has no steps at all (--trainer.limit_train_batches=0)
            if isinstance(err, ValueError) and run_length.get("total_steps", 1) > 0:
                raise
            raise ScheduleLengthError(
                f"a run of {run_length.get('total_steps', '?')} optimizer steps is too short for this schedule's "
                "phases; train longer (--trainer.max_epochs, --trainer.limit_train_batches) or change "
                "--model.scheduler.init_args.pct_start"
            ) from None
        if "total_steps" in run_length:
            self._check_resumed_length(type(scheduler).__name__, run_length["total_steps"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self) -> list[dict]:
        """Weight decay on weight matrices and convolution kernels only, not on biases or normalisation
        parameters (as nanoGPT and airbench do): decaying those only pulls the network towards a bad offset.
        The normalisation layers' parameters learn ``norm_lr_scale`` times faster, and with ``backbone_lr_scale``
        every parameter outside the head that much slower or faster (``lr_scale``, applied to the optimizer's lr,
        or to OneCycleLR's max_lr). finetune.FreezeBackbone freezes the backbone after this (in on_fit_start), so
        its parameters are in the groups: they have no gradient while frozen, and the optimizer skips them."""
        norms = {id(p) for m in self.modules() if isinstance(m, NORMS) for p in m.parameters()}
        head = {id(p) for p in head_of(self.network).parameters()} if self.backbone_lr_scale != 1 else None
        params = [p for p in self.parameters() if p.requires_grad]
        kinds = [
            ("weights", lambda p: p.ndim >= 2, {}, 1.0),
            ("biases", lambda p: p.ndim < 2 and id(p) not in norms, {"weight_decay": 0.0}, 1.0),
            ("norms", lambda p: p.ndim < 2 and id(p) in norms, {"weight_decay": 0.0}, self.norm_lr_scale),
        ]
        parts = [("", lambda p: True, 1.0)] if head is None else [
            ("head_", lambda p: id(p) in head, 1.0),
            ("backbone_", lambda p: id(p) not in head, self.backbone_lr_scale),
        ]  # fmt: skip
        groups = []
        for prefix, in_part, part_scale in parts:
            for name, kind, options, scale in kinds:
                ps = [p for p in params if in_part(p) and kind(p)]
                if ps:
                    groups.append({"params": ps, "name": prefix + name, "lr_scale": scale * part_scale, **options})
        return groups

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.uncounted:  # a checkpoint inside an epoch (a signal's): Lightning took the state_dict before this hook
            self.count_training_predictions()
            counts = self.train_acc.metric_state  # {"tp": (), "fp": (), "tn": (), "fn": ()} int64
            checkpoint["state_dict"].update({f"train_acc.{k}": v.clone() for k, v in counts.items()})
        rank_states.save(self, {"train_loss": self.train_loss, "train_acc": self.train_acc}, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_schedule_steps = [s.get("total_steps") for s in checkpoint.get("lr_schedulers", [])]
        try:  # a resume: each process its own running state (load_from_checkpoint: no trainer, one process)
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        except RuntimeError:
            rank, world_size = 0, 1
        rank_states.load(checkpoint, rank, world_size)

    def _check_resumed_length(self, name: str, total_steps: int) -> None:
        """A schedule sized to its run (OneCycleLR) cannot be stretched: resuming with another run length would
        step it past its end (torch raises) or replay it at the wrong speed. Refuse, naming the alternatives."""
        planned = next((s for s in self._resumed_schedule_steps if s is not None), None)
        self._resumed_schedule_steps = []
        if planned is not None and planned != total_steps:
            run = run_of(self.trainer.ckpt_path) if self.trainer.ckpt_path else None
            raise ScheduleLengthError(
                f"this run's {name} schedule was built for {planned} steps, the resumed run would take {total_steps}: "
                "a schedule sized to its run cannot be extended. Resume with the run's own --trainer.max_epochs, "
                "or start a new run with the new length: "
                f"fashion-mnist fit --config {run or '<run folder>'}/config.yaml --trainer.max_epochs N"
            )
