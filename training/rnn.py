"""The adder's training core: a sigmoid RNN, its loss and backpropagation through time, in numpy.

Column-vector notation, least significant bit first, x_t = [bit t of a, bit t of b]:
    z_t = w_h h_{t-1} + w_i x_t + b_h,   h_t = sigmoid(z_t),   h_0 = 0
    o_t = w_o h_t + b_o,                 p_t = sigmoid(o_t),   predicted bit t = p_t > 0.5
    loss = 1/2 sum_t (p_t - y_t)^2, averaged over the pairs of a batch
         + saturation x mean over steps, pairs and units of h_t (1 - h_t)
The saturation term (0 unless asked) pushes hidden units towards 0 or 1, so states contract
and the output's margin grows: what makes a model provable at every width (training/certify).
Arrays are batched as [time, pair, unit]. Hyperparameters are arguments; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Params = dict[str, np.ndarray]
Cache = dict[str, np.ndarray]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, as the original program writes it (callers silence overflow)."""
    return 1.0 / (1.0 + np.exp(-z))


def init_params(hidden_size: int, rng: np.random.Generator, biases: bool = False) -> Params:
    """Uniform [-1, 1) weights as in the original; biases start at zero."""
    params = {
        "w_i": rng.uniform(-1.0, 1.0, (hidden_size, 2)),
        "w_h": rng.uniform(-1.0, 1.0, (hidden_size, hidden_size)),
        "w_o": rng.uniform(-1.0, 1.0, (1, hidden_size)),
    }
    if biases:
        params["b_h"] = np.zeros(hidden_size)
        params["b_o"] = np.zeros(1)
    return params


def batch(a: np.ndarray, b: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs x [T, N, 2] and targets y [T, N] for int64 arrays a, b (sums below 2**63)."""
    shifts = np.arange(width)[:, None]
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    x = np.stack([(a >> shifts) & 1, (b >> shifts) & 1], axis=-1).astype(np.float64)
    return x, (((a + b) >> shifts) & 1).astype(np.float64)


def forward(params: Params, x: np.ndarray) -> Cache:
    """All steps for a batch x [T, N, 2]; keeps h [T+1, N, H] and p [T, N] for backward."""
    steps, n, _ = x.shape
    w_h, w_o = params["w_h"], params["w_o"]
    # z_t's input term does not depend on h, so it is computed for every step at once
    drive = x @ params["w_i"].T
    if "b_h" in params:
        drive += params["b_h"]
    h = np.zeros((steps + 1, n, w_h.shape[0]))
    # exp(-z) overflows to inf for z < -709, and 1 / (1 + inf) = 0 is then the right value
    with np.errstate(over="ignore"):
        for t in range(steps):
            h[t + 1] = sigmoid(h[t] @ w_h.T + drive[t])
        o = h[1:] @ w_o[0]
        if "b_o" in params:
            o += params["b_o"][0]
        p = sigmoid(o)
    return {"x": x, "h": h, "p": p}


def loss(p: np.ndarray, y: np.ndarray, h: np.ndarray | None = None,
         saturation: float = 0.0) -> float:
    """1/2 (p - y)^2 summed over bits, averaged over pairs (the original's loss when N = 1);
    plus saturation x the mean of h (1 - h) over h [T+1, N, H]'s steps 1..T when asked."""
    value = 0.5 * np.sum((p - y) ** 2) / p.shape[1]
    if saturation:
        if h is None:
            raise ValueError("a saturation term needs the hidden states h")
        value += saturation * np.mean(h[1:] * (1.0 - h[1:]))
    return float(value)


def backward(params: Params, cache: Cache, y: np.ndarray, saturation: float = 0.0) -> Params:
    """Exact gradients of loss(), each step beside the forward quantity it differentiates."""
    x, h, p = cache["x"], cache["h"], cache["p"]
    steps, n = p.shape
    size = h.shape[2]
    w_h, w_o = params["w_h"], params["w_o"]
    grads: Params = {}
    # loss = 1/2 sum (p - y)^2 / N
    d_p = (p - y) / n
    # p_t = sigmoid(o_t)
    d_o = d_p * p * (1.0 - p)
    # o_t = w_o h_t + b_o
    grads["w_o"] = d_o.reshape(1, -1) @ h[1:].reshape(-1, size)
    if "b_o" in params:
        grads["b_o"] = np.array([d_o.sum()])
    d_h = d_o[:, :, None] * w_o[0]  # only the output path so far; the recurrence adds below
    if saturation:
        # + saturation x mean h_t (1 - h_t): d/dh_t = saturation (1 - 2 h_t) / (T N H)
        d_h += (saturation / (steps * n * size)) * (1.0 - 2.0 * h[1:])
    # h_t = sigmoid(z_t), z_t = w_h h_{t-1} + ...: h_{t-1} also feeds z_t, so walk back in time
    d_sigmoid = h[1:] * (1.0 - h[1:])
    d_z = np.empty_like(d_h)
    for t in reversed(range(steps)):
        np.multiply(d_h[t], d_sigmoid[t], out=d_z[t])
        if t > 0:
            d_h[t - 1] += d_z[t] @ w_h
    # z_t = w_h h_{t-1} + w_i x_t + b_h
    d_z_flat = d_z.reshape(-1, size)
    grads["w_h"] = d_z_flat.T @ h[:-1].reshape(-1, size)
    grads["w_i"] = d_z_flat.T @ x.reshape(-1, 2)
    if "b_h" in params:
        grads["b_h"] = d_z_flat.sum(axis=0)
    return grads


def loss_and_grads(
    params: Params, x: np.ndarray, y: np.ndarray, saturation: float = 0.0
) -> tuple[float, Params]:
    """One forward and backward pass: the unit an optimizer consumes."""
    cache = forward(params, x)
    value = loss(cache["p"], y, cache["h"], saturation)
    return value, backward(params, cache, y, saturation)


@dataclass
class SGD:
    """Plain gradient descent: the original's update rule."""

    learning_rate: float

    def step(self, params: Params, grads: Params) -> None:
        """Move every parameter against its gradient."""
        for name, grad in grads.items():
            params[name] -= self.learning_rate * grad


@dataclass
class Adam:
    """Adam (Kingma and Ba): per-parameter step sizes, so one learning rate fits every layer."""

    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)

    def step(self, params: Params, grads: Params) -> None:
        """Bias-corrected moment estimates scale each update."""
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for name, grad in grads.items():
            m = self.m.setdefault(name, np.zeros_like(grad))
            v = self.v.setdefault(name, np.zeros_like(grad))
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * grad * grad
            params[name] -= self.learning_rate * (m / c1) / (np.sqrt(v / c2) + self.eps)


def optimizer(name: str, learning_rate: float, beta1: float = 0.9) -> SGD | Adam:
    """The optimizer a config names."""
    if name == "sgd":
        return SGD(learning_rate)
    if name == "adam":
        return Adam(learning_rate, beta1=beta1)
    raise ValueError(f"unknown optimizer {name!r}")


OPTIMIZERS = ("adam", "sgd")
