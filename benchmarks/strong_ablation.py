"""The ablation loop behind configs/strong.yaml: the same recipe (airbench-style network, Nesterov SGD, lookahead,
TTA) as one plain PyTorch loop, every idea a flag, so that each ablation is one command and costs no more than it
must. This is where README's "what mattered" table comes from; the template's own figures come from `make train`.

.venv/bin/python benchmarks/strong_ablation.py --seed 0 --epochs 30 --widths 32,64,128 --block res --extra 1,1,1
Prints per-epoch time and val accuracy, then test accuracy plain / flip-TTA / multi-view TTA and the
total wall time, and appends one JSON line to benchmarks/results/strong_ablation.jsonl.
Needs the uint8 cache (`make data`).
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530
HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------------- network
class Normalize(nn.Module):
    def __init__(self, mean=MEAN, std=STD):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a frozen scale of 1 (a learnable bias only), airbench style."""

    def __init__(self, c, momentum=0.4, eps=1e-12, affine_weight=False):
        super().__init__(c, eps=eps, momentum=momentum)
        self.weight.requires_grad = affine_weight


class Conv(nn.Conv2d):
    """3x3 'same' conv without bias, partial dirac (identity) init on the first c_in output channels."""

    def __init__(self, c_in, c_out, dirac=True):
        super().__init__(c_in, c_out, kernel_size=3, padding=1, bias=False)
        if dirac:
            w = self.weight.data
            torch.nn.init.dirac_(w[: min(c_in, c_out)])


class ResGroup(nn.Module):
    """airbench96-style block: conv -> maxpool 2 -> BN -> GELU, then `pairs` residual pairs
    x <- GELU(x + BN(conv(GELU(BN(conv(x))))))."""

    def __init__(self, c_in, c_out, bn_mom, pairs=1, dirac=True):
        super().__init__()
        self.conv1 = Conv(c_in, c_out, dirac)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(c_out, bn_mom)
        self.convs = nn.ModuleList([Conv(c_out, c_out, dirac) for _ in range(2 * pairs)])
        self.norms = nn.ModuleList([BatchNorm(c_out, bn_mom) for _ in range(2 * pairs)])
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        for i in range(0, len(self.convs), 2):
            y = self.activ(self.norms[i](self.convs[i](x)))
            y = self.norms[i + 1](self.convs[i + 1](y))
            x = self.activ(x + y)
        return x


class ConvGroup(nn.Module):
    """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU (+ `extra` more conv-BN-GELU), optional residuals."""

    def __init__(self, c_in, c_out, bn_mom, extra=0, residual=False, dirac=True):
        super().__init__()
        self.conv1 = Conv(c_in, c_out, dirac)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(c_out, bn_mom)
        self.convs = nn.ModuleList([Conv(c_out, c_out, dirac) for _ in range(1 + extra)])
        self.norms = nn.ModuleList([BatchNorm(c_out, bn_mom) for _ in range(1 + extra)])
        self.activ = nn.GELU()
        self.residual = residual

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        for conv, norm in zip(self.convs, self.norms):
            y = self.activ(norm(conv(x)))
            x = x + y if self.residual else y
        return x


class Net(nn.Module):
    """Raw images in [0,1], (N,1,28,28) -> logits (N,10). Normalisation inside."""

    def __init__(
        self,
        widths=(32, 128, 128),
        bn_mom=0.4,
        whiten=True,
        whiten_width=8,
        extra=(0, 0, 0),
        residual=False,
        scale=1 / 9,
        pad_to=0,
        dirac=True,
        block="plain",
    ):
        super().__init__()
        self.norm = Normalize()
        self.pad_to = pad_to
        layers = []
        c = 1
        if whiten:
            self.whiten = nn.Conv2d(1, whiten_width, kernel_size=2, padding=0, bias=True)
            self.whiten.weight.requires_grad = False
            c = whiten_width
        else:
            self.whiten = None
        for w, e in zip(widths, extra):
            if block == "res":  # `extra` = residual pairs per block
                layers.append(ResGroup(c, w, bn_mom, e, dirac))
            else:
                layers.append(ConvGroup(c, w, bn_mom, e, residual, dirac))
            c = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c, 10, bias=False)
        self.scale = scale
        self.act = nn.GELU()

    def forward(self, x):
        x = self.norm(x)
        if self.pad_to:
            x = F.pad(x, (self.pad_to,) * 4)  # zero in normalised space
        if self.whiten is not None:
            x = self.act(self.whiten(x))
        x = self.layers(x)
        x = torch.amax(x, dim=(2, 3))  # global max pool
        return self.head(x) * self.scale

    @torch.no_grad()
    def init_whiten(self, images, eps=5e-4):
        """images (N,1,28,28) float in [0,1]: 2x2 patch PCA whitening filters (+ and - of each eigenvector)."""
        if self.whiten is None:
            return
        x = self.norm(images)
        if self.pad_to:
            x = F.pad(x, (self.pad_to,) * 4)
        p = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 4).float()
        cov = p.T @ p / len(p)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.T.flip(0)  # (4,), (4,4) rows = eigenvectors, largest first
        filt = (evecs / torch.sqrt(evals + eps)[:, None]).reshape(4, 1, 2, 2)
        w = torch.cat([filt, -filt])
        n = self.whiten.out_channels
        self.whiten.weight.copy_(w[:n] if n <= 8 else torch.cat([w] * (n // 8)))
        self.whiten.bias.zero_()


# ------------------------------------------------------------------------------------------------ augmentation
def batch_translate(x, pad):
    """Each image shifted by its own random (dy,dx) in [-pad,pad], zero fill. (B,C,H,W)->(B,C,H,W)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(x, (pad,) * 4)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1))
    rows = (dy + torch.arange(h))[:, None, :, None]
    cols = (dx + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def batch_flip(x):
    flip = torch.rand(len(x)) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def batch_cutout(x, size, p=1.0):
    """Zero a size x size square (centre uniform over the image, clipped at borders) in each image w.p. p."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1))
    cx = torch.randint(0, w, (b, 1, 1))
    ys = torch.arange(h)[None, :, None]
    xs = torch.arange(w)[None, None, :]
    m = ((ys - cy).abs() * 2 < size) & ((xs - cx).abs() * 2 < size)  # (B,H,W)
    if p < 1:
        m &= (torch.rand(b) < p)[:, None, None]
    return x.masked_fill(m[:, None], 0.0)


def batch_erase(x, p=0.5, smin=0.02, smax=0.25, rmin=0.3):
    """Random erasing (Zhong et al.) on a whole batch: a rectangle of area fraction U(smin,smax), aspect ratio
    log-uniform in [rmin, 1/rmin], placed inside the image, filled with 0, applied w.p. p."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(smin, smax) * h * w
    logr = torch.empty(b).uniform_(math.log(rmin), -math.log(rmin))
    r = torch.exp(logr)
    eh = torch.sqrt(area * r).round().clamp(1, h).long()
    ew = torch.sqrt(area / r).round().clamp(1, w).long()
    y0 = (torch.rand(b) * (h - eh + 1)).floor().long()
    x0 = (torch.rand(b) * (w - ew + 1)).floor().long()
    ys = torch.arange(h)[None, :, None]
    xs = torch.arange(w)[None, None, :]
    m = (
        (ys >= y0[:, None, None])
        & (ys < (y0 + eh)[:, None, None])
        & (xs >= x0[:, None, None])
        & (xs < (x0 + ew)[:, None, None])
    )
    m &= (torch.rand(b) < p)[:, None, None]
    return x.masked_fill(m[:, None], 0.0)


# ------------------------------------------------------------------------------------------------------ eval
def shift(x, dy, dx):
    """Shift images by (dy,dx) pixels with zero fill."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    xp = F.pad(x, (p,) * 4)
    return xp[..., p - dy : p - dy + h, p - dx : p - dx + w]


TTA_VIEWS = {
    "plain": [(0, 0, 0)],
    "flip": [(0, 0, 0), (1, 0, 0)],
    # airbench tta_level 2: 0.5 * mean(id, flip) + 0.5 * mean over diagonal +-1 shifts of (id, flip)
    "six": [(0, 0, 0), (1, 0, 0), (0, -1, -1), (1, -1, -1), (0, 1, 1), (1, 1, 1)],
    "ten": [
        (0, 0, 0),
        (1, 0, 0),
        (0, -1, 0),
        (1, -1, 0),
        (0, 1, 0),
        (1, 1, 0),
        (0, 0, -1),
        (1, 0, -1),
        (0, 0, 1),
        (1, 0, 1),
    ],
}
TTA_WEIGHTS = {"six": [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]}


@torch.no_grad()
def evaluate(net, images_u8, labels, views=("plain",), bs=2500, bf16=True, cl=True):
    """Returns {view_name: accuracy} for each TTA view set; logits averaged over the views."""
    net.eval()
    out = {v: 0 for v in views}
    for i in range(0, len(images_u8), bs):
        x = images_u8[i : i + bs].float().div_(255).unsqueeze(1)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[i : i + bs]
        cache = {}
        for v in views:
            vs = TTA_VIEWS[v]
            wts = TTA_WEIGHTS.get(v, [1 / len(vs)] * len(vs))
            logits = 0
            for (fl, dy, dx), wt in zip(vs, wts):
                if (fl, dy, dx) not in cache:
                    xv = shift(x.flip(-1) if fl else x, dy, dx)
                    if cl:
                        xv = xv.contiguous(memory_format=torch.channels_last)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        cache[(fl, dy, dx)] = net(xv).float()
                logits = logits + wt * cache[(fl, dy, dx)]
            out[v] += (logits.argmax(1) == y).sum().item()
    net.train()
    return {v: out[v] / len(images_u8) for v in views}


# ------------------------------------------------------------------------------------------------------- EMA
class EMA:
    """Every `every` steps from step `start`: ema <- decay*ema + (1-decay)*net over params AND float buffers
    (what torch.optim.swa_utils.AveragedModel(use_buffers=True) with an EMA avg_fn does); first update copies.
    copyback=True: afterwards net <- ema (airbench's lookahead)."""

    def __init__(self, net, decay, every, start, copyback, schedule="const", total=1):
        self.net, self.decay, self.every, self.start = net, decay, every, start
        self.copyback, self.schedule, self.total = copyback, schedule, total
        self.state = None

    def tensors(self):
        return [t for t in self.net.state_dict().values() if t.dtype.is_floating_point]

    @torch.no_grad()
    def step(self, step):
        if step < self.start or step % self.every:
            return
        cur = self.tensors()
        if self.state is None:
            self.state = [t.detach().clone() for t in cur]
            return
        d = self.decay
        if self.schedule == "cubic":  # airbench: decay**every * (step/total)**3
            d = self.decay**self.every * (step / self.total) ** 3
        for e, t in zip(self.state, cur):
            e.lerp_(t, 1 - d)
            if self.copyback:
                t.copy_(e)

    @torch.no_grad()
    def swap_in(self):
        """Load the average into the net (end of training)."""
        if self.state is not None:
            for e, t in zip(self.state, self.tensors()):
                t.copy_(e)


# ------------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    a = ap.add_argument
    a("--seed", type=int, default=0)
    a("--epochs", type=float, default=30)
    a("--bs", type=int, default=512)
    a("--lr", type=float, default=11.5, help="airbench lr per 1024 images (decoupled from momentum)")
    a("--wd", type=float, default=0.0153, help="airbench weight decay per 1024 images")
    a("--mom", type=float, default=0.85)
    a("--bias_scaler", type=float, default=64.0)
    a("--ls", type=float, default=0.2)
    a("--warm", type=float, default=0.23)
    a("--lr_start", type=float, default=0.2)
    a("--lr_end", type=float, default=0.07)
    a("--widths", type=str, default="32,128,128")
    a("--extra", type=str, default="0,0,0")
    a("--residual", type=int, default=0)
    a("--block", type=str, default="plain", help="plain | res (airbench96 residual pairs; --extra = pairs)")
    a("--whiten", type=int, default=1)
    a("--whiten_width", type=int, default=8)
    a("--pad_to", type=int, default=0)
    a("--bn_mom", type=float, default=0.4)
    a("--scale", type=float, default=1 / 9)
    a("--flip", type=int, default=1)
    a("--translate", type=int, default=2)
    a("--cutout", type=int, default=0)
    a("--cutout_p", type=float, default=1.0)
    a("--erase_p", type=float, default=0.0)
    a("--aug_off_last", type=float, default=0.0, help="epochs at the end without cutout/erasing")
    a("--ema", type=str, default="lookahead", help="none | ema | lookahead")
    a("--ema_decay", type=float, default=0.95)
    a("--ema_every", type=int, default=5)
    a("--ema_start", type=float, default=0.25, help="fraction of total steps")
    a("--ema_sched", type=str, default="cubic", help="const | cubic")
    a("--shadow", type=str, default="", help="extra non-copyback EMA decays evaluated at the end, e.g. 0.98,0.995")
    a("--shadow_every", type=int, default=5)
    a("--shadow_start", type=float, default=0.5)
    a("--threads", type=int, default=2)
    a("--bf16", type=int, default=1)
    a("--cl", type=int, default=1)
    a("--compile", type=int, default=0)
    a("--val_every", type=int, default=1)
    a("--tag", type=str, default="")
    a("--no_log", action="store_true")
    args = ap.parse_args()

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    d = torch.load(os.path.join(HERE, "..", "data", "fashion-mnist-uint8.pt"), weights_only=True)
    order = torch.randperm(60000, generator=torch.Generator().manual_seed(42))
    tr_idx, va_idx = order[5000:], order[:5000]
    Xtr, Ytr = d["train_images"][tr_idx].contiguous(), d["train_labels"][tr_idx].long()
    Xva, Yva = d["train_images"][va_idx].contiguous(), d["train_labels"][va_idx].long()
    Xte, Yte = d["test_images"].contiguous(), d["test_labels"].long()

    torch.manual_seed(args.seed)
    widths = tuple(int(w) for w in args.widths.split(","))
    extra = tuple(int(e) for e in args.extra.split(","))
    net = Net(
        widths,
        args.bn_mom,
        bool(args.whiten),
        args.whiten_width,
        extra,
        bool(args.residual),
        args.scale,
        args.pad_to,
        block=args.block,
    )
    net.init_whiten(Xtr[:5000].float().div(255).unsqueeze(1))
    if args.cl:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if args.compile else net

    bs = args.bs
    steps_per_epoch = len(Xtr) // bs  # drop last
    total = int(round(steps_per_epoch * args.epochs))
    n_epochs = math.ceil(total / steps_per_epoch)

    # airbench parametrisation -> torch SGD with mean loss
    kilostep = 1024 * (1 + 1 / (1 - args.mom))
    lr = args.lr / kilostep * bs  # per step, for a mean-reduced loss
    wd = args.wd * bs / kilostep  # decoupled decay per step (times the schedule)
    lr_b = lr * args.bias_scaler
    norm_b = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    other = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    opt = torch.optim.SGD(
        [dict(params=norm_b, lr=lr_b, weight_decay=wd / lr_b), dict(params=other, lr=lr, weight_decay=wd / lr)],
        momentum=args.mom,
        nesterov=True,
    )

    warm = int(total * args.warm)

    def lr_lambda(step):
        if step < warm:
            f = step / warm
            return args.lr_start * (1 - f) + f
        f = (step - warm) / max(1, total - warm)
        return (1 - f) + args.lr_end * f

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    crit = nn.CrossEntropyLoss(label_smoothing=args.ls)
    ema = None
    if args.ema != "none":
        ema = EMA(
            net,
            args.ema_decay,
            args.ema_every,
            int(args.ema_start * total),
            args.ema == "lookahead",
            args.ema_sched,
            total,
        )

    shadows = {
        float(dcy): EMA(net, float(dcy), args.shadow_every, int(args.shadow_start * total), False)
        for dcy in args.shadow.split(",")
        if dcy
    }
    n_params = sum(p.numel() for p in net.parameters())
    print(f"params {n_params}  steps {total} ({steps_per_epoch}/epoch)  args {vars(args)}", flush=True)
    step = 0
    epoch_times, val_hist = [], []
    t_train0 = time.perf_counter()
    for epoch in range(n_epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(Xtr))
        heavy = epoch < n_epochs - args.aug_off_last
        net.train()
        tl, tn = 0.0, 0
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[i * bs : (i + 1) * bs]
            x = Xtr[idx].float().div_(255).unsqueeze(1)
            y = Ytr[idx]
            if args.flip:
                x = batch_flip(x)
            x = batch_translate(x, args.translate)
            if heavy and args.cutout:
                x = batch_cutout(x, args.cutout, args.cutout_p)
            if heavy and args.erase_p > 0:
                x = batch_erase(x, args.erase_p)
            if args.cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
                out = fwd(x)
            loss = crit(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema is not None:
                ema.step(step)
            for sh in shadows.values():
                sh.step(step)
            if i % 20 == 0:
                tl += loss.item()
                tn += 1
        t_ep = time.perf_counter() - t0
        epoch_times.append(t_ep)
        msg = f"epoch {epoch + 1:3d}/{n_epochs}  train_loss {tl / max(tn, 1):.4f}  time {t_ep:.1f}s"
        if args.val_every and ((epoch + 1) % args.val_every == 0 or epoch == n_epochs - 1):
            tv = time.perf_counter()
            va = evaluate(net, Xva, Yva, ("plain",), bf16=bool(args.bf16), cl=bool(args.cl))["plain"]
            val_hist.append(va)
            msg += f"  val {va * 100:.2f}%  (val {time.perf_counter() - tv:.1f}s)"
        print(msg, flush=True)
    if ema is not None and args.ema == "ema":
        ema.swap_in()
    elif ema is not None and args.ema == "lookahead":
        ema.swap_in()  # airbench's final update with decay 1 -> the average
    t_train = time.perf_counter() - t_train0
    va_final = evaluate(net, Xva, Yva, ("plain",), bf16=bool(args.bf16), cl=bool(args.cl))["plain"]
    te = evaluate(net, Xte, Yte, ("plain", "flip", "six", "ten"), bf16=bool(args.bf16), cl=bool(args.cl))
    t_total = time.perf_counter() - t_start
    shadow_res = {}
    if shadows:
        live = [t.clone() for t in EMA(net, 0, 1, 0, False).tensors()]
        for dcy, sh in shadows.items():
            sh.swap_in()
            shadow_res[dcy] = evaluate(net, Xte, Yte, ("plain", "flip", "six"), bf16=bool(args.bf16), cl=bool(args.cl))
            print(f"shadow EMA {dcy}: " + "  ".join(f"{k} {v:.2%}" for k, v in shadow_res[dcy].items()))
        for t, saved in zip(EMA(net, 0, 1, 0, False).tensors(), live):
            t.copy_(saved)
    print(f"final val (averaged weights) {va_final * 100:.2f}%")
    print("TEST  plain {plain:.2%}  flip {flip:.2%}  six-view {six:.2%}  ten-view {ten:.2%}".format(**te))
    print(f"train+val {t_train:.1f}s  ({sum(epoch_times) / len(epoch_times):.2f} s/epoch)  total wall {t_total:.1f}s")
    if not args.no_log:
        rec = dict(
            tag=args.tag,
            args=vars(args),
            params=n_params,
            test=te,
            val_final=va_final,
            val_hist=val_hist,
            epoch_times=epoch_times,
            shadow=shadow_res,
            s_per_epoch=sum(epoch_times) / len(epoch_times),
            train_s=t_train,
            total_s=t_total,
            load=os.getloadavg()[0],
        )
        with open(os.path.join(HERE, "results", "strong_ablation.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
