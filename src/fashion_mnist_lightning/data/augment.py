"""Augmentation on whole batches, on the training device: random crop with zero padding and horizontal flip.

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


def augment_batch(images: torch.Tensor, crop_padding: int, hflip: bool) -> torch.Tensor:
    return random_hflip(random_crop(images, crop_padding), 0.5 if hflip else 0.0)
