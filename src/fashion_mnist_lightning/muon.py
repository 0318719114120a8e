"""Muon for the convolution filters, Nesterov SGD for everything else: one optimizer, so Lightning's automatic
optimization, the schedule, checkpoints and DDP treat it like any other.

Muon (Keller Jordan, 2024; airbench94_muon) replaces a filter's momentum update by its nearest semi-orthogonal
matrix, from a few Newton-Schulz steps on the update reshaped to (out channels, in channels x kh x kw); each step
first rescales the filter tensor to norm sqrt(out channels). BatchNorm follows every such convolution here, so
only the filters' direction matters, and no weight decay is applied to them. torch.optim.Muon takes 2-D
parameters only, hence this class.

    optimizer:
      class_path: fashion_mnist_lightning.muon.MuonSGD
      init_args: {momentum: 0.85, nesterov: true, weight_decay: 0.00104, muon_lr_ratio: 0.05}
"""

import torch

# the quintic iteration's coefficients (airbench94_muon): the steepest slope at zero, not exact convergence;
# its singular values land in ~[0.5, 1.5], which trains as well as the exact U V^T
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """(rows, cols) -> (rows, cols), roughly U V^T of the update's singular value decomposition U S V^T."""
    a, b, c = NEWTON_SCHULZ
    x = update / (update.norm() + eps)  # every singular value <= 1
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T  # (rows, rows): the smaller side
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class MuonSGD(torch.optim.SGD):
    """torch.optim.SGD, except that every 4-D parameter (a convolution's filters) of every group moves by Muon.

    Each incoming group is split in two: its other parameters stay with SGD (lr, momentum, nesterov,
    weight_decay as given), its filters get a group of their own with ``muon: True``, the learning rate
    ``muon_lr_ratio`` times the group's (whatever the schedule does to it), Muon's own momentum and no weight decay.
    A group carrying the template's ``lr_scale`` (FashionMNISTClassifier.parameter_groups) gets the ratio there, as
    that is what the module and OneCycleLR multiply the learning rate by."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,  # SGD's; a schedule such as OneCycleLR sets it every step
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,  # coupled (x lr), SGD's parameters only
        muon_lr_ratio: float = 0.05,  # the filters' learning rate / SGD's, at every step (units: filter norms)
        muon_momentum: float = 0.6,
        muon_nesterov: bool = True,
        newton_schulz_steps: int = 3,
    ):
        if muon_lr_ratio <= 0 or not 0 <= muon_momentum < 1 or newton_schulz_steps < 1:
            raise ValueError(
                f"MuonSGD needs muon_lr_ratio > 0, 0 <= muon_momentum < 1 and newton_schulz_steps >= 1; got "
                f"{muon_lr_ratio}, {muon_momentum}, {newton_schulz_steps}"
            )
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        split = []
        for group in groups:
            filters = [p for p in group["params"] if p.ndim == 4]
            others = [p for p in group["params"] if p.ndim != 4]
            if others:
                split.append({**group, "params": others})
            if filters:
                muon = {**group, "params": filters, "muon": True, "weight_decay": 0.0, "momentum": muon_momentum,
                        "nesterov": muon_nesterov, "name": f"{group.get('name', 'group')}_muon"}  # fmt: skip
                if "lr_scale" in group:
                    muon["lr_scale"] = group["lr_scale"] * muon_lr_ratio
                else:
                    muon["lr"] = group.get("lr", lr) * muon_lr_ratio
                split.append(muon)
        super().__init__(split, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        self.defaults.update(muon=False, newton_schulz_steps=newton_schulz_steps)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's: the forward and backward pass, once
            with torch.enable_grad():
                loss = closure()
        everything = self.param_groups
        try:  # torch's SGD (foreach) for the groups that are not Muon's
            self.param_groups = [group for group in everything if not group.get("muon")]
            super().step()
        finally:
            self.param_groups = everything
        for group in everything:
            if group.get("muon"):
                for p in group["params"]:
                    if p.grad is not None:
                        self._muon_step(p, group)
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict) -> None:
        """One filter tensor (out, in, kh, kw): momentum, then a step along its orthogonalised update."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buffer = state["momentum_buffer"].mul_(group["momentum"]).add_(p.grad)
        update = p.grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        p.mul_(len(p) ** 0.5 / p.norm())  # the filter tensor's norm back to sqrt(out channels)
        steps = group.get("newton_schulz_steps", self.defaults["newton_schulz_steps"])
        p.add_(orthogonalize(update.reshape(len(p), -1).float(), steps).reshape(p.shape), alpha=-group["lr"])
