"""Augmentation on whole batches, on the training device: random crop with zero padding and horizontal flip.

The flip is random per image and step (``hflip=True``) or alternating (``hflip="alternate"``, airbench's
derandomised flip): a seeded half of the training images is mirrored once (``mirror_half``) and every odd epoch
mirrors the whole batch, so each image is seen in both orientations in turn instead of in a random one.

One gather per batch instead of per-sample PIL transforms, so it costs ~nothing next to a training step.
Randomness comes from torch's global generator on the batch's device, which Lightning seeds
(``seed_everything``) and the template's checkpoints carry (exact resume).
"""

import torch


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


def augment_batch(images: torch.Tensor, crop_padding: int, hflip: bool | str, epoch: int = 0) -> torch.Tensor:
    """Random crop, then the flip: random (``True``), alternating by epoch (``"alternate"``) or none."""
    images = random_crop(images, crop_padding)
    if hflip == "alternate":
        return images.flip(-1) if epoch % 2 else images
    return random_hflip(images, 0.5 if hflip else 0.0)
