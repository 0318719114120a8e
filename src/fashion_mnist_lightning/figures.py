"""Matplotlib figures shared by the TensorBoard callbacks and `fashion-mnist report`.

Every function builds a bare ``Figure`` (no pyplot): no global figure list grows, no display is needed, and the
caller decides whether the figure goes to TensorBoard (``add_figure``) or to a PNG (``savefig``).
"""

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

RIGHT, WRONG = "#1a7f37", "#cf222e"  # title colours of a right / wrong prediction


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

    One mosaic image in one axes (not one axes per image): drawing it costs a fraction of a second, which
    matters when TensorBoard gets one every validation epoch.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]  # (N, 1, H, W)
    images = images.transpose(0, 2, 3, 1)  # (N, H, W, C)
    h, w, c = images.shape[1:]
    scale = max(h, w) / 28  # the layout was made for 28x28 images: bigger ones keep the same proportions
    band, gap = round(9 * scale), round(3 * scale)  # pixels of title band above each image, pixels between images
    rows = max(1, -(-len(images) // columns))
    cell_h, cell_w = band + h + gap, w + gap
    mosaic = np.ones((rows * cell_h, columns * cell_w, c))  # white background, the images pasted in
    for k, image in enumerate(images):
        top, left = (k // columns) * cell_h + band, (k % columns) * cell_w
        mosaic[top : top + h, left : left + w] = image
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
