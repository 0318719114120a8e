"""The networks: plain ``nn.Module``s, no Lightning. Each takes raw images and returns logits.

Contract for every network here: ``forward(images)`` with images float in [0, 1], shape (N, 1, 28, 28),
returns logits (N, 10). Normalisation is a buffer inside the network, so export and predict need nothing else.
"""

import torch
import torch.nn.functional as F
from torch import nn

# Pixel mean and standard deviation of the 60k Fashion-MNIST training images, on the [0, 1] scale.
TRAIN_MEAN, TRAIN_STD = 0.2860, 0.3530


class Normalize(nn.Module):
    """(x - mean) / std with the statistics as buffers, so they travel with the state_dict."""

    def __init__(self, mean: float = TRAIN_MEAN, std: float = TRAIN_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class SeedCNN(nn.Module):
    """The seed article's network, layer for layer; only the normalisation in front is new."""

    def __init__(self, mean: float = TRAIN_MEAN, std: float = TRAIN_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5)
        self.fc1 = nn.Linear(in_features=12 * 4 * 4, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=60)
        self.out = nn.Linear(in_features=60, out_features=10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The article applies ReLU, then max-pool. ReLU is monotone, so max-pool then ReLU gives the same values
        # and the same gradients, with ReLU on a quarter of the elements; with channels_last the training step
        # of this network is then about 15 % faster on a CPU (benchmarks/results/bench.md).
        x = self.normalize(images)  # (N, 1, 28, 28)
        x = F.relu(F.max_pool2d(self.conv1(x), kernel_size=2, stride=2))  # (N, 6, 24, 24) -> (N, 6, 12, 12)
        x = F.relu(F.max_pool2d(self.conv2(x), kernel_size=2, stride=2))  # (N, 12, 8, 8) -> (N, 12, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 192) -> (N, 120)
        x = F.relu(self.fc2(x))  # (N, 60)
        return self.out(x)  # (N, 10) logits: no softmax, cross_entropy applies log-softmax itself


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VGGNet(nn.Module):
    """A small VGG-style network: two blocks of two 3x3 conv-BN-ReLU layers, max-pool, dropout, linear."""

    def __init__(self, width: int = 32, dropout: float = 0.25, mean: float = TRAIN_MEAN, std: float = TRAIN_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            conv_bn_relu(1, width),
            conv_bn_relu(width, width),
            nn.MaxPool2d(2),  # (N, w, 14, 14)
            conv_bn_relu(width, 2 * width),
            conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),  # (N, 2w, 7, 7)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 7 * 7, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(images)))  # (N, 1, 28, 28) -> (N, 10)
