"""The pictures of a run: matplotlib figures for `fashion-mnist report` and the test-time PNGs, and the same
content drawn straight into pixels for the images the loggers get every validation epoch.

Every figure function builds a bare ``Figure`` (no pyplot): no global figure list grows, no display is needed, and
the caller saves it (``savefig``). Drawing one costs a quarter of a second (artists, layout, text rendering), about
a tenth of a training epoch if paid every epoch; the ``*_image`` functions draw the same content with numpy and
Pillow in a few milliseconds and return the RGB pixels (H, W, 3) uint8 that the loggers' image APIs take.
"""

import functools
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

RIGHT, WRONG = "#1a7f37", "#cf222e"  # title colours of a right / wrong prediction
PAD = 8  # pixels around the parts of an image
CAPTIONS = ("True label", "Predicted label")  # of the confusion matrix's rows and columns
BLUES = matplotlib.colormaps["Blues"]  # confusion_figure's colours (the registry hands out a new copy each time)


def confusion_figure(
    matrix: np.ndarray, class_names: Sequence[str], normalize: bool = False, title: str = ""
) -> Figure:
    """Rows = true class, columns = predicted class; counts (or row fractions) in the cells."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", vmin=0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i, j in np.ndindex(matrix.shape):
        text = f"{matrix[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
        ax.text(
            j, i, text, ha="center", va="center", fontsize=7, color="white" if matrix[i, j] > threshold else "black"
        )
    return fig


def prediction_grid(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    probability: np.ndarray,
    class_names: Sequence[str],
    columns: int = 8,
    title: str = "",
) -> Figure:
    """Images (N, C, H, W) (C = 1 grey or 3 colour; (N, H, W) is grey) in [0, 1], each titled 'predicted p' over
    'true: name', green when right, red when wrong.

    One mosaic image in one axes (not one axes per image): drawing it costs a fraction of a second. The loggers'
    image of every validation epoch is prediction_grid_image's, a few milliseconds.
    """
    images = channels_last(images)  # (N, H, W, C)
    h, w, c = images.shape[1:]
    scale = max(h, w) / 28  # the layout was made for 28x28 images: bigger ones keep the same proportions
    band, gap = round(9 * scale), round(3 * scale)  # pixels of title band above each image, pixels between images
    mosaic, (cell_h, cell_w) = paste_mosaic(images, columns, band, gap)
    rows = len(mosaic) // cell_h
    inch = 1 / 20 / scale  # figure inches per mosaic pixel
    fig = Figure(figsize=(cell_w * columns * inch, cell_h * rows * inch + (0.3 if title else 0)), layout="constrained")
    ax = fig.add_subplot()
    if c == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(mosaic, 0, 1), interpolation="nearest")
    ax.set_axis_off()
    for k in range(len(images)):
        x, y = (k % columns) * cell_w + w // 2, (k // columns) * cell_h + band - 1
        ax.text(
            x,
            y,
            f"{class_names[predicted[k]]} {probability[k]:.2f}\ntrue: {class_names[labels[k]]}",
            ha="center",
            va="bottom",
            fontsize=7,
            color=RIGHT if predicted[k] == labels[k] else WRONG,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def channels_last(images: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W), or grey (N, H, W), as (N, H, W, C)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]  # (N, 1, H, W)
    return images.transpose(0, 2, 3, 1)


def paste_mosaic(
    images: np.ndarray, columns: int, band: int, gap: int, width: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """Images (N, H, W, C) on one white canvas, ``columns`` to a row, each below a band of ``band`` pixels (for its
    title) and centred in a cell ``width`` pixels wide (at least its own width), ``gap`` pixels after each cell.

    Returns the canvas (rows * cell_h, columns * cell_w, C), white being 1.0 (255 for uint8 images), and the cell
    size (cell_h, cell_w).
    """
    n, h, w, c = images.shape
    cell_h, cell_w = band + h + gap, max(w, width) + gap
    rows, indent = max(1, -(-n // columns)), (cell_w - gap - w) // 2
    mosaic = np.full((rows * cell_h, columns * cell_w, c), np.uint8(255) if images.dtype == np.uint8 else 1.0)
    for k, image in enumerate(images):
        top, left = (k // columns) * cell_h + band, (k % columns) * cell_w + indent
        mosaic[top : top + h, left : left + w] = image
    return mosaic, (cell_h, cell_w)


def learning_curves(curves: dict[str, list[tuple[int, float]]], title: str = "") -> Figure:
    """Loss and accuracy per epoch: {tag: [(epoch, value), ...]} for train/loss_epoch, val/loss, train/acc, val/acc."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    panels = ((loss_ax, "loss", ("train/loss_epoch", "val/loss")), (acc_ax, "accuracy", ("train/acc", "val/acc")))
    for ax, name, tags in panels:
        for tag, style in zip(tags, ("-o", "-s")):
            points = curves.get(tag, [])
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, style, markersize=3, label=tag.split("/")[0])
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------------
# the same content as pixels, for the images the loggers get every validation epoch


@functools.cache
def dejavu(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, the font matplotlib ships and draws its figures with, ``size`` pixels high; loaded once (basic
    layout: a third faster than Raqm's text shaping, which labels and counts do not need)."""
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=4096)
def rendered(word: str, size: int) -> tuple[Image.Image, int, int, float]:
    """One word in dejavu(size): its coverage mask ("L"), the mask's corner (left, top) from the start of the word's
    baseline, and its advance width. Pillow renders every letter of every text anew (~8 us a letter); the words of
    the labels, counts and captions come back every epoch, and a rendered word costs a paste."""
    left, top, right, bottom = dejavu(size).getbbox(word, anchor="ls")
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text((-left, -top), word, fill=255, font=dejavu(size), anchor="ls")
    return mask, left, top, dejavu(size).getlength(word)


def text_width(text: str, size: int) -> float:
    """Pixels from the start of ``text`` to its end, as write() sets it."""
    return sum(rendered(word, size)[3] for word in text.split(" ")) + text.count(" ") * dejavu(size).getlength(" ")


def write(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill: str = "black", anchor: str = "mm"
) -> None:
    """``draw.text(xy, text, fill, dejavu(size), anchor)`` word by word from the cache of rendered words. Anchor:
    l/m/r horizontally, then a/m/d vertically (ascender, middle, descender), as Pillow's."""
    ascent, descent = dejavu(size).getmetrics()
    x = xy[0] - text_width(text, size) * "lmr".index(anchor[0]) / 2
    y = xy[1] + {"a": ascent, "m": (ascent - descent) / 2, "d": -descent}[anchor[1]]  # the baseline
    for word in text.split(" "):
        mask, left, top, advance = rendered(word, size)
        if mask.width and mask.height:
            draw.bitmap((round(x + left), round(y + top)), mask, fill=fill)
        x += advance + dejavu(size).getlength(" ")


def turned(lines: Sequence[str], size: int, width: int, step: int) -> Image.Image:
    """Text lines ``step`` pixels apart, right-aligned in ``width`` pixels, black on white, turned a quarter to read
    upwards: an image len(lines) * step pixels wide and ``width`` high, the lines' ends at its top."""
    across = Image.new("RGB", (width, len(lines) * step), "white")
    for i, line in enumerate(lines):
        write(ImageDraw.Draw(across), (width, i * step + step // 2), line, size, anchor="rm")
    return across.transpose(Image.Transpose.ROTATE_90)


def confusion_image(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> np.ndarray:
    """confusion_figure(normalize=False) as read-only RGB pixels (H, W, 3) uint8: rows = true class, columns =
    predicted class, cells coloured by "Blues" from 0 to the largest count, the count in each.

    The class names go left of the rows and, turned a quarter, below the columns; the image grows to fit the
    longest name. Cells are smaller with more classes (44 pixels for up to 10), never narrower than the counts.
    """
    matrix = np.asarray(matrix, dtype=np.float64)  # (K, K)
    k, top = len(class_names), np.max(matrix, initial=0)
    cell = int(np.clip(440 // max(k, 1), 22, 44))
    digits = int(np.clip(cell // 3, 9, 13))  # pixels of the counts' font
    cell = max(cell, int(text_width(f"{int(top)}", digits)) + 6)  # pixels per cell side: the largest count fits
    side, tick, label = k * cell, 4, int(max(text_width(name, 13) for name in class_names)) + 2  # longest name
    caption_h, true_w, predicted_w = sum(dejavu(14).getmetrics()), *(int(text_width(c, 14)) + 2 for c in CAPTIONS)
    title_h = sum(dejavu(16).getmetrics()) + PAD if title else 0
    x0 = max(PAD + caption_h + PAD + label + tick + 3, PAD + predicted_w // 2 - side // 2)  # the matrix's left
    y0 = PAD + title_h + max(0, (true_w - side) // 2)  # and top edge: "True label" fits beside a small matrix
    width = max(x0 + side, x0 + side // 2 + predicted_w // 2, int(text_width(title, 16))) + PAD
    height = y0 + side + tick + 3 + label + PAD + caption_h + PAD
    image = Image.new("RGB", (width, height), "white")
    shade = BLUES(matrix / top if top > 0 else matrix, bytes=True)[..., :3]  # (K, K, 3)
    image.paste(Image.fromarray(shade).resize((side, side), Image.Resampling.NEAREST), (x0, y0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((x0 - 1, y0 - 1, x0 + side, y0 + side), outline="black")
    for i, name in enumerate(class_names):
        middle = i * cell + cell // 2
        draw.line((x0 - 1 - tick, y0 + middle, x0 - 2, y0 + middle), fill="black")  # a tick left of row i
        draw.line((x0 + middle, y0 + side + 1, x0 + middle, y0 + side + tick), fill="black")  # one below column i
        write(draw, (x0 - tick - 4, y0 + middle), name, 13, anchor="rm")
    image.paste(turned(class_names, 13, label, cell), (x0, y0 + side + tick + 3))
    for (i, j), count in np.ndenumerate(matrix):  # white on the dark cells, as confusion_figure
        where = (x0 + j * cell + cell // 2, y0 + i * cell + cell // 2)
        write(draw, where, f"{int(count)}", digits, "white" if count > top / 2 else "black")
    image.paste(turned(CAPTIONS[:1], 14, true_w, caption_h), (PAD, y0 + (side - true_w) // 2))
    write(draw, (x0 + side // 2, height - PAD), CAPTIONS[1], 14, anchor="md")
    if title:
        write(draw, (width // 2, PAD), title, 16, anchor="ma")
    return np.asarray(image)  # read-only: no copy of the bytes


def prediction_grid_image(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    probability: np.ndarray,
    class_names: Sequence[str],
    columns: int = 8,
    title: str = "",
) -> np.ndarray:
    """prediction_grid as read-only RGB pixels (H, W, 3) uint8: images (N, C, H, W) (C = 1 grey or 3 colour;
    (N, H, W) is grey) in [0, 1], scaled up (nearest) to at least 84 pixels a side, each under 'predicted p' over
    'true: name', green when right, red when wrong. A cell is as wide as the widest text.
    """
    images = channels_last(images)  # (N, H, W, C)
    h, w = images.shape[1:3]
    zoom = max(1, -(-84 // max(h, w)))  # 28x28 -> 84x84
    size, line_h = 11, sum(dejavu(11).getmetrics())  # pixels of the texts' font, of a line of them
    lines = [
        (f"{class_names[p]} {q:.2f}", f"true: {class_names[t]}") for t, p, q in zip(labels, predicted, probability)
    ]
    widest = max((text_width(text, size) for pair in lines for text in pair), default=0)
    band, gap, across = (-(-n // zoom) for n in (2 * line_h + 2, 6, int(widest) + 2))  # in the images' pixels
    pixels = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
    mosaic, (cell_h, cell_w) = paste_mosaic(pixels, columns, band, gap, across)  # then scaled up as a whole
    mosaic = Image.fromarray(mosaic[..., 0] if mosaic.shape[2] == 1 else mosaic).convert("RGB")  # grey or colour
    mosaic = mosaic.resize((mosaic.width * zoom, mosaic.height * zoom), Image.Resampling.NEAREST)
    title_h = sum(dejavu(15).getmetrics()) + PAD if title else 0
    width = max(PAD + mosaic.width, int(text_width(title, 15)) + 2 * PAD)
    image = Image.new("RGB", (width, PAD + title_h + mosaic.height), "white")  # the mosaic's gaps: right, bottom
    image.paste(mosaic, (PAD, PAD + title_h))
    draw = ImageDraw.Draw(image)
    for k, pair in enumerate(lines):
        x = PAD + zoom * ((k % columns) * cell_w + (cell_w - gap - w) // 2) + zoom * w // 2  # the image's middle
        y = PAD + title_h + zoom * ((k // columns) * cell_h + band) - 2 * line_h - 1  # the band's text, above it
        colour = RIGHT if predicted[k] == labels[k] else WRONG
        for row, text in enumerate(pair):
            write(draw, (x, y + row * line_h), text, size, colour, anchor="ma")
    if title:
        write(draw, (width // 2, PAD), title, 15, anchor="ma")
    return np.asarray(image)  # read-only: no copy of the bytes
