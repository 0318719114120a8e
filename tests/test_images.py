"""data/images.py: real image files -> 28x28 grey the way Fashion-MNIST was made, whatever their depth."""

import numpy as np
import torch
from PIL import Image

from fashion_mnist_lightning.data.files import load_cache
from fashion_mnist_lightning.data.images import fashion_mnist_like, read_folder


def test_a_light_background_colour_image_is_inverted_trimmed_and_centred():
    dark = torch.zeros(28, 28, dtype=torch.uint8)
    dark[6:22, 10:18] = 200  # a light 16x8 object on black
    big = np.kron(255 - dark.numpy(), np.ones((4, 4), dtype=np.uint8))  # dark object on white, 112x112
    rgb = Image.fromarray(np.stack([big] * 3, axis=-1))
    out = fashion_mnist_like(rgb)
    assert out.shape == (28, 28) and out.dtype == torch.uint8
    assert out[:, :5].max() == 0 and out[:, -5:].max() == 0  # background dark again beside the object
    rows, cols = torch.nonzero(out > 100, as_tuple=True)
    assert rows.min() == 0 and rows.max() == 27  # longest edge fills 28 px
    assert abs((cols.min() + cols.max()).item() / 2 - 13.5) <= 1  # centred


def test_a_fashion_mnist_image_saved_as_png_is_used_unchanged(tmp_path, real_data_dir):
    image = load_cache(real_data_dir)["test_images"][0]
    Image.fromarray(image.numpy()).save(tmp_path / "a.png")
    assert torch.equal(fashion_mnist_like(Image.open(tmp_path / "a.png")), image)


def test_16_bit_and_float_images_keep_their_grey_levels(tmp_path, real_data_dir):
    """A 16-bit PNG of a test image used to saturate to a white silhouette (convert('L') clips at 255)."""
    image = load_cache(real_data_dir)["test_images"][0]  # (28, 28) uint8
    sixteen = Image.fromarray(image.numpy().astype(np.uint16) * 257)  # the same picture, 16-bit
    sixteen.save(tmp_path / "sixteen.png")
    assert torch.equal(fashion_mnist_like(Image.open(tmp_path / "sixteen.png")), image)
    floats = Image.fromarray(image.numpy().astype(np.float32) / 255)  # mode F, values in [0, 1]
    floats.save(tmp_path / "float.tiff")
    assert torch.equal(fashion_mnist_like(Image.open(tmp_path / "float.tiff")), image)


def test_every_file_gets_exactly_one_row_whatever_it_is(tmp_path, real_data_dir):
    image = load_cache(real_data_dir)["test_images"][0].numpy()
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "good.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # dangling symbolic link
    (folder / "sub").mkdir()  # a folder is not a file: no row
    bomb = Image.new("L", (1, 1))
    bomb.save(folder / "bomb.png")
    big = Image.new("L", (20_000, 10_000))  # 2e8 pixels: Pillow refuses to decode it (decompression bomb)
    big.save(folder / "bomb.png", optimize=False)
    names, images, skipped = read_folder(folder)
    assert names == ["good.png"] and images.shape == (1, 28, 28)
    assert sorted(skipped) == ["bomb.png", "broken.jpg", "gone.png", "notes.txt"]
    assert "DecompressionBomb" in skipped["bomb.png"] and "dangling" in skipped["gone.png"]
