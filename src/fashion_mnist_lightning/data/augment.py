"""Augmentation on whole batches, on the training device: random crop with zero padding and horizontal flip; for
photos also a random resized crop and a colour jitter, each image its own draw.

The flip is random per image and step (``hflip=True``) or alternating (``hflip="alternate"``, airbench's
derandomised flip): a seeded half of the training images is mirrored once (``mirror_half``) and every odd epoch
mirrors the whole batch, so each image is seen in both orientations in turn instead of in a random one.

One gather per batch instead of per-sample PIL transforms, so it costs ~nothing next to a training step.
Randomness comes from torch's global generator on the batch's device, which Lightning seeds
(``seed_everything``) and the template's checkpoints carry (exact resume).
"""

import math

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image shifted by its own random (dy, dx) in [-padding, padding], the uncovered border zero.

    images (B, C, H, W) -> (B, C, H, W); the same as torchvision's RandomCrop(H, padding) per image.
    """
    if padding <= 0:
        return images
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (B, C, H + 2p, W + 2p)
    dy, dx = torch.randint(0, 2 * padding + 1, (2, b, 1), device=images.device)  # (B, 1) each
    rows = (dy + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]  # (B, 1, 1, 1)
    channel = torch.arange(c, device=images.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch, channel, rows, cols]  # (B, C, H, W)


def random_hflip(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p. (B, C, H, W) -> (B, C, H, W)."""
    if p <= 0:
        return images
    flip = torch.rand(len(images), device=images.device) < p  # (B,)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Every image moved dy pixels down and dx right, the uncovered border zero. (B, C, H, W) -> (B, C, H, W)."""
    p, (h, w) = max(abs(dy), abs(dx)), images.shape[-2:]
    padded = torch.nn.functional.pad(images, (p,) * 4)  # (B, C, H + 2p, W + 2p)
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def mirror_half(images: torch.Tensor, seed: int) -> torch.Tensor:
    """A copy with a seeded random half of the images mirrored: epoch 0 of the alternating flip. (N, C, H, W)."""
    half = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < 0.5  # (N,)
    return torch.where(half[:, None, None, None], images.flip(-1), images)


def random_resized_crop(images: torch.Tensor, min_area: float, ratio: tuple[float, float] = (3 / 4, 4 / 3)):
    """Each image cut to its own random box, ``min_area`` to all of its area, aspect ratio log-uniform in ``ratio``,
    anywhere it fits, and resized back to (H, W) bilinearly: torchvision's RandomResizedCrop per image, as one
    ``grid_sample`` over the batch. (B, C, H, W) -> (B, C, H, W)."""
    if min_area >= 1:
        return images
    b, device = len(images), images.device
    area = torch.empty(b, device=device).uniform_(min_area, 1.0)
    aspect = torch.empty(b, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)  # fractions of W, H
    x = (torch.rand(b, device=device) * 2 - 1) * (1 - width)  # the box's centre, in [-1, 1] coordinates
    y = (torch.rand(b, device=device) * 2 - 1) * (1 - height)
    zero = torch.zeros_like(x)
    theta = torch.stack([torch.stack([width, zero, x], 1), torch.stack([zero, height, y], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and (colour images) saturation each scaled by its own factor in [1 - s, 1 + s] per
    image, the result clipped to [0, 1]. (B, C, H, W) float in [0, 1] -> the same."""
    if strength <= 0:
        return images
    factors = 1 + (torch.rand(3, len(images), 1, 1, 1, device=images.device) * 2 - 1) * strength  # (3, B, 1, 1, 1)
    images = images * factors[0]
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    images = (images - mean) * factors[1] + mean
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
        grey = (images * weights[:, None, None]).sum(dim=1, keepdim=True)  # (B, 1, H, W) luma
        images = (images - grey) * factors[2] + grey
    return images.clamp(0, 1)


def augment_batch(
    images: torch.Tensor,
    crop_padding: int,
    hflip: bool | str,
    epoch: int = 0,
    resized_crop: float = 1.0,
    jitter: float = 0.0,
) -> torch.Tensor:
    """Resized crop, shifting crop, then the flip: random (``True``), alternating by epoch (``"alternate"``) or
    none; then the colour jitter."""
    images = random_crop(random_resized_crop(images, resized_crop), crop_padding)
    if hflip == "alternate":
        images = images.flip(-1) if epoch % 2 else images
    else:
        images = random_hflip(images, 0.5 if hflip else 0.0)
    return colour_jitter(images, jitter)
