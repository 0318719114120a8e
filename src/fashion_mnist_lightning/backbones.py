"""Pretrained backbones: any timm model (or torchvision classifier) by name as the network, and the one loader that
fits pretrained weights to the data (stem channels, a new head for the data's classes).

    --model.network fashion_mnist_lightning.backbones.Pretrained --model.network.init_args.name resnet18

``Pretrained`` keeps the template's network contract: raw images float in [0, 1], (N, C, H, W) of the data set, in;
logits (N, classes) out; the normalisation inside (the weights' own mean/std when pretrained). Building it reads no
weights: they are loaded by ``load_pretrained()``, which the LightningModule calls once, when a new fit starts (not
on a resume, and never for predict / export / serve, which take everything from the run's checkpoint). So a model
handed to someone else needs its checkpoint only, not the weights file or the hub.

No Lightning here: like network.py, this is plain torch (+ timm, the ``finetune`` extra).
"""

import difflib
from pathlib import Path

import torch
from torch import nn

from fashion_mnist_lightning.errors import UserError, first_line
from fashion_mnist_lightning.network import TRAIN_MEAN, TRAIN_STD, Normalize

TORCHVISION = "torchvision.models."
FINETUNE_EXTRA = "pip install -e '.[finetune]'"


class WeightsError(UserError, ValueError):
    """Pretrained weights that cannot be had or do not fit the network, in one line with the fix."""


def need_timm():
    try:
        import timm
    except ImportError:
        raise WeightsError(f"fashion_mnist_lightning.backbones.Pretrained needs timm; {FINETUNE_EXTRA}") from None
    return timm


# ----------------------------------------------------------------------------------------------------
# fitting a state dict to a network: the stem adapted to the channels, the head fresh when the classes differ


def head_of(network: nn.Module) -> nn.Module:
    """The layer that produces the logits: timm's ``get_classifier()``, else the network's last Linear layer."""
    if hasattr(network, "get_classifier"):
        return network.get_classifier()
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(network).__name__} has no Linear layer to serve as its head")
    return linears[-1]


def fit_state_dict(network: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load ``state`` into ``network``, adapted: a convolution whose input channels differ (the stem) is summed or
    repeated to the network's (as timm adapts its stems), per-channel normalisation statistics likewise, the head's
    tensors are left as initialised when their shape differs (another class count). Anything else that does not
    match is a WeightsError naming the first tensor. Returns the names of the tensors left as initialised."""
    own, classifier = network.state_dict(), head_of(network)
    head = {f"{name}.{key}" for name, m in network.named_modules() if m is classifier for key in m.state_dict()}
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state) - head)  # a head left out of the weights starts new
    if unexpected or missing:
        key = (unexpected or missing)[0]
        where = "is in the weights but not in the network" if unexpected else "is in the network but not the weights"
        raise WeightsError(
            f"{source} does not fit {type(network).__name__}: {key} {where} ({len(unexpected)} unexpected, "
            f"{len(missing)} missing tensors); pass weights saved from the same architecture"
        )
    fitted = {}
    for key, value in state.items():
        target = own[key]
        if value.shape == target.shape:
            fitted[key] = value
        elif key in head:
            continue  # another class count: the head starts new
        elif value.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            fitted[key] = adapt_channels(value, target.shape[1])  # the stem: (out, C, kh, kw)
        elif key.endswith(("normalize.mean", "normalize.std")) and value.numel() in (1, target.numel()):
            fitted[key] = value.mean().expand_as(target).clone()  # grey <-> colour: one statistic for all
        else:
            raise WeightsError(
                f"{source} does not fit {type(network).__name__}: {key} has shape {tuple(value.shape)} in the "
                f"weights, {tuple(target.shape)} in the network; pass weights saved from the same architecture"
            )
    network.load_state_dict({**own, **fitted})
    return [key for key in own if key in head and key not in fitted]


def start_weights(network: nn.Module, init_weights: str | None, class_names: list[str]) -> str | None:
    """Where a new fit's network starts: the network weights of a checkpoint (``init_weights``, a path; its head
    left new unless it was trained on exactly these ``class_names``), else the network's own pretrained weights
    (``load_pretrained()``), else its random init (None). One line saying which."""
    if init_weights is not None:
        state = read_weights(Path(init_weights))
        if trained_classes(Path(init_weights)) not in (None, list(class_names)):  # other classes: a new head
            classifier = head_of(network)
            head = [f"{name}." for name, m in network.named_modules() if m is classifier]
            state = {k: v for k, v in state.items() if not k.startswith(tuple(head))}
        fresh = fit_state_dict(network, state, init_weights)
        head = f"; {', '.join(fresh)} new for this data's classes" if fresh else ""
        return f"{type(network).__name__}: weights from {init_weights}{head}"
    if hasattr(network, "load_pretrained"):
        return network.load_pretrained()
    return None


def trained_classes(path: Path) -> list[str] | None:
    """The class names a checkpoint of this template was trained on; None for a plain weights file."""
    if path.suffix != ".ckpt":
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    names = checkpoint.get("hyper_parameters", {}).get("class_names") if isinstance(checkpoint, dict) else None
    return list(names) if names is not None else None


def adapt_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A conv kernel (out, C, kh, kw) for ``channels`` inputs, as timm adapts its pretrained stems: summed over C for
    one channel (a grey image through RGB filters); else C repeated cyclically to ``channels`` and scaled by
    C / channels, so an image whose channels are equal gives the same output as before."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-channels // weight.shape[1])  # ceil
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (weight.shape[1] / channels)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as {name: tensor}: safetensors, or a torch file read with weights_only=True (a state dict, or
    one under "state_dict" / "model"); a checkpoint of this template gives its network's tensors."""
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise WeightsError(f"weights file {path} {problem}; pass the path of a .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickled code, a truncated file: any of them is this one line
        raise WeightsError(
            f"cannot read weights file {path} ({first_line(err)[:160]}); pass a safetensors or torch state dict file"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors; pass a safetensors or torch state dict file")
    if any(k.startswith("network.") for k in state):  # a LightningModule's (this template's checkpoint)
        state = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    return {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP-wrapped model


# ----------------------------------------------------------------------------------------------------


class Pretrained(nn.Module):
    """A timm model (``name`` from timm.list_models(), a weights tag allowed: resnet18.a1_in1k) or a torchvision
    classifier (``torchvision.models.resnet18``), with the data's classes and channels, behind the template's
    contract. Pretrained, the normalisation is the weights' own mean/std (ImageNet's for most); with ``weights``
    None, the data's statistics (linked by the CLI) and a random init."""

    def __init__(
        self,
        name: str = "resnet18",  # timm model name, or torchvision.models.<factory>
        weights: str | None = "hub",  # loaded when a fit starts: "hub" = timm's Hugging Face cache (downloaded
        # once; offline with HF_HUB_OFFLINE=1 once cached), torchvision's own cache for its models; a file path
        # (.safetensors, or a torch state dict read with weights_only=True); None = random init
        drop_rate: float = 0.0,  # dropout before the head
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),  # (H, W); CNNs take any size, ViTs are built for this one
        mean: tuple[float, ...] = TRAIN_MEAN,
        std: tuple[float, ...] = TRAIN_STD,
    ):
        super().__init__()
        if not 0 <= drop_rate < 1:
            raise ValueError(f"--model.network.init_args.drop_rate must be in [0, 1), got {drop_rate}")
        self.name, self.weights = name, weights
        if name.startswith(TORCHVISION):
            self.model, statistics = torchvision_model(name, num_classes, in_channels, weights is not None)
        else:
            self.model, statistics = timm_model(name, num_classes, in_channels, drop_rate)
        if weights is not None:  # the weights' own statistics, one value per input channel
            mean, std = (per_channel(s, in_channels) for s in statistics)
        self.normalize = Normalize(mean, std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(images))  # (N, C, H, W) in [0, 1] -> (N, num_classes) logits

    def get_classifier(self) -> nn.Module:
        return head_of(self.model)

    def load_pretrained(self) -> str:
        """Load the weights ``weights`` names, fitted to this network; a one-line description of what was done.
        WeightsError (one line, with the fix) when they cannot be had or do not fit."""
        if self.weights is None:
            return f"{self.name}: random init (weights: null)"
        source, state = self._fetch()
        fresh = fit_state_dict(self.model, state, source)
        head = f"; head {', '.join(fresh)} new for this data's classes" if fresh else ""
        return f"{self.name}: pretrained weights from {source}{head}"

    def _fetch(self) -> tuple[str, dict[str, torch.Tensor]]:
        if self.weights != "hub":
            return self.weights, read_weights(Path(self.weights).expanduser())
        try:
            if self.name.startswith(TORCHVISION):
                return hub_torchvision(self.name)
            return hub_timm(self.model.pretrained_cfg, self.name)
        except WeightsError:
            raise
        except Exception as err:  # noqa: BLE001 - no network, no cache, a refused download: one line
            raise WeightsError(
                f"the pretrained weights of {self.name} cannot be had ({type(err).__name__}: "
                f"{first_line(err)[:200]}): no hub reached and no cached copy; with a network the first run "
                "downloads them into the Hugging Face cache (HF_HOME); without one, pass a local file with "
                "--model.network.init_args.weights PATH (or weights: null for a random init)"
            ) from None


def timm_model(name: str, num_classes: int, in_channels: int, drop_rate: float) -> tuple[nn.Module, tuple]:
    timm = need_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f'--model.network.init_args.name {name!r} is not a timm model{hint}; `python -c "import timm; '
            "print(timm.list_models('resnet*'))\"` lists them, or name a torchvision one as torchvision.models.NAME"
        )
    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, drop_rate=drop_rate
    )
    config = model.pretrained_cfg
    return model, (config.get("mean", (0.485, 0.456, 0.406)), config.get("std", (0.229, 0.224, 0.225)))


def torchvision_model(name: str, num_classes: int, in_channels: int, pretrained: bool) -> tuple[nn.Module, tuple]:
    from torchvision import models

    factory = name.removeprefix(TORCHVISION)
    if factory not in models.list_models(module=models):
        close = difflib.get_close_matches(factory, models.list_models(module=models), n=1)
        hint = f" (did you mean {TORCHVISION}{close[0]}?)" if close else ""
        raise ValueError(
            f"{name} is not one of torchvision's classification models{hint}; "
            "torchvision.models.list_models() lists them"
        )
    model = models.get_model(factory, weights=None, num_classes=num_classes)
    if in_channels != 3:
        replace_stem(model, in_channels)
    weights = models.get_model_weights(factory).DEFAULT if pretrained else None
    transforms = weights.transforms() if weights is not None else None
    return model, (tuple(transforms.mean), tuple(transforms.std)) if transforms is not None else ((0.5,), (0.5,))


def replace_stem(model: nn.Module, channels: int) -> None:
    """The first Conv2d, rebuilt for ``channels`` inputs (its pretrained kernel is adapted when loaded)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                conv = nn.Conv2d(
                    channels, child.out_channels, child.kernel_size, child.stride, child.padding, child.dilation,
                    child.groups if child.groups == 1 else channels, child.bias is not None,
                )  # fmt: skip
                setattr(parent, child_name, conv)
                return
    raise ValueError(f"{type(model).__name__} has no Conv2d stem to fit to {channels} input channels")


def per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for ``channels`` inputs: RGB's averaged for grey, one value repeated for many."""
    if len(values) == channels:
        return tuple(values)
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(channels))


def hub_timm(config: dict, name: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The weights of a timm model from its Hugging Face repository, through the usual cache (HF_HOME): a cached
    copy is read without asking the network; otherwise one quick look (10 s at most) before the download, so no
    network is one line within seconds, not the hub client's minute of retries."""
    import huggingface_hub
    from timm.models import load_state_dict_from_hf

    hub_id = config.get("hf_hub_id")
    if not hub_id:
        raise WeightsError(
            f"timm has no pretrained weights for {name} on the Hugging Face hub; pass a local file with "
            "--model.network.init_args.weights PATH, or a tagged name (timm.list_models(pretrained=True))"
        )
    for filename in ("model.safetensors", "pytorch_model.bin"):  # what timm looks for, in its order
        cached = huggingface_hub.try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return f"hf-hub:{hub_id} (cached: {cached})", read_weights(Path(cached))
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise WeightsError(
            f"the pretrained weights of {name} (hf-hub:{hub_id}) are not in the Hugging Face cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; run once online, or pass a "
            "local file with --model.network.init_args.weights PATH"
        )
    huggingface_hub.model_info(hub_id, timeout=10)  # raises at once without a network
    return f"hf-hub:{hub_id}", load_state_dict_from_hf(hub_id)


def hub_torchvision(name: str) -> tuple[str, dict[str, torch.Tensor]]:
    """torchvision's DEFAULT weights for ``name``, through torch's hub cache (TORCH_HOME)."""
    from torchvision import models

    weights = models.get_model_weights(name.removeprefix(TORCHVISION)).DEFAULT
    return weights.url, weights.get_state_dict(progress=False)
