"""The networks: plain ``nn.Module``s, no Lightning. Each takes raw images and returns logits.

Contract for every network here: ``forward(images)`` with images float in [0, 1], shape (N, C, H, W) of its data
set, returns logits (N, num_classes). Normalisation is a buffer inside the network, so export and predict need
nothing else. The shape arguments (``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std``) are linked
from the DataModule by the CLI (cli.py): a config names the network and its own knobs only. Their defaults are
Fashion-MNIST's, for use in Python. A network of your own takes whichever of them it needs.
"""

import torch
import torch.nn.functional as F
from torch import nn

# Pixel mean and standard deviation of the 60k Fashion-MNIST training images, on the [0, 1] scale, per channel.
TRAIN_MEAN, TRAIN_STD = (0.2860,), (0.3530,)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the statistics as buffers, so they travel with the state_dict.

    mean, std: one value per channel (or one for all). A checkpoint from before per-channel statistics stored a
    scalar; it loads into a one-channel network unchanged.
    """

    def __init__(self, mean: tuple[float, ...] = TRAIN_MEAN, std: tuple[float, ...] = TRAIN_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1))  # (C, 1, 1)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1))
        self.register_load_state_dict_pre_hook(self._scalar_statistics)

    def _scalar_statistics(self, module, state_dict, prefix, *args) -> None:
        for name in ("mean", "std"):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 0:  # saved as a scalar: the same value for every channel
                state_dict[prefix + name] = value.reshape(1, 1, 1).expand_as(getattr(self, name)).clone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class SeedCNN(nn.Module):
    """The seed article's network, layer for layer; only the normalisation in front is new. For other image
    sizes and channel counts the first conv takes ``in_channels`` and fc1 takes the flattened size that follows;
    for 1x28x28 (Fashion-MNIST) it is exactly the article's."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),  # (H, W)
        mean: tuple[float, ...] = TRAIN_MEAN,
        std: tuple[float, ...] = TRAIN_STD,
    ):
        super().__init__()
        h, w = (((side - 4) // 2 - 4) // 2 for side in image_size)  # two (5x5 conv, 2x2 pool) stages: 28 -> 4
        if h < 1 or w < 1:
            raise ValueError(f"SeedCNN needs images of at least 16x16 pixels, got {image_size[0]}x{image_size[1]}")
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels=in_channels, out_channels=6, kernel_size=5)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5)
        self.fc1 = nn.Linear(in_features=12 * h * w, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=60)
        self.out = nn.Linear(in_features=60, out_features=num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The article applies ReLU, then max-pool. ReLU is monotone, so max-pool then ReLU gives the same values
        # and the same gradients, with ReLU on a quarter of the elements; with channels_last the training step
        # of this network is then about 15 % faster on a CPU (benchmarks/results/bench.md).
        x = self.normalize(images)  # (N, C, 28, 28)
        x = F.relu(F.max_pool2d(self.conv1(x), kernel_size=2, stride=2))  # (N, 6, 24, 24) -> (N, 6, 12, 12)
        x = F.relu(F.max_pool2d(self.conv2(x), kernel_size=2, stride=2))  # (N, 12, 8, 8) -> (N, 12, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 192) -> (N, 120)
        x = F.relu(self.fc2(x))  # (N, 60)
        return self.out(x)  # (N, num_classes) logits: no softmax, cross_entropy applies log-softmax itself


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VGGNet(nn.Module):
    """A small VGG-style network: two blocks of two 3x3 conv-BN-ReLU layers, max-pool, dropout, linear."""

    def __init__(
        self,
        width: int = 32,  # channels of the first block (the second has 2x)
        dropout: float = 0.25,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),  # (H, W)
        mean: tuple[float, ...] = TRAIN_MEAN,
        std: tuple[float, ...] = TRAIN_STD,
    ):
        super().__init__()
        h, w = (side // 4 for side in image_size)  # two 2x2 max-pools: 28 -> 7
        if h < 1 or w < 1:
            raise ValueError(f"VGGNet needs images of at least 4x4 pixels, got {image_size[0]}x{image_size[1]}")
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, width),
            conv_bn_relu(width, width),
            nn.MaxPool2d(2),  # (N, w, 14, 14)
            conv_bn_relu(width, 2 * width),
            conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),  # (N, 2w, 7, 7)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * h * w, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(images)))  # (N, C, 28, 28) -> (N, num_classes)


# ----------------------------------------------------------------------------------------------------
# AirNet: the CIFAR-10 speedrun network (airbench), used by configs/strong.yaml; any size, grey or colour.


class ShiftBatchNorm(nn.BatchNorm2d):
    """BatchNorm that learns only its shift: the scale stays 1 (the next layer's weights can scale), and the
    running statistics follow the batches quickly (``momentum`` 0.4, torch's convention: new = 0.6 old + 0.4 batch).
    """

    def __init__(self, channels: int, momentum: float = 0.4):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


def identity_conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 'same' convolution, no bias, initialised as the identity on its first min(c_in, c_out) channels
    (dirac init): each block starts by passing its input through, which speeds up early training."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
    nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


class ResidualGroup(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU, then one residual pair: x <- GELU(x + BN(conv(GELU(BN(conv(x))))))."""

    def __init__(self, c_in: int, c_out: int, momentum: float):
        super().__init__()
        self.conv1, self.norm1 = identity_conv3x3(c_in, c_out), ShiftBatchNorm(c_out, momentum)
        self.conv2, self.norm2 = identity_conv3x3(c_out, c_out), ShiftBatchNorm(c_out, momentum)
        self.conv3, self.norm3 = identity_conv3x3(c_out, c_out), ShiftBatchNorm(c_out, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))  # (N, c_in, H, W) -> (N, c_out, H/2, W/2)
        y = F.gelu(self.norm2(self.conv2(x)))
        return F.gelu(x + self.norm3(self.conv3(y)))


class AirNet(nn.Module):
    """airbench's network: a frozen 2x2 patch-whitening convolution, three residual groups, global max-pool, a
    linear layer without bias whose logits are scaled down (1/9) for a calm start. Global pooling makes it work
    at any image size of at least 16x16.

    The whitening filters are computed from training images by ``init_from_data`` (the ``DataDependentInit``
    callback calls it once, before the first step); until then they are random and the network still works.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 128),  # channels of the three groups
        bn_momentum: float = 0.4,  # running statistics: weight of the newest batch
        logit_scale: float = 1 / 9,  # multiplies the logits
        num_classes: int = 10,
        in_channels: int = 1,
        mean: tuple[float, ...] = TRAIN_MEAN,
        std: tuple[float, ...] = TRAIN_STD,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        patch = 4 * in_channels  # values in a 2x2 patch
        self.whiten = nn.Conv2d(in_channels, 2 * patch, kernel_size=2)  # the patch eigen-filters and their negatives
        self.whiten.weight.requires_grad_(False)
        channels = (2 * patch, *widths)
        self.groups = nn.Sequential(*(ResidualGroup(a, b, bn_momentum) for a, b in zip(channels, channels[1:])))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(self.normalize(images)))  # (N, C, 28, 28) -> (N, 8C, 27, 27)
        x = self.groups(x)  # -> (N, w0, 13, 13) -> (N, w1, 6, 6) -> (N, w2, 3, 3)
        # global max-pool (N, w2) in float32: the same values and gradients eagerly, and torch.compile's bf16 amax
        # backward gave NaN gradients (torch 2.15 on the CPU, found by benchmarks/gpu_check.sh's test)
        return self.head(x.float().amax(dim=(2, 3))) * self.logit_scale  # -> logits (N, classes)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening filters from the 2x2 patches of ``images`` (N, C, H, W) float in [0, 1]: each eigenvector
        of the patch covariance scaled by 1/sqrt(eigenvalue), and its negative (GELU keeps both signs' halves)."""
        x = self.normalize(images.float())
        c = x.shape[1]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 4 * c)  # (N * (H-1) * (W-1), 4C): (c, 2, 2) flat
        covariance = patches.T @ patches / len(patches)  # (4C, 4C)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending; eigenvectors in columns
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(4 * c, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()
