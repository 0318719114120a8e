"""A folder of real image files, one subfolder per class, that a tiny CNN learns in a few dozen steps.

Each class is its own bright shape in its own colour (and grey level) on a dark, noisy background, at a random
position and size: the class is plain to see, the pixels are never the same twice.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")  # class i draws SHAPES[i % 6]
COLOURS = ((255, 80, 80), (80, 255, 80), (90, 140, 255), (255, 255, 90), (255, 90, 255), (90, 255, 255))
SPLIT_SHARES = (("val", 0.2), ("test", 0.2))  # the rest of each class is train


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour) -> None:
    left, top, right, bottom = box
    cx, cy, r = (left + right) / 2, (top + bottom) / 2, (right - left) / 2
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - r / 3, top, cx + r / 3, bottom), fill=colour)
        draw.rectangle((left, cy - r / 3, right, cy + r / 3), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, round(r / 3)))
    else:  # a bar
        draw.rectangle((left, cy - r / 4, right, cy + r / 4), fill=colour)


def photo(label: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """(H, W) = ``size`` RGB: class ``label``'s shape, 40-70 % of the short side, anywhere it fits, plus noise."""
    height, width = size
    side = rng.uniform(0.4, 0.7) * min(height, width)
    left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
    image = Image.new("RGB", (width, height), (15, 15, 20))
    draw_shape(
        ImageDraw.Draw(image), SHAPES[label % len(SHAPES)], (left, top, left + side, top + side), COLOURS[label % 6]
    )
    noisy = np.asarray(image).astype(np.float64) + rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_photo_folder(
    root: Path,
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
    per_class: int = 20,
    size: tuple[int, int] = (40, 48),
    mode: str = "RGB",
    layout: str = "flat",
    fmt: str = "png",
    seed: int = 0,
) -> Path:
    """Write ``per_class`` images of (H, W) = ``size`` for each class into ``root`` and return ``root``.

    layout "flat": root/<class>/<files>; "split": root/train|val|test/<class>/<files> (60/20/20 % of each class).
    fmt "png", "jpeg" or "mixed" (alternating); mode any Pillow mode the format can store ("RGB", "L", "RGBA"
    for PNG, "I;16" for 16-bit PNG). The files are the same for the same arguments.
    """
    if layout not in ("flat", "split") or fmt not in ("png", "jpeg", "mixed"):
        raise ValueError(f"layout must be flat or split, fmt png, jpeg or mixed; got {layout!r}, {fmt!r}")
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        for i in range(per_class):
            folder = root / split_of(i, per_class) / name if layout == "split" else root / name
            folder.mkdir(parents=True, exist_ok=True)
            suffix = "jpg" if fmt == "jpeg" or (fmt == "mixed" and i % 2) else "png"
            save(photo(label, size, rng), mode, folder / f"{name}_{i:03d}.{suffix}")
    return root


def split_of(i: int, per_class: int) -> str:
    """The split of a class's i-th image: the first 60 % train, then val, then test."""
    n_val, n_test = (round(share * per_class) for _, share in SPLIT_SHARES)
    if i < per_class - n_val - n_test:
        return "train"
    return "val" if i < per_class - n_test else "test"


def save(image: Image.Image, mode: str, path: Path) -> None:
    if mode == "I;16":  # Pillow cannot convert RGB to 16-bit: scale the grey levels by 257 (255 -> 65535)
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257
        image = Image.fromarray(grey)
    elif mode == "RGBA":  # the dark background half transparent: it must come out composited on white
        alpha = np.where(np.asarray(image.convert("L")) > 60, 255, 128).astype(np.uint8)
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(alpha))
    else:
        image = image.convert(mode)
    if path.suffix == ".jpg":
        image.save(path, quality=92)
    else:
        image.save(path)
