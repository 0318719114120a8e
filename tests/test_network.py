"""The networks keep the forward contract: raw [0, 1] images (N, 1, 28, 28) in, logits (N, 10) out."""

import pytest
import torch

from fashion_mnist_lightning.network import TRAIN_MEAN, TRAIN_STD, AirNet, SeedCNN, VGGNet


@pytest.mark.parametrize("network", [SeedCNN(), VGGNet(width=8), AirNet((8, 16, 16))], ids=["seed", "vgg", "air"])
def test_forward_contract(network):
    images = torch.rand(5, 1, 28, 28)
    logits = network.eval()(images)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_seed_cnn_matches_the_article_layer_for_layer():
    net = SeedCNN()
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "conv1.weight": (6, 1, 5, 5),
        "conv1.bias": (6,),
        "conv2.weight": (12, 6, 5, 5),
        "conv2.bias": (12,),
        "fc1.weight": (120, 192),
        "fc1.bias": (120,),
        "fc2.weight": (60, 120),
        "fc2.bias": (60,),
        "out.weight": (10, 60),
        "out.bias": (10,),
    }


def test_normalisation_lives_in_the_state_dict():
    state = SeedCNN().state_dict()
    assert state["normalize.mean"].flatten().tolist() == pytest.approx(TRAIN_MEAN)
    assert state["normalize.std"].flatten().tolist() == pytest.approx(TRAIN_STD)


def test_normalisation_is_applied_inside_forward():
    net = SeedCNN().eval()
    images = torch.rand(3, 1, 28, 28)
    manual = net.out(
        torch.relu(
            net.fc2(
                torch.relu(
                    net.fc1(
                        torch.max_pool2d(
                            torch.relu(
                                net.conv2(
                                    torch.max_pool2d(torch.relu(net.conv1((images - TRAIN_MEAN[0]) / TRAIN_STD[0])), 2)
                                )
                            ),
                            2,
                        ).flatten(1)
                    )
                )
            )
        )
    )
    torch.testing.assert_close(net(images), manual)


def test_airnet_whitening_from_data_decorrelates_2x2_patches(real_data_dir):
    from fashion_mnist_lightning.data.files import load_cache

    images = load_cache(real_data_dir)["train_images"][:2000].unsqueeze(1).float() / 255  # (2000, 1, 28, 28)
    network = AirNet((8, 16, 16))
    network.init_from_data(images)
    with torch.no_grad():
        responses = network.whiten(network.normalize(images))[:, :4]  # (N, 4, 27, 27): the 4 eigen-filters
    flat = responses.transpose(0, 1).reshape(4, -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    covariance = flat @ flat.T / flat.shape[1]
    assert torch.allclose(covariance, torch.eye(4), atol=0.05)  # unit variance, uncorrelated
    assert torch.equal(network.whiten.weight[4:], -network.whiten.weight[:4])
    assert not network.whiten.weight.requires_grad and network.whiten.bias.requires_grad


def test_airnet_starts_as_identity_convolutions_and_batchnorm_without_scale():
    network = AirNet((8, 16, 16))
    group = network.groups[1]  # 8 -> 16 channels
    kernel = group.conv1.weight  # (16, 8, 3, 3): dirac on the first 8 output channels
    assert torch.equal(kernel[:8, :, 1, 1], torch.eye(8)) and kernel[:8].abs().sum() == 8
    assert not group.norm1.weight.requires_grad and group.norm1.momentum == 0.4


def test_a_checkpoint_with_scalar_statistics_loads_into_the_per_channel_buffers():
    """Checkpoints from before per-channel normalisation stored mean and std as scalars; they load unchanged."""
    state = SeedCNN().state_dict()
    state["normalize.mean"], state["normalize.std"] = torch.tensor(0.3), torch.tensor(0.4)
    network = SeedCNN()
    network.load_state_dict(state)
    assert network.normalize.mean.flatten().tolist() == pytest.approx([0.3])
    assert network.normalize.std.flatten().tolist() == pytest.approx([0.4])


@pytest.mark.parametrize("network_class", [SeedCNN, VGGNet, AirNet])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 40, 48)])
def test_every_network_takes_its_shape_and_class_count_from_arguments(network_class, shape):
    channels, height, width = shape
    arguments = dict(num_classes=3, in_channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)
    if network_class is not AirNet:  # global pooling: AirNet needs no image size
        arguments["image_size"] = (height, width)
    network = network_class(**arguments).eval()
    images = torch.rand(4, *shape)
    if network_class is AirNet:
        network.init_from_data(images)
    assert network(images).shape == (4, 3)
