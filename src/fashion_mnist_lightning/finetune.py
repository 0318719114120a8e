"""FreezeBackbone: fine-tuning's freeze -> unfreeze schedule, as a callback whose state is a function of the epoch.

    trainer:
      callbacks+:
        - class_path: fashion_mnist_lightning.finetune.FreezeBackbone
          init_args:
            epochs: 2  # the head alone for 2 epochs, then the whole network
    model:
      backbone_lr_scale: 0.1  # the backbone's learning rate, relative to the head's

For the first ``epochs`` epochs only the network's head trains: the backbone's parameters get no gradient (the
optimizer skips them; backward stops at the head) and its BatchNorm layers keep their pretrained statistics (eval
mode). From then on the whole network trains, the backbone at ``model.backbone_lr_scale`` times the head's learning
rate (its own parameter group from the start, so OneCycleLR and the other schedules see it all along).

Whether the backbone is frozen is decided before every training batch from the epoch number alone, which the
checkpoint restores exactly: a run resumed mid-freeze, at the unfreeze epoch or after it trains exactly as the
uninterrupted run (Lightning's BackboneFinetuning re-freezes a thawed backbone on resume, #21901). The optimizer is
built before the freeze, with every parameter in its groups, so nothing is rebuilt or added at the thaw.

Under DDP the frozen parameters produce no gradient for a while: configs/ddp_cpu.yaml's strategy sets
``find_unused_parameters: true`` for that (PyTorch's DistributedDataParallel needs it when some parameters skip a
step); the callback refuses a DDP strategy without it, in one line.
"""

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.nn.parallel import DistributedDataParallel

from fashion_mnist_lightning.backbones import head_of
from fashion_mnist_lightning.errors import ConfigError
from fashion_mnist_lightning.module import NORMS


class FreezeBackbone(Callback):
    def __init__(self, epochs: int = 1, train_norms: bool = False):
        """epochs: training epochs with the backbone frozen (the head alone), 0 = never frozen.
        train_norms: keep the backbone's normalisation layers trainable (and their statistics updating) while it is
        frozen; the default holds them as pretrained."""
        if epochs < 0:
            raise ValueError(f"FreezeBackbone epochs must be >= 0, got {epochs}")
        self.epochs, self.train_norms = epochs, train_norms
        self.frozen = False  # the schedule's state: saved in the checkpoint
        self.applied: bool | None = None  # what this process's parameters are set to (None: not yet)
        self.backbone: list = []  # parameters the schedule freezes and thaws (those trainable at the start)
        self.norms: list = []  # the backbone's normalisation layers

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wrapped = trainer.strategy.model  # DDP's wrapper by now (the strategy is set up before on_fit_start)
        if isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters and self.epochs:
            raise ConfigError(
                "FreezeBackbone under DDP: the frozen backbone's parameters get no gradient; set "
                "--trainer.strategy.init_args.find_unused_parameters=true"
            )
        network = pl_module.network
        head = {id(p) for p in head_of(network).parameters()}
        norms = [
            m for m in network.modules() if isinstance(m, NORMS) and not any(id(p) in head for p in m.parameters())
        ]
        self.norms = [] if self.train_norms else norms
        held = {id(p) for m in norms for p in m.parameters()} if self.train_norms else set()
        self.backbone = [p for p in network.parameters() if p.requires_grad and id(p) not in head | held]
        self.applied = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # Decided at every batch, not in on_train_epoch_start: Lightning skips that hook for the epoch a mid-epoch
        # checkpoint resumes.
        frozen = trainer.current_epoch < self.epochs
        if frozen is not self.applied:
            for parameter in self.backbone:
                parameter.requires_grad_(not frozen)
            for norm in self.norms:  # thawed: back to batch statistics (Lightning's validation loop restores each
                norm.train(not frozen)  # module's own mode, so the eval set while frozen would otherwise stay)
            if self.frozen and not frozen and trainer.is_global_zero:
                print(f"\nepoch {trainer.current_epoch}: the backbone thaws; the whole network trains", flush=True)
            self.applied = self.frozen = frozen
        if frozen:
            for norm in self.norms:
                norm.eval()

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        self.frozen = bool(state.get("frozen", False))
        if state.get("epochs", self.epochs) != self.epochs:
            raise ConfigError(
                f"this run froze its backbone for {state['epochs']} epochs, the resumed run says {self.epochs}; "
                "resume with the run's own FreezeBackbone epochs, or start a new run"
            )
