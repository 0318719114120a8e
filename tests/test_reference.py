"""The NumPy reference equals torch: activations, losses, the toy network's backprop, the CNN both ways."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import Workspace
from fashion_mnist_lightning.extras import reference as ref
from fashion_mnist_lightning.extras.crosscheck import crosscheck, seed_cnn_state
from fashion_mnist_lightning.network import SeedCNN

RNG = np.random.default_rng(0)


def close(a, b, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=0)


# ---- activations and losses against their torch twins (float64) ----------------------------------


@pytest.mark.parametrize(
    "numpy_fn, torch_fn",
    [
        (ref.sigmoid, torch.sigmoid),
        (ref.tanh, torch.tanh),
        (ref.relu, torch.relu),
        (ref.linear, lambda t: t),
        (ref.softmax, lambda t: torch.softmax(t, dim=-1)),
    ],
    ids=["sigmoid", "tanh", "relu", "linear", "softmax"],
)
def test_activation_equals_torch(numpy_fn, torch_fn):
    x = RNG.normal(0, 5, size=(64, 10))
    close(numpy_fn(x), torch_fn(torch.from_numpy(x)).numpy())


def test_losses_equal_torch():
    p, y = RNG.uniform(0.01, 0.99, size=(50, 1)), RNG.normal(size=(50, 1))
    tp, ty = torch.from_numpy(p), torch.from_numpy(y)
    close(ref.mse(p, y), F.mse_loss(tp, ty))
    close(ref.mae(p, y), F.l1_loss(tp, ty))
    labels01 = RNG.integers(0, 2, size=(50, 1)).astype(np.float64)
    close(ref.binary_cross_entropy(p, labels01), F.binary_cross_entropy(tp, torch.from_numpy(labels01)))
    logits, classes = RNG.normal(0, 3, size=(40, 10)), RNG.integers(0, 10, size=40)
    one_hot = np.eye(10)[classes]
    close(
        ref.categorical_cross_entropy(ref.softmax(logits), one_hot),
        F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(classes)),
    )
    soft = ref.softmax(RNG.normal(size=(40, 10)))
    close(
        ref.categorical_cross_entropy(ref.softmax(logits), soft),
        F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(soft)),
    )


def test_cross_entropy_is_a_mean_not_the_books_sum():
    p = np.tile([[0.88, 0.06, 0.06]], (5, 1))
    y = np.tile([[1.0, 0.0, 0.0]], (5, 1))
    assert ref.categorical_cross_entropy(p, y) == pytest.approx(-np.log(0.88))
    assert ref.binary_cross_entropy(np.full(4, 0.88), np.ones(4)) == pytest.approx(-np.log(0.88))


def test_chapter_example_088_costs_0128():
    assert (
        round(ref.categorical_cross_entropy(np.array([0.88, 0.04, 0.04, 0.02, 0.02]), np.array([1.0, 0, 0, 0, 0])), 3)
        == 0.128
    )


def test_book_results_unchanged_where_finite():
    x = RNG.normal(0, 3, size=100)
    close(ref.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    close(ref.tanh(x), (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)), rtol=1e-13)
    close(ref.softmax(x), np.exp(x) / np.sum(np.exp(x)), rtol=1e-13)


def test_finite_for_very_large_values():
    big = np.array([[1000.0, 0.0, -1000.0], [1e6, -1e6, 3.0]])
    for value in (ref.softmax(big), ref.log_softmax(big), ref.sigmoid(big), ref.tanh(big)):
        assert np.isfinite(value).all()
    assert np.allclose(ref.softmax(big)[0], [1, 0, 0])
    assert np.isfinite(ref.categorical_cross_entropy(ref.softmax(big), np.eye(3)[[2, 2]]))
    assert np.isfinite(ref.binary_cross_entropy(np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    assert ref.binary_cross_entropy(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0


# ---- the chapter's network: feed-forward and backprop ---------------------------------------------


def test_feed_forward_equals_torch():
    inputs, outputs = RNG.normal(size=(8, 2)), RNG.normal(size=(8, 1))
    weights = [RNG.normal(size=(2, 3)), RNG.normal(size=3), RNG.normal(size=(3, 1)), RNG.normal(size=1)]
    t = [torch.from_numpy(w) for w in weights]
    hidden = torch.sigmoid(torch.from_numpy(inputs) @ t[0] + t[1])
    expected = F.mse_loss(hidden @ t[2] + t[3], torch.from_numpy(outputs))
    close(ref.feed_forward(inputs, outputs, weights), expected)


def test_toy_gradients_match_finite_differences():
    inputs, outputs, weights = ref.toy_network()
    updated, loss = ref.update_weights(inputs, outputs, weights, lr=1.0)
    assert loss == pytest.approx(ref.feed_forward(inputs, outputs, weights))
    for w, w_new in zip(weights, updated):
        analytic = w - w_new
        numeric = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + 1e-6
            plus = ref.feed_forward(inputs, outputs, weights)
            w[idx] = old - 1e-6
            minus = ref.feed_forward(inputs, outputs, weights)
            w[idx] = old
            numeric[idx] = (plus - minus) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_toy_training_loss_falls_every_step():
    losses = ref.train_toy(steps=100, lr=0.01)
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.01 * losses[0]


# ---- CNN layers: backward against finite differences ----------------------------------------------


def numeric_grad(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = f()
        x[idx] = old - eps
        minus = f()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def test_conv2d_backward_matches_finite_differences():
    x, w, b = RNG.normal(size=(2, 2, 6, 6)), RNG.normal(size=(3, 2, 3, 3)), RNG.normal(size=3)
    project = RNG.normal(size=(2, 3, 4, 4))
    dx, dw, db = ref.conv2d_backward(project, x, w)
    for analytic, param in ((dx, x), (dw, w), (db, b)):
        numeric = numeric_grad(lambda: np.sum(ref.conv2d(x, w, b) * project), param)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_max_pool_relu_linear_backward_match_finite_differences():
    x = RNG.normal(size=(2, 3, 4, 4))
    project = RNG.normal(size=(2, 3, 2, 2))
    np.testing.assert_allclose(
        ref.max_pool2d_backward(project, x), numeric_grad(lambda: np.sum(ref.max_pool2d(x) * project), x), atol=1e-8
    )
    project = RNG.normal(size=x.shape)
    np.testing.assert_allclose(
        ref.relu_backward(project, x), numeric_grad(lambda: np.sum(ref.relu(x) * project), x), atol=1e-8
    )
    v, w, b = RNG.normal(size=(4, 5)), RNG.normal(size=(3, 5)), RNG.normal(size=3)
    project = RNG.normal(size=(4, 3))
    dv, dw, db = ref.linear_layer_backward(project, v, w)
    for analytic, param in ((dv, v), (dw, w), (db, b)):
        numeric = numeric_grad(lambda: np.sum(ref.linear_layer(v, w, b) * project), param)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_max_pool_backward_routes_ties_to_the_first_maximum_like_torch():
    x = np.zeros((1, 1, 2, 2))
    t = torch.zeros(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    F.max_pool2d(t, 2).sum().backward()
    np.testing.assert_array_equal(ref.max_pool2d_backward(np.ones((1, 1, 1, 1)), x), t.grad.numpy())


# ---- the whole CNN against torch and autograd ------------------------------------------------------


def numpy_params(network):
    return {k: v.detach().numpy() for k, v in network.state_dict().items()}


def check_cnn_against_torch(state: dict):
    network = SeedCNN()
    network.load_state_dict(state)
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(32) % 10
    with torch.no_grad():
        expected = network(images).numpy()
    np.testing.assert_allclose(ref.cnn_forward(numpy_params(network), images.numpy()), expected, atol=1e-4, rtol=0)

    network = network.double()
    loss = F.cross_entropy(network(images.double()), labels)
    loss.backward()
    ref_loss, grads = ref.cnn_loss_and_grads(numpy_params(network), images.double().numpy(), labels.numpy())
    assert abs(ref_loss - loss.item()) <= 1e-9
    assert set(grads) == set(ref.CNN_PARAMETERS)
    for name, param in network.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), atol=1e-9, rtol=0, err_msg=name)


def test_cnn_equals_torch_with_random_weights():
    torch.manual_seed(3)
    check_cnn_against_torch(SeedCNN().state_dict())


@pytest.fixture(scope="module")
def trained_checkpoint(trained):
    return trained / "checkpoints" / "last.ckpt"


def test_cnn_equals_torch_with_a_trained_checkpoint(trained_checkpoint):
    check_cnn_against_torch(seed_cnn_state(trained_checkpoint))


def test_crosscheck_on_real_test_images(trained_checkpoint, real_data_dir):
    from fashion_mnist_lightning.data.files import load_cache

    arrays = load_cache(real_data_dir)
    result = crosscheck(seed_cnn_state(trained_checkpoint), arrays["test_images"][:2000], arrays["test_labels"][:2000])
    assert result["max_abs_logit_diff"] < 1e-4 and result["argmax_agreement"] >= 0.999
    assert result["numpy_accuracy"] == pytest.approx(result["torch_accuracy"], abs=1e-3)


def test_crosscheck_command_exit_codes(trained_checkpoint, tmp_path, real_data_dir):
    tool = Workspace(tmp_path)
    result = tool.run(f"fashion-mnist crosscheck --ckpt_path {trained_checkpoint}")
    assert "crosscheck: PASS" in result.output
    # nothing can be within a negative tolerance
    tool.run(f"fashion-mnist crosscheck --ckpt_path {trained_checkpoint} --tolerance -1", expect=1)
    assert (
        "does not exist"
        in tool.run(f"fashion-mnist crosscheck --ckpt_path {tmp_path / 'missing.ckpt'}", expect=2).error
    )
