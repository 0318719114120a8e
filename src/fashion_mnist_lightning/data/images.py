"""Real image files -> uint8 tensors, two ways.

``fashion_mnist_like``: 28x28 grey, light object on a dark background, the way Fashion-MNIST was made (Xiao et
al., 2017): trim the background, resize so the longest edge is 28 px (aspect kept), centre, convert to grey,
negate. Here: any size, colour or grey, PNG or JPEG (whatever Pillow reads); a light background is detected
from the border and inverted. An image that already is 28x28 grey on a dark background is used as it is, so a
Fashion-MNIST image saved as PNG predicts exactly like the original.

``convert_image``: a user's own photo as it is, grey or RGB, resized to cover (H, W) and centre-cropped (what
torchvision's Resize + CenterCrop do). An image that already has the size and mode is used bit for bit.
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
    return np.asarray(on_white(image).convert("L"))


def on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels composited on white (RGBA, LA, PA, a palette or colour key with transparency)."""
    if not image.has_transparency_data:
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def light_background(grey: np.ndarray) -> bool:
    """Is the background light? Judged by the median of the outermost pixels. grey (H, W) uint8."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) > 127


def fashion_mnist_like(image: Image.Image, size: tuple[int, int] = (SIZE, SIZE)) -> torch.Tensor:
    """(H, W) uint8, (28, 28) by default: light object on black, trimmed, fitted inside (H, W), centred."""
    grey = to_grey(image)  # (h, w) uint8
    if light_background(grey):
        grey = 255 - grey
    if grey.shape == tuple(size):
        return torch.from_numpy(grey.copy())
    rows, cols = np.nonzero(grey > OBJECT_THRESHOLD * max(int(grey.max()), 1))
    if len(rows):
        grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # the object's bounding box
    (height, width), (h, w) = size, grey.shape
    scale = min(height / h, width / w)  # the longest edge (relative to the canvas) fills it
    resized = Image.fromarray(grey).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(resized, ((width - resized.width) // 2, (height - resized.height) // 2))
    return torch.from_numpy(np.asarray(canvas).copy())


# ----------------------------------------------------------------------------------------------------
# A photo as it is: grey or RGB, resized to cover (H, W), centre-cropped


def check_shape(channels: int, size: tuple[int, int]) -> None:
    """Raise ValueError unless channels is 1 or 3 and size is two positive integers (H, W)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f"size must be two positive integers (height, width), got {tuple(size)}")


def convert_image(image: Image.Image, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) uint8, C = ``channels`` (1 grey, 3 RGB), (H, W) = ``size``: upright (EXIF), 16-bit and float
    scaled from their own range, transparent pixels on white, resized so it covers (H, W), centre-cropped."""
    check_shape(channels, size)
    height, width = size
    # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale, never below the target (either orientation): a 12 MP
    # photo costs what a thumbnail does. No effect on other formats or on an image already loaded.
    image.draft(None, (max(size), max(size)))
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(to_grey(image))  # Pillow's convert() would clip a 16-bit or float image to white
    image = on_white(image).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.LANCZOS, box=cover_box(image.size, size), reducing_gap=3.0)
    array = np.asarray(image)  # (H, W) or (H, W, 3)
    return torch.from_numpy(array.copy()).reshape(height, width, channels).permute(2, 0, 1).contiguous()


def cover_box(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred region of an image of ``image_size`` (w, h) with the aspect of ``size`` (H, W): scaled to
    (H, W) it covers the target, the shorter side fitting (Resize(shorter side) + CenterCrop)."""
    (w, h), (height, width) = image_size, size
    scale = max(width / w, height / h)
    crop_w, crop_h = width / scale, height / scale
    left, top = (w - crop_w) / 2, (h - crop_h) / 2
    # within the image: the division can land a hair outside it (49x65 to 128x128: left = -3.6e-15), and Pillow
    # refuses a box that does ("box offset can't be negative"): a readable photo would be skipped
    return (max(left, 0.0), max(top, 0.0), min(left + crop_w, float(w)), min(top + crop_h, float(h)))


def model_input(image: Image.Image, shape: tuple[int, int, int], fashion_like: bool) -> torch.Tensor:
    """One image as the model's input, (C, H, W) = ``shape`` uint8: what ``predict`` does to each file of a folder
    and ``serve`` to each upload (one function, so both give the same probabilities)."""
    channels, height, width = shape
    if fashion_like:
        return fashion_mnist_like(ImageOps.exif_transpose(image), (height, width))[None]  # (1, H, W)
    return convert_image(image, channels, (height, width))


def read_folder(
    folder: str | Path, shape: tuple[int, int, int] = (1, SIZE, SIZE), fashion_like: bool = True
) -> tuple[list[str], torch.Tensor, dict[str, str]]:
    """Every file in ``folder`` (sorted, not recursive; sub-folders are not files) as a (C, H, W) = ``shape`` image:
    Fashion-MNIST-like (``fashion_like``, grey only) or as it is (``convert_image``).

    Returns (names, images (N, C, H, W) uint8, {name: why it could not be read}): each file is in exactly one of
    the two, so a file Pillow cannot decode or refuses to open (a decompression bomb), a dangling symbolic link
    or a special file costs its own row, never the whole folder.
    """
    channels, height, width = shape
    check_shape(channels, (height, width))
    if fashion_like and channels != 1:
        raise ValueError(f"fashion_like images are grey: shape must be (1, H, W), got {tuple(shape)}")
    folder = Path(folder)
    names, images, skipped = [], [], {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            continue
        if problem := not_a_file(path):
            skipped[path.name] = problem
            continue
        try:
            with Image.open(path) as image:
                images.append(model_input(image, shape, fashion_like))
            names.append(path.name)
        except Exception as err:  # noqa: BLE001 - whatever Pillow raises for one file is that file's row
            skipped[path.name] = why_unreadable(err)
    stacked = torch.stack(images) if images else torch.zeros(0, *shape, dtype=torch.uint8)  # (N, C, H, W)
    return names, stacked, skipped


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot even be opened as an image file (a FIFO would block the reader), or None."""
    if not path.exists():
        return "dangling symbolic link: its target does not exist"
    if not path.is_file():
        return "not a regular file"
    return None


def why_unreadable(err: Exception) -> str:
    """One line for a file's row: the exception's type and the first line of its message."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
