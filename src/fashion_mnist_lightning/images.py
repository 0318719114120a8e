"""Real image files -> 28x28 grey, light object on a dark background, the way Fashion-MNIST was made.

Fashion-MNIST's recipe (Xiao et al., 2017): trim the background, resize so the longest edge is 28 px (aspect
kept), centre, convert to grey, negate. Here: any size, colour or grey, PNG or JPEG (whatever Pillow reads);
a light background is detected from the border and inverted. An image that already is 28x28 grey on a dark
background is used as it is, so a Fashion-MNIST image saved as PNG predicts exactly like the original.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 28
OBJECT_THRESHOLD = 0.1  # a pixel above this fraction of the brightest one belongs to the object


def to_grey(image: Image.Image) -> Image.Image:
    """Grey ('L'); transparent pixels become white (then count as a light background)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L")


def light_background(grey: np.ndarray) -> bool:
    """Is the background light? Judged by the median of the outermost pixels. grey (H, W) uint8."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) > 127


def fashion_mnist_like(image: Image.Image) -> torch.Tensor:
    """(28, 28) uint8: light object on black, trimmed, longest edge 28 px, centred."""
    grey = np.asarray(to_grey(image))  # (H, W) uint8
    if light_background(grey):
        grey = 255 - grey
    if grey.shape == (SIZE, SIZE):
        return torch.from_numpy(grey.copy())
    rows, cols = np.nonzero(grey > OBJECT_THRESHOLD * max(int(grey.max()), 1))
    if len(rows):
        grey = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # the object's bounding box
    h, w = grey.shape
    scale = SIZE / max(h, w)
    resized = Image.fromarray(grey).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(resized, ((SIZE - resized.width) // 2, (SIZE - resized.height) // 2))
    return torch.from_numpy(np.asarray(canvas).copy())


def read_folder(folder: str | Path) -> tuple[list[str], torch.Tensor, dict[str, str]]:
    """Every readable image file in ``folder`` (sorted, not recursive) as Fashion-MNIST-like images.

    Returns (names, images (N, 28, 28) uint8, {name: why it was skipped}). Unreadable files are skipped, not
    fatal: the rest still get predictions.
    """
    folder = Path(folder)
    names, images, skipped = [], [], {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                images.append(fashion_mnist_like(image))
            names.append(path.name)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            skipped[path.name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
    stacked = torch.stack(images) if images else torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)
    return names, stacked, skipped
