"""The batched augmentation: what it may do to an image, and that it only runs while training; the alternating flip."""

import pytest
import torch
import torch.nn.functional as F

from fashion_mnist_lightning.data.augment import augment_batch, mirror_half, random_crop, random_hflip
from fashion_mnist_lightning.datamodule import FashionMNISTDataModule


def shifts(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded image: what RandomCrop(28, padding) can return. image (1, 28, 28)."""
    padded = F.pad(image, (padding,) * 4)
    size = image.shape[-1]
    return [padded[:, dy : dy + size, dx : dx + size] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]


def test_random_crop_is_a_shift_with_zero_fill():
    torch.manual_seed(0)
    images = torch.rand(32, 1, 28, 28)
    cropped = random_crop(images, padding=2)
    assert cropped.shape == images.shape
    for image, out in zip(images, cropped):
        assert any(torch.equal(out, candidate) for candidate in shifts(image, 2))
    assert not torch.equal(cropped, images)  # 32 images, 25 shifts each: some move
    assert torch.equal(random_crop(images, padding=0), images)


def test_random_hflip_mirrors_some_images_and_keeps_the_rest():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 28, 28)
    flipped = random_hflip(images, p=0.5)
    mirrored = [torch.equal(o, i.flip(-1)) for i, o in zip(images, flipped)]
    kept = [torch.equal(o, i) for i, o in zip(images, flipped)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 54


def test_same_seed_same_augmentation():
    images = torch.rand(16, 1, 28, 28)
    torch.manual_seed(7)
    a = augment_batch(images, 2, True)
    torch.manual_seed(7)
    assert torch.equal(a, augment_batch(images, 2, True))


def test_augmentation_runs_only_while_training():
    datamodule = FashionMNISTDataModule(crop_padding=2, hflip=True)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(8)

    class Trainer:  # the attributes the hook reads
        training = False
        current_epoch = 0

    datamodule.trainer = Trainer()
    out, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(out, images.float() / 255)
    Trainer.training = True
    torch.manual_seed(0)
    out, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    assert not torch.equal(out, images.float() / 255) and out.min() >= 0 and out.max() <= 1


def test_mirror_half_mirrors_a_seeded_half_once():
    images = torch.rand(200, 1, 28, 28)
    half = mirror_half(images, seed=3)
    mirrored = [torch.equal(o, i.flip(-1)) for i, o in zip(images, half)]
    assert all(m or torch.equal(o, i) for m, o, i in zip(mirrored, half, images)) and 70 < sum(mirrored) < 130
    assert torch.equal(half, mirror_half(images, seed=3)) and not torch.equal(half, mirror_half(images, seed=4))


def test_the_alternating_flip_mirrors_every_image_in_odd_epochs_and_draws_no_random_numbers():
    images = torch.rand(16, 1, 28, 28)
    state = torch.get_rng_state()
    assert torch.equal(augment_batch(images, 0, "alternate", epoch=0), images)
    assert torch.equal(augment_batch(images, 0, "alternate", epoch=1), images.flip(-1))
    assert torch.equal(augment_batch(images, 0, "alternate", epoch=4), images)
    assert torch.equal(torch.get_rng_state(), state)  # the order of the other random draws is unchanged


def test_with_the_alternating_flip_each_training_image_is_seen_both_ways_and_val_test_never(real_data_dir):
    plain = FashionMNISTDataModule(data_dir=str(real_data_dir), val_size=1000)
    alternate = FashionMNISTDataModule(data_dir=str(real_data_dir), val_size=1000, hflip="alternate")
    for datamodule in (plain, alternate):
        datamodule.setup("fit")
    assert torch.equal(alternate.train_set.images, mirror_half(plain.train_set.images, alternate.seed))
    assert torch.equal(alternate.val_set.images, plain.val_set.images)
    assert torch.equal(alternate.test_set.images, plain.test_set.images)

    class Trainer:
        training, current_epoch = True, 1

    alternate.trainer = Trainer()
    batch = alternate.train_set.images[:8], alternate.train_set.labels[:8]
    out, _ = alternate.on_after_batch_transfer(batch, 0)
    assert torch.equal(out, batch[0].flip(-1).float() / 255)  # odd epoch: the other orientation


def test_a_flip_setting_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match="--data.hflip must be true, false or alternate"):
        FashionMNISTDataModule(hflip="sometimes")


def test_a_resized_crop_of_the_whole_image_is_the_image_and_smaller_boxes_differ_per_image():
    from fashion_mnist_lightning.data.augment import random_resized_crop

    images = torch.rand(8, 3, 32, 32)
    assert torch.equal(random_resized_crop(images, 1.0), images)  # off
    torch.manual_seed(0)
    whole = random_resized_crop(images, 0.9999, ratio=(1.0, 1.0))  # a box of (almost) all of it: the image
    assert torch.allclose(whole, images, atol=1e-2)
    torch.manual_seed(0)
    cropped = random_resized_crop(images[:1].expand(8, -1, -1, -1), 0.2)
    assert cropped.shape == (8, 3, 32, 32) and 0 <= cropped.min() and cropped.max() <= 1
    assert len({round(v, 5) for v in cropped.mean(dim=(1, 2, 3)).tolist()}) == 8  # each its own box
    torch.manual_seed(0)
    assert torch.equal(random_resized_crop(images[:1].expand(8, -1, -1, -1), 0.2), cropped)  # seeded


def test_colour_jitter_scales_each_image_and_stays_in_range():
    from fashion_mnist_lightning.data.augment import colour_jitter

    images = torch.rand(16, 3, 8, 8) * 0.5 + 0.25
    assert torch.equal(colour_jitter(images, 0.0), images)
    jittered = colour_jitter(images, 0.4)
    assert jittered.shape == images.shape and 0 <= jittered.min() and jittered.max() <= 1
    ratios = jittered.mean(dim=(1, 2, 3)) / images.mean(dim=(1, 2, 3))
    assert ratios.std() > 0.05 and (ratios - 1).abs().max() <= 0.4 * 1.5  # per image, within the strength
    grey = colour_jitter(torch.rand(4, 1, 8, 8), 0.3)  # one channel: no saturation, no error
    assert grey.shape == (4, 1, 8, 8)
