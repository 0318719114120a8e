"""data/images.py: real image files -> 28x28 grey the way Fashion-MNIST was made, or (C, H, W) as they are."""

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_mnist_lightning.data.files import load_cache
from fashion_mnist_lightning.data.images import convert_image, fashion_mnist_like, read_folder


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
    assert names == ["good.png"] and images.shape == (1, 1, 28, 28)
    assert sorted(skipped) == ["bomb.png", "broken.jpg", "gone.png", "notes.txt"]
    assert "DecompressionBomb" in skipped["bomb.png"] and "dangling" in skipped["gone.png"]


def test_read_folder_keeps_photos_as_they_are_in_any_shape(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels[:, ::-1]).save(tmp_path / "b.png")
    names, images, skipped = read_folder(tmp_path, shape=(3, 20, 30), fashion_like=False)
    assert names == ["a.png", "b.png"] and not skipped and images.shape == (2, 3, 20, 30)
    assert torch.equal(images[0], torch.from_numpy(pixels).permute(2, 0, 1))  # exact size: bit for bit
    (tmp_path / "empty").mkdir()
    assert read_folder(tmp_path / "empty", (1, 8, 8), fashion_like=False)[1].shape == (0, 1, 8, 8)
    with pytest.raises(ValueError, match="fashion_like images are grey"):
        read_folder(tmp_path, shape=(3, 28, 28))


# ----------------------------------------------------------------------------------------------------
# convert_image: a photo as it is, grey or RGB, covering (H, W), centre-cropped


def test_an_image_of_exactly_the_size_and_mode_is_used_bit_for_bit():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (24, 36), dtype=np.uint8)
    assert torch.equal(convert_image(Image.fromarray(rgb), 3, (24, 36)), torch.from_numpy(rgb).permute(2, 0, 1))
    assert torch.equal(convert_image(Image.fromarray(grey), 1, (24, 36)), torch.from_numpy(grey)[None])


def test_colour_becomes_grey_and_grey_becomes_rgb():
    colour = Image.new("RGB", (30, 20), (200, 100, 50))
    grey = convert_image(colour, 1, (10, 15))
    assert grey.shape == (1, 10, 15) and grey.dtype == torch.uint8
    assert (grey == colour.convert("L").getpixel((0, 0))).all()  # Pillow's luma, ITU-R 601-2
    rgb = convert_image(Image.new("L", (30, 20), 77), 3, (10, 15))
    assert rgb.shape == (3, 10, 15) and (rgb == 77).all()


def test_transparent_pixels_are_composited_on_white():
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:, :5] = (0, 0, 255, 255)  # opaque blue on the left, fully transparent black on the right
    out = convert_image(Image.fromarray(rgba), 3, (10, 10))
    assert (out[:, :, 5:] == 255).all() and (out[:, :, :5] == torch.tensor([0, 0, 255])[:, None, None]).all()
    assert (convert_image(Image.fromarray(rgba[..., [0, 3]]).convert("LA"), 1, (10, 10))[:, :, 5:] == 255).all()


def test_16_bit_and_float_photos_are_scaled_from_their_own_range():
    grey = np.random.default_rng(2).integers(0, 256, (12, 16), dtype=np.uint8)
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # mode I;16: convert("L") would clip it to white
    assert torch.equal(convert_image(sixteen, 1, (12, 16)), torch.from_numpy(grey)[None])
    assert torch.equal(convert_image(sixteen, 3, (12, 16)), torch.from_numpy(grey)[None].expand(3, -1, -1))
    floats = Image.fromarray(grey.astype(np.float32) / 255)  # mode F in [0, 1]
    assert torch.equal(convert_image(floats, 1, (12, 16)), torch.from_numpy(grey)[None])


def test_a_wide_image_is_resized_to_cover_and_centre_cropped():
    wide = np.zeros((30, 300), dtype=np.uint8)  # (H, W): the middle third white, the sides black
    wide[:, 100:200] = 255
    out = convert_image(Image.fromarray(wide), 1, (10, 10))  # height fits (30 -> 10), the middle 30 px stay
    assert out.shape == (1, 10, 10) and (out == 255).all()
    tall = np.zeros((60, 20), dtype=np.uint8)  # a white top half: a 20 x 20 crop from the middle is half white
    tall[:30] = 255
    out = convert_image(Image.fromarray(tall), 1, (4, 4))
    assert (out[0, :2] > 200).all() and (out[0, 2:] < 55).all()


def test_an_exif_rotated_photo_is_turned_upright(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (10, 20), dtype=np.uint8)  # (H, W) as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; show it rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    out = convert_image(Image.open(tmp_path / "turned.png"), 1, (20, 10))  # upright it is 20 high, 10 wide
    assert torch.equal(out[0], torch.from_numpy(np.rot90(pixels, k=-1).copy()))


def test_a_big_jpeg_decoded_at_reduced_scale_looks_like_the_full_decode(tmp_path):
    """convert_image lets a JPEG decode at 1/8 scale; the picture must be the same one."""
    y, x = np.mgrid[0:600, 0:800]
    smooth = np.stack([x * 255 // 800, y * 255 // 600, (x + y) * 255 // 1400], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    drafted = convert_image(Image.open(tmp_path / "big.jpg"), 3, (32, 40))
    full = Image.open(tmp_path / "big.jpg")
    full.load()  # decoded at full size: draft() no longer applies
    reference = convert_image(full, 3, (32, 40))
    assert drafted.shape == (3, 32, 40) and (drafted.int() - reference.int()).abs().max() <= 4


@pytest.mark.parametrize("width, height, size", [(49, 65, (128, 128)), (65, 49, (128, 128)), (98, 114, (64, 64))])
def test_a_photo_whose_crop_box_rounds_a_hair_outside_it_is_still_converted(width, height, size):
    """(w - w') / 2 came out at -3.6e-15 for these, and Pillow refused the box: a readable photo was skipped."""
    image = Image.new("RGB", (width, height), (200, 40, 40))
    converted = convert_image(image, 3, size)
    assert converted.shape == (3, *size) and int(converted[0].min()) == 200
