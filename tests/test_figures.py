"""The pictures: the per-epoch images drawn with numpy and Pillow (their content, for any number of classes, names
and image sizes), and the matplotlib figures of the report and the test PNGs, which stay as they were."""

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from fashion_mnist_lightning.data.files import CLASS_NAMES
from fashion_mnist_lightning.figures import (
    BLUES,
    PAD,
    RIGHT,
    WRONG,
    confusion_figure,
    confusion_image,
    prediction_grid,
    prediction_grid_image,
    text_width,
)

DARKEST, LIGHTEST = BLUES(1.0, bytes=True)[:3], BLUES(0.0, bytes=True)[:3]  # the colours of the largest count, of 0


def pixels_of(image: np.ndarray, colour, within: int = 0) -> np.ndarray:
    """(H, W) bool: where ``image`` (H, W, 3) is ``colour`` (a name, or 3 bytes), each channel ``within`` that many
    levels (a text's edges are blended with what is under it)."""
    colour = np.round(np.array(to_rgb(colour)) * 255) if isinstance(colour, str) else np.asarray(colour)
    return (np.abs(image.astype(int) - colour.astype(int)) <= within).all(axis=-1)


def assert_framed(image: np.ndarray) -> None:
    """An RGB uint8 image with a white margin all round: nothing drawn was cut at its edges."""
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    margin = PAD // 2
    for edge in (image[:margin], image[-margin:], image[:, :margin], image[:, -margin:]):
        assert (edge == 255).all()


# ----------------------------------------------------------------------------------------------------
# confusion_image


def test_confusion_image_colours_the_cells_by_count_with_the_counts_on_them():
    matrix = np.array([[0, 0, 90], [5, 40, 0], [0, 0, 20]])  # the largest count: true 0, predicted 2 (top right)
    image = confusion_image(matrix, ["a", "b", "c"], title="validation, epoch 4")
    assert_framed(image)
    darkest, lightest = pixels_of(image, DARKEST), pixels_of(image, LIGHTEST)  # count 90, the zero cells
    assert darkest.sum() > 20 * 20 and lightest.sum() > 5 * 20 * 20
    rows, columns = np.nonzero(darkest)
    assert rows.mean() < np.nonzero(lightest)[0].mean() and columns.mean() > np.nonzero(lightest)[1].mean()
    assert image[darkest].astype(int).sum(axis=1).mean() < image[lightest].astype(int).sum(axis=1).mean() / 2
    top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
    assert pixels_of(image[top:bottom, left:right], "white", 60).sum() > 20  # its count, in white
    assert pixels_of(image[: top - PAD], "black", 60).sum() > 20  # the title above the matrix


def test_confusion_image_of_an_all_zero_matrix_is_the_lightest_colour_and_black_zeros():
    image = confusion_image(np.zeros((3, 3), dtype=np.int64), ["a", "b", "c"])
    assert_framed(image)
    assert pixels_of(image, LIGHTEST).sum() > 9 * 20 * 20
    assert not pixels_of(image, DARKEST).any() and pixels_of(image, "black", 60).sum() > 9 * 5  # the zeros, in black


@pytest.mark.parametrize("classes", [1, 10, 60])
def test_confusion_image_fits_any_number_of_classes_and_long_names(classes):
    names = [f"{k:03d}_photos_of_the_{'very_' * (k % 5)}long_folder_name" for k in range(classes)]
    matrix = np.random.default_rng(classes).integers(0, 2000, (classes, classes))
    image = confusion_image(matrix, names, title="test (123456 images)")
    assert_framed(image)
    longest = max(text_width(name, 13) for name in names)
    assert image.shape[1] > longest + classes * 22 and image.shape[0] > longest + classes * 22  # both sides' labels


def test_confusion_image_of_fashion_mnist_is_no_bigger_than_the_matplotlib_figure():
    matrix = np.full((10, 10), 10) + np.eye(10, dtype=int) * 990  # 1000 images a class: 4-digit counts
    image = confusion_image(matrix, CLASS_NAMES, title="validation, epoch 12")
    assert_framed(image)
    assert 500 <= image.shape[0] <= 700 and 500 <= image.shape[1] <= 800  # the figure: 800x700


def test_confusion_image_keeps_confusion_figures_title_and_names():
    """The matplotlib figure is the same as before: the test PNGs and `report` still draw it."""
    figure = confusion_figure(np.eye(10) * 100, CLASS_NAMES, title="test (1000 images)")
    ax = figure.axes[0]
    assert (
        [t.get_text() for t in ax.get_xticklabels()]
        == list(CLASS_NAMES)
        == [t.get_text() for t in ax.get_yticklabels()]
    )
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("Predicted label", "True label", "test (1000 images)")
    assert [t.get_text() for t in ax.texts][:2] == ["100", "0"]


# ----------------------------------------------------------------------------------------------------
# prediction_grid_image


def grid_of(images, right: bool, title: str = "") -> np.ndarray:
    n = len(images)
    labels = np.arange(n) % 10
    predicted = labels if right else (labels + 1) % 10
    return prediction_grid_image(images, labels, predicted, np.linspace(0.2, 1, n), CLASS_NAMES, 8, title)


@pytest.mark.parametrize("shape", [(10, 1, 28, 28), (10, 28, 28)])  # grey, with and without its channel
def test_prediction_grid_image_scales_grey_images_up_three_times(shape):
    image = grid_of(np.zeros(shape), right=True)
    assert_framed(image)
    assert pixels_of(image, "black").sum() == 10 * 84 * 84  # each 28x28 black image: 84x84 black pixels, no text
    assert image.shape[1] > 8 * 84 and image.shape[0] > 2 * 84


def test_prediction_grid_image_keeps_colour_images_of_any_size():
    images = np.zeros((3, 3, 20, 30))
    images[:, 0] = 1  # pure red
    image = grid_of(images, right=True)
    assert_framed(image)
    assert pixels_of(image, "red").sum() == 3 * 60 * 90  # 20x30 scaled 3 times


def test_prediction_grid_image_titles_are_green_when_right_and_red_when_wrong():
    images = np.random.default_rng(0).random((16, 1, 28, 28))
    right, wrong = grid_of(images, right=True, title="validation, epoch 2: 16/16 right"), grid_of(images, right=False)
    assert pixels_of(right, RIGHT, 40).sum() > 16 * 20 and not pixels_of(right, WRONG, 40).any()
    assert pixels_of(wrong, WRONG, 40).sum() > 16 * 20 and not pixels_of(wrong, RIGHT, 40).any()
    assert right.shape[0] > wrong.shape[0]  # the title's band
    assert pixels_of(right[: PAD + 20], "black", 60).sum() > 20 and not pixels_of(wrong[: PAD + 20], "black", 60).any()


def test_prediction_grid_image_makes_room_for_long_names():
    names = [f"a_long_folder_of_photos_{k}" for k in range(3)]
    image = prediction_grid_image(np.ones((3, 1, 28, 28)), np.arange(3), np.arange(3), np.ones(3), names, 8)
    assert_framed(image)
    assert image.shape[1] > 3 * text_width(f"true: {names[0]}", 11)


def test_prediction_grid_draws_the_same_mosaic_as_before():
    """The matplotlib figure `report` draws: the images pasted in a white mosaic under a band for their titles."""
    images = np.random.default_rng(0).random((10, 1, 28, 28))
    labels, predicted = np.arange(10), np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 0])
    figure = prediction_grid(images, labels, predicted, np.full(10, 0.5), CLASS_NAMES, columns=4, title="t")
    mosaic = np.asarray(figure.axes[0].get_images()[0].get_array())
    assert mosaic.shape == (3 * (9 + 28 + 3), 4 * (28 + 3))  # 3 rows of a 9-pixel band, the image, a 3-pixel gap
    assert np.array_equal(mosaic[9 : 9 + 28, 31 : 31 + 28], images[1, 0])  # row 0, column 1
    assert np.array_equal(mosaic[40 + 9 : 40 + 9 + 28, 0:28], images[4, 0]) and mosaic[:9].min() == 1
    texts = figure.axes[0].texts
    assert texts[9].get_text() == "T-shirt/top 0.50\ntrue: Ankle boot" and texts[9].get_color() == WRONG
    assert texts[0].get_color() == RIGHT
