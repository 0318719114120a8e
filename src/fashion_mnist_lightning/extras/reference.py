"""The scratch math in plain NumPy (no torch here): what the torch model does, re-done by hand.

Part 1 follows the book chapter (Modern Computer Vision with PyTorch, ch. 1): feed-forward, activations,
losses, with its names and signatures. Where the book's code is numerically unstable (softmax of large
values, log of 0) the functions here are stable and give the book's results wherever those are finite.
Part 2 is the chapter's next step, backpropagation, for its toy network. Part 3 is the seed CNN, forward
and backward, layer by layer; tests prove it equal to torch and to autograd.

Run ``python -m fashion_mnist_lightning.reference`` for the toy network trained by gradient descent.
"""

import numpy as np

# ====================================================================================================
# Part 1: the chapter's activations and losses


def sigmoid(x):
    """S(x) = 1 / (1 + e^-x); for x < 0 written as e^x / (1 + e^x) so e^-x never overflows."""
    x = np.asarray(x, dtype=np.float64) if np.asarray(x).dtype.kind in "iub" else np.asarray(x)
    positive = x >= 0
    z = np.exp(-np.abs(x))
    return np.where(positive, 1 / (1 + z), z / (1 + z))


def tanh(x):
    """tanh(x) = (e^x - e^-x) / (e^x + e^-x); np.tanh, because the quotient is inf/inf = nan for |x| > 710."""
    return np.tanh(x)


def relu(x):
    """ReLU(x) = max(x, 0)."""
    return np.where(x > 0, x, 0)


def linear(x):
    """linear(x) = x."""
    return x


def softmax(x):
    """softmax(x)_i = e^(x_i - max x) / sum_j e^(x_j - max x), row-wise over the last axis.

    Subtracting the max changes nothing mathematically and keeps e^x finite; the book's version sums
    over the whole array, which is the same for one vector and wrong for a batch of rows.
    """
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def mse(p, y):
    """Mean squared error: mean((p - y)^2)."""
    return np.mean(np.square(p - y))


def mae(p, y):
    """Mean absolute error: mean(|p - y|)."""
    return np.mean(np.abs(p - y))


def _xlogy(y, p):
    """y * log(p) with 0 * log(0) = 0 and log of an exact 0 clipped to log(smallest float): never nan or inf."""
    p = np.asarray(p, dtype=np.float64)
    safe = np.log(np.clip(p, np.finfo(np.float64).tiny, None))
    return np.where(y == 0, 0.0, y * safe)


def binary_cross_entropy(p, y):
    """BCE = -(1/m) sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)], the mean over the m data points.

    The chapter's text says mean; its code (-np.mean(np.sum(...))) takes the mean of a scalar sum, i.e. the
    sum. This is the mean, and it stays finite where p is exactly 0 or 1.
    """
    y = np.asarray(y, dtype=np.float64)
    return -np.mean(_xlogy(y, p) + _xlogy(1 - y, 1 - np.asarray(p, dtype=np.float64)))


def categorical_cross_entropy(p, y):
    """CCE = -(1/m) sum_i sum_c y_ic log p_ic for p, y of shape (m, C): the mean over data points.

    Like the chapter's text (its code sums over everything). One row of shape (C,) is one data point.
    Example from the chapter: probability 0.88 on the true class costs -ln 0.88 = 0.128.
    """
    y = np.asarray(y, dtype=np.float64)
    m = y.shape[0] if y.ndim > 1 else 1
    return -np.sum(_xlogy(y, p)) / m


def feed_forward(inputs, outputs, weights):
    """The chapter's network: hidden = sigmoid(inputs @ W1 + b1), out = hidden @ W2 + b2; returns mse(out, outputs).

    weights = [W1 (n_in, n_hidden), b1 (n_hidden,), W2 (n_hidden, n_out), b2 (n_out,)].
    """
    pre_hidden = np.dot(inputs, weights[0]) + weights[1]
    hidden = sigmoid(pre_hidden)
    pred_out = np.dot(hidden, weights[2]) + weights[3]
    return mse(pred_out, outputs)


# ====================================================================================================
# Part 2: backpropagation for the chapter's toy network


def update_weights(inputs, outputs, weights, lr):
    """One gradient-descent step with hand-derived gradients; returns (updated weights, loss before the step).

    With h = sigmoid(X W1 + b1), p = h W2 + b2, L = mean((p - y)^2) over its N entries:
      dL/dp = 2 (p - y) / N,  dL/dW2 = h^T dL/dp,  dL/db2 = sum_rows dL/dp,
      dL/dh = dL/dp W2^T,     dL/dz = dL/dh * h (1 - h),  dL/dW1 = X^T dL/dz,  dL/db1 = sum_rows dL/dz.
    """
    W1, b1, W2, b2 = weights
    hidden = sigmoid(np.dot(inputs, W1) + b1)
    pred = np.dot(hidden, W2) + b2
    loss = mse(pred, outputs)
    d_pred = 2 * (pred - outputs) / pred.size
    d_hidden_pre = np.dot(d_pred, W2.T) * hidden * (1 - hidden)
    grads = [
        np.dot(np.transpose(inputs), d_hidden_pre),
        d_hidden_pre.sum(axis=0),
        np.dot(hidden.T, d_pred),
        d_pred.sum(axis=0),
    ]
    return [w - lr * g for w, g in zip(weights, grads)], loss


def toy_network():
    """The chapter's toy problem: input (1, 1), target 0, 3 sigmoid hidden nodes, 1 linear output; its weights."""
    inputs = np.array([[1.0, 1.0]])
    outputs = np.array([[0.0]])
    weights = [
        np.array([[-0.0053, 0.3793], [-0.5820, -0.5204], [-0.2723, 0.1896]]).T,  # W1 (2, 3)
        np.array([-0.0140, 0.5607, -0.0628]),  # b1 (3,)
        np.array([[0.1528, -0.1745, -0.1135]]).T,  # W2 (3, 1)
        np.array([-0.5516]),  # b2 (1,)
    ]
    return inputs, outputs, weights


def train_toy(steps: int = 100, lr: float = 0.01) -> list[float]:
    """Gradient descent on the toy network; the loss before each step."""
    inputs, outputs, weights = toy_network()
    losses = []
    for _ in range(steps):
        weights, loss = update_weights(inputs, outputs, weights, lr)
        losses.append(float(loss))
    return losses


# ====================================================================================================
# Part 3: the seed CNN, layer by layer, forward and backward. Layouts follow torch: x (N, C, H, W),
# conv weight (O, C, k, k), linear weight (out, in).


def conv2d(x, w, b):
    """y[n, o, i, j] = b[o] + sum_{c, u, v} x[n, c, i + u, j + v] w[o, c, u, v] (cross-correlation, stride 1)."""
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, Ho, Wo, k, k)
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, O)
    return out.transpose(0, 3, 1, 2) + b[None, :, None, None]  # (N, O, Ho, Wo)


def conv2d_backward(d_out, x, w):
    """Gradients of conv2d: dx = full convolution of d_out with w; dw = x windows . d_out; db = sum d_out."""
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, Ho, Wo, k, k)
    dw = np.tensordot(d_out, windows, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, k, k)
    db = d_out.sum(axis=(0, 2, 3))
    padded = np.pad(d_out, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))  # (N, O, H + k - 1, W + k - 1)
    flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, O, k, k)
    dx = conv2d(padded, flipped, np.zeros(w.shape[1], dtype=d_out.dtype))  # (N, C, H, W)
    return dx, dw, db


def max_pool2d(x, size: int = 2):
    """y[n, c, i, j] = max over the size x size window at (size i, size j); H and W divisible by size."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // size, size, w // size, size).max(axis=(3, 5))


def max_pool2d_backward(d_out, x, size: int = 2):
    """Routes each gradient to the first maximum of its window, as torch does."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // size, size, w // size, size).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(n, c, h // size, w // size, size * size)  # (N, C, Ho, Wo, size^2)
    first_max = windows.argmax(axis=-1)
    d_windows = np.zeros_like(windows)
    np.put_along_axis(d_windows, first_max[..., None], d_out[..., None], axis=-1)
    d_windows = d_windows.reshape(n, c, h // size, w // size, size, size).transpose(0, 1, 2, 4, 3, 5)
    return d_windows.reshape(n, c, h, w)


def relu_backward(d_out, x):
    """dReLU/dx = 1 where x > 0, else 0 (torch's choice at 0)."""
    return d_out * (x > 0)


def linear_layer(x, w, b):
    """y = x W^T + b with torch's weight layout (out, in). (``linear`` above is the chapter's identity.)"""
    return x @ w.T + b


def linear_layer_backward(d_out, x, w):
    """dx = d_out W, dW = d_out^T x, db = sum_rows d_out."""
    return d_out @ w, d_out.T @ x, d_out.sum(axis=0)


def log_softmax(x):
    """log softmax(x)_i = (x_i - max x) - log sum_j e^(x_j - max x), row-wise: finite for any finite x."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


CNN_PARAMETERS = (
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "out.weight",
    "out.bias",
)


def _cnn_forward_with_cache(params, images):
    mean, std = params.get("normalize.mean", 0.2860), params.get("normalize.std", 0.3530)
    x0 = (images - np.asarray(mean, dtype=images.dtype)) / np.asarray(std, dtype=images.dtype)  # (N, 1, 28, 28)
    z1 = conv2d(x0, params["conv1.weight"], params["conv1.bias"])  # (N, 6, 24, 24)
    a1 = relu(z1)
    p1 = max_pool2d(a1)  # (N, 6, 12, 12)
    z2 = conv2d(p1, params["conv2.weight"], params["conv2.bias"])  # (N, 12, 8, 8)
    a2 = relu(z2)
    p2 = max_pool2d(a2)  # (N, 12, 4, 4)
    f = p2.reshape(len(p2), -1)  # (N, 192)
    z3 = linear_layer(f, params["fc1.weight"], params["fc1.bias"])  # (N, 120)
    a3 = relu(z3)
    z4 = linear_layer(a3, params["fc2.weight"], params["fc2.bias"])  # (N, 60)
    a4 = relu(z4)
    logits = linear_layer(a4, params["out.weight"], params["out.bias"])  # (N, 10)
    return logits, (x0, z1, a1, p1, z2, a2, p2, f, z3, a3, z4, a4)


def cnn_forward(params, images, batch_size: int = 1000):
    """The seed CNN on raw images (N, 1, 28, 28) in [0, 1] -> logits (N, 10); params = its state_dict as NumPy."""
    return np.concatenate(
        [_cnn_forward_with_cache(params, images[i : i + batch_size])[0] for i in range(0, len(images), batch_size)]
    )


def cnn_loss_and_grads(params, images, labels):
    """Mean cross-entropy of the seed CNN on (images, labels) and the gradient of every parameter."""
    logits, (x0, z1, a1, p1, z2, a2, p2, f, z3, a3, z4, a4) = _cnn_forward_with_cache(params, images)
    n = len(labels)
    log_probs = log_softmax(logits)
    loss = -log_probs[np.arange(n), labels].mean()
    d_logits = np.exp(log_probs)  # dL/dlogits = (softmax - one_hot) / N
    d_logits[np.arange(n), labels] -= 1
    d_logits /= n
    grads = {}
    d_a4, grads["out.weight"], grads["out.bias"] = linear_layer_backward(d_logits, a4, params["out.weight"])
    d_a3, grads["fc2.weight"], grads["fc2.bias"] = linear_layer_backward(
        relu_backward(d_a4, z4), a3, params["fc2.weight"]
    )
    d_f, grads["fc1.weight"], grads["fc1.bias"] = linear_layer_backward(
        relu_backward(d_a3, z3), f, params["fc1.weight"]
    )
    d_a2 = max_pool2d_backward(d_f.reshape(p2.shape), a2)
    d_p1, grads["conv2.weight"], grads["conv2.bias"] = conv2d_backward(
        relu_backward(d_a2, z2), p1, params["conv2.weight"]
    )
    d_a1 = max_pool2d_backward(d_p1, a1)
    _, grads["conv1.weight"], grads["conv1.bias"] = conv2d_backward(relu_backward(d_a1, z1), x0, params["conv1.weight"])
    return loss, grads


def main() -> int:
    losses = train_toy()
    for step in (0, 1, 2, 9, 49, 99):
        print(f"step {step:3d}  loss {losses[step]:.6f}")
    falling = all(b < a for a, b in zip(losses, losses[1:]))
    print(f"loss fell every step: {falling}  ({losses[0]:.4f} -> {losses[-1]:.6f} in {len(losses)} steps)")
    return 0 if falling else 1


if __name__ == "__main__":
    raise SystemExit(main())
