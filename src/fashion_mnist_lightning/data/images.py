"""Real image files -> 28x28 grey, light object on a dark background, the way Fashion-MNIST was made.

Fashion-MNIST's recipe (Xiao et al., 2017): trim the background, resize so the longest edge is 28 px (aspect
kept), centre, convert to grey, negate. Here: any size, colour or grey, PNG or JPEG (whatever Pillow reads);
a light background is detected from the border and inverted. An image that already is 28x28 grey on a dark
background is used as it is, so a Fashion-MNIST image saved as PNG predicts exactly like the original.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

SIZE = 28
OBJECT_THRESHOLD = 0.1  # a pixel above this fraction of the brightest one belongs to the object


def to_grey(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 grey. Transparent pixels become white (then count as a light background). 16-bit, 32-bit
    integer and float images are scaled from their own range (Pillow's convert('L') would clip them to white):
    16-bit by 1/257; float in [0, 1] by 255; anything wider by its maximum."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        top = float(values.max()) if values.size else 0.0
        if image.mode == "F" and values.min() >= 0 and top <= 1:
            scale = 255.0
        elif top <= 255:
            scale = 1.0
        else:
            scale = 255.0 / (65535.0 if top <= 65535 else top)
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"))


def light_background(grey: np.ndarray) -> bool:
    """Is the background light? Judged by the median of the outermost pixels. grey (H, W) uint8."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) > 127


def fashion_mnist_like(image: Image.Image) -> torch.Tensor:
    """(28, 28) uint8: light object on black, trimmed, longest edge 28 px, centred."""
    grey = to_grey(image)  # (H, W) uint8
    if light_background(grey):
        grey = 255 - grey
    if grey.shape == (SIZE, SIZE):
        return torch.from_numpy(grey.copy())
    rows, cols = np.nonzero(grey > OBJECT_THRESHOLD * max(int(grey.max()), 1))
    if len(rows):
        grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # the object's bounding box
    h, w = grey.shape
    scale = SIZE / max(h, w)
    resized = Image.fromarray(grey).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(resized, ((SIZE - resized.width) // 2, (SIZE - resized.height) // 2))
    return torch.from_numpy(np.asarray(canvas).copy())


def read_folder(folder: str | Path) -> tuple[list[str], torch.Tensor, dict[str, str]]:
    """Every file in ``folder`` (sorted, not recursive; sub-folders are not files) as a Fashion-MNIST-like image.

    Returns (names, images (N, 28, 28) uint8, {name: why it could not be read}): each file is in exactly one of
    the two, so a file Pillow cannot decode or refuses to open (a decompression bomb), a dangling symbolic link
    or a special file costs its own row, never the whole folder.
    """
    folder = Path(folder)
    names, images, skipped = [], [], {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            continue
        if not path.exists():
            skipped[path.name] = "dangling symbolic link: its target does not exist"
            continue
        if not path.is_file():
            skipped[path.name] = "not a regular file"
            continue
        try:
            with Image.open(path) as image:
                images.append(fashion_mnist_like(ImageOps.exif_transpose(image)))
            names.append(path.name)
        except Exception as err:  # noqa: BLE001 - whatever Pillow raises for one file is that file's row
            skipped[path.name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
    stacked = torch.stack(images) if images else torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)
    return names, stacked, skipped
