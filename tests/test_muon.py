"""MuonSGD: the filters move by an orthogonalised update at a fixed share of SGD's learning rate, everything else by
torch's own SGD, exactly; its state survives a checkpoint. Selective test-time views: the plain view for every image,
the others only for the images it is unsure of, in fewer forward passes."""

import copy
import functools

import pytest
import torch

from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.muon import MuonSGD, orthogonalize
from fashion_mnist_lightning.network import AirNet

SGD = dict(lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.001)


@pytest.mark.parametrize("shape", [(32, 288), (576, 64)])
def test_orthogonalize_gives_singular_values_near_one_in_any_orientation(shape):
    torch.manual_seed(0)
    rank = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], rank))  # (rows, rank), orthonormal columns
    v, _ = torch.linalg.qr(torch.randn(shape[1], rank))  # (cols, rank)
    update = u @ torch.diag(torch.logspace(0, 1.5, rank)) @ v.T  # singular values 1 ... ~32
    singular = torch.linalg.svdvals(orthogonalize(update, steps=5))
    assert orthogonalize(update, steps=5).shape == shape
    assert 0.5 < singular.min() and singular.max() < 1.5  # the quintic's band, not exactly 1 (by design)


def module_and_grads(seed: int = 0):
    torch.manual_seed(seed)
    module = FashionMNISTClassifier(network=AirNet((8, 16, 16)), norm_lr_scale=64.0)
    grads = {name: torch.randn_like(p) for name, p in module.named_parameters() if p.requires_grad}
    return module, grads


def step(module, optimizer, grads) -> None:
    for name, p in module.named_parameters():
        if p.requires_grad:
            p.grad = grads[name].clone()
    optimizer.step()


def test_filters_get_muon_at_the_ratio_and_everything_else_is_torchs_sgd_bit_for_bit():
    module, grads = module_and_grads()
    muon_module, _ = module_and_grads()
    sgd = torch.optim.SGD(module.parameter_groups(), **SGD)
    muon = MuonSGD(muon_module.parameter_groups(), **SGD, muon_lr_ratio=0.05)
    names = {g["name"]: g for g in muon.param_groups}
    assert set(names) == {"weights", "weights_muon", "biases", "norms"}
    assert all(p.ndim == 4 for p in names["weights_muon"]["params"])
    assert names["weights_muon"]["lr_scale"] == 0.05 and names["weights_muon"]["weight_decay"] == 0.0
    assert names["norms"]["lr_scale"] == 64.0  # the template's own groups are kept as they are
    filters = {id(p) for p in names["weights_muon"]["params"]}
    before = {n: p.detach().clone() for n, p in muon_module.named_parameters()}
    for _ in range(3):
        step(module, sgd, grads)
        step(muon_module, muon, grads)
    for (name, plain), (_, p) in zip(module.named_parameters(), muon_module.named_parameters()):
        if id(p) not in filters:
            assert torch.equal(plain, p), name  # the swap of param_groups leaves SGD's own step untouched
        else:
            assert not torch.equal(before[name], p)
            assert (p.norm() / len(p) ** 0.5 - 1).abs() < 0.2  # renormalised each step, then one small step


def test_muon_state_round_trips_through_a_state_dict():
    module, grads = module_and_grads()
    twin, _ = module_and_grads()
    make = functools.partial(MuonSGD, **SGD, muon_lr_ratio=0.1)
    optimizer = make(module.parameter_groups())
    step(module, optimizer, grads)
    twin.load_state_dict(module.state_dict())
    resumed = make(twin.parameter_groups())
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as from a file: no tensor shared
    for _ in range(2):
        step(module, optimizer, grads)
        step(twin, resumed, grads)
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), twin.parameters()))


def test_bad_muon_settings_are_refused_when_the_optimizer_is_made():
    with pytest.raises(ValueError, match="muon_lr_ratio > 0"):
        MuonSGD([torch.nn.Parameter(torch.zeros(2, 2, 3, 3))], muon_lr_ratio=0)


def counting(module: FashionMNISTClassifier) -> list[int]:
    """The number of images the network sees, per forward pass."""
    seen: list[int] = []
    module.network.register_forward_hook(lambda net, args, out: seen.append(len(args[0])))
    return seen


@pytest.mark.parametrize("images_per_batch", [8, 500])  # one pass of all views / view by view
def test_selective_views_keep_the_plain_logits_of_confident_images_in_fewer_passes(images_per_batch):
    torch.manual_seed(0)
    module = FashionMNISTClassifier(network=AirNet((8, 16, 16)), tta="flip_shift").eval()
    images = torch.rand(images_per_batch, 1, 28, 28)
    with torch.no_grad():
        full, plain = module.evaluate(images), module(images)
        confidence = plain.softmax(1).amax(1)
        module.tta_below = confidence.median().item()  # about half the images are below it
        seen = counting(module)
        selective = module.evaluate(images)
        passed = sum(seen)
        alone = module.evaluate(images[:1])  # the first image in a batch of its own
    doubtful = (confidence < module.tta_below).nonzero().flatten()
    changed = (selective != plain).any(dim=1).nonzero().flatten()
    assert 0 < len(doubtful) < images_per_batch and changed.tolist() == doubtful.tolist()
    assert torch.allclose(selective[doubtful], full[doubtful], atol=1e-5)
    assert passed == images_per_batch + 5 * len(doubtful)  # instead of 6 x images_per_batch
    assert torch.allclose(alone[0], selective[0], atol=1e-5)  # an image's logits do not depend on its batch


def test_a_tta_below_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="tta_below must be a probability"):
        FashionMNISTClassifier(network=AirNet((8, 16, 16)), tta_below=1.5)
