"""A sigmoid RNN that adds binary numbers, with backpropagation through time, in plain numpy.

Column-vector semantics, least significant bit first:
    h_t = sigmoid(w_h @ h_{t-1} + w_i @ x_t + b_h),  h_0 = 0,  x_t = [bit t of a, bit t of b]
    p_t = sigmoid(w_o @ h_t + b_o),                  predicted bit t of a + b = p_t > 0.5
Arrays are batched as [time, pair, unit]; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function; written with tanh so large |z| never overflows exp."""
    return 0.5 + 0.5 * np.tanh(0.5 * z)


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


def hidden_size(params: Params) -> int:
    """Number of hidden units, read off the recurrent matrix."""
    return int(params["w_h"].shape[0])


# --- bits ------------------------------------------------------------------------------------


def encode(values: Sequence[int] | np.ndarray, width: int) -> np.ndarray:
    """Bits of non-negative ints as uint8 [width, N], least significant first; any int size."""
    if width <= 64:
        try:
            array = np.asarray(values, dtype=np.uint64)  # refuses ints that do not fit
        except OverflowError:
            array = None
        if array is not None:
            shifts = np.arange(width, dtype=np.uint64)[:, None]
            return ((array[None, :] >> shifts) & np.uint64(1)).astype(np.uint8)
    values = list(values)
    nbytes = max(1, (width + 7) // 8)
    raw = b"".join(int(v).to_bytes(nbytes, "little") for v in values)
    octets = np.frombuffer(raw, dtype=np.uint8).reshape(len(values), nbytes)
    return np.ascontiguousarray(np.unpackbits(octets, axis=1, bitorder="little")[:, :width].T)


def decode(bits: np.ndarray) -> list[int]:
    """Inverse of encode: [T, N] bits (least significant first) to Python ints."""
    bits = np.asarray(bits, dtype=np.uint8)
    packed = np.packbits(bits.T, axis=1, bitorder="little")
    if bits.shape[0] <= 64:
        padded = np.zeros((packed.shape[0], 8), dtype=np.uint8)
        padded[:, : packed.shape[1]] = packed
        return padded.view("<u8")[:, 0].tolist()
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


# --- forward and backward (training) -----------------------------------------------------------


def forward(params: Params, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run all steps for a batch x [T, N, 2]; cache h [T+1, N, H] and p [T, N] for backward."""
    steps, n, _ = x.shape
    w_i, w_h, w_o = params["w_i"], params["w_h"], params["w_o"]
    # sigmoid(z) = (1 + tanh(z/2)) / 2, so iterate u_t = tanh(z_t / 2) with h_t = (1 + u_t) / 2:
    # z_t / 2 = (w_h / 4) u_{t-1} + (w_h 1 / 4 + (w_i x_t + b_h) / 2), one matmul, add, tanh a step.
    drive = x @ w_i.T  # input contribution at every step at once: [T, N, H]
    if "b_h" in params:
        drive += params["b_h"]
    drive *= 0.5
    drive += 0.25 * w_h.sum(axis=1)
    recur = 0.25 * w_h.T
    u = np.empty((steps + 1, n, hidden_size(params)))
    u[0] = -1.0  # h_0 = 0
    for t in range(steps):
        np.matmul(u[t], recur, out=u[t + 1])
        u[t + 1] += drive[t]
        np.tanh(u[t + 1], out=u[t + 1])
    h = 0.5 * (1.0 + u)
    o = h[1:] @ w_o[0]
    if "b_o" in params:
        o += params["b_o"][0]
    return {"x": x, "h": h, "p": sigmoid(o)}


def loss(p: np.ndarray, y: np.ndarray) -> float:
    """1/2 (y - p)^2 summed over bits, averaged over pairs (the original's loss when N = 1)."""
    return float(0.5 * np.sum((y - p) ** 2) / p.shape[1])


def backward(params: Params, cache: dict[str, np.ndarray], y: np.ndarray) -> Params:
    """Exact gradients of loss() by backpropagation through time."""
    x, h, p = cache["x"], cache["h"], cache["p"]
    steps, n = p.shape
    size = hidden_size(params)
    w_h, w_o = params["w_h"], params["w_o"]
    # p_t = sigmoid(o_t), o_t = w_o h_t + b_o: dL/do_t = (p_t - y_t) / N * p_t (1 - p_t)
    d_o = (p - y) * p * (1.0 - p) / n  # [T, N]
    h_flat = h[1:].reshape(-1, size)
    grads = {"w_o": (d_o.reshape(1, -1) @ h_flat)}
    if "b_o" in params:
        grads["b_o"] = np.array([d_o.sum()])
    d_z = np.empty_like(h[1:])  # dL/dz_t, z_t the pre-activation of h_t
    d_h = d_o[:, :, None] * w_o[0]  # dL/dh_t through the output at t: [T, N, H]
    d_sig = h[1:] * (1.0 - h[1:])  # h_t = sigmoid(z_t)
    for t in reversed(range(steps)):
        np.multiply(d_h[t], d_sig[t], out=d_z[t])
        if t > 0:
            d_h[t - 1] += d_z[t] @ w_h  # ... and through the recurrence into h_{t-1}
    d_z_flat = d_z.reshape(-1, size)
    grads["w_h"] = d_z_flat.T @ h[:-1].reshape(-1, size)  # z_t = w_h h_{t-1} + ...
    grads["w_i"] = d_z_flat.T @ x.reshape(-1, 2)  # ... + w_i x_t
    if "b_h" in params:
        grads["b_h"] = d_z_flat.sum(axis=0)
    return grads


def loss_and_grads(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """One forward and backward pass; the unit an optimizer consumes."""
    cache = forward(params, x)
    return loss(cache["p"], y), backward(params, cache, y)


def batch(a: np.ndarray, b: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Training tensors x [T, N, 2] and targets y [T, N] for integer arrays a, b (width <= 63)."""
    x = np.stack([encode(a, width), encode(b, width)], axis=-1).astype(np.float64)
    return x, encode(np.asarray(a) + np.asarray(b), width).astype(np.float64)


# --- optimizers -------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        self.t = 0
        self.m: Params = {}
        self.v: Params = {}

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


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


# --- inference --------------------------------------------------------------------------------


def predict_bits(params: Params, a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    """Predicted sum bits [T, N] (bool) by the training forward pass."""
    x = np.stack([a_bits, b_bits], axis=-1).astype(np.float64)
    return forward(params, x)["p"] > 0.5


class Predictor:
    """Fast inference for one loaded model: tables folded once, shared prefixes computed once.

    With h = (1 + u) / 2 the recurrence becomes u_t = tanh(A u_{t-1} + c[x_t]) with A = w_h / 4,
    and bit t is set when (w_o / 2) u_t + (sum(w_o) / 2 + b_o) > 0. Inputs, constant and
    recurrence share one matrix, so a step is one matmul and one tanh. Pairs whose low bits agree
    share hidden states: the first `table_levels` levels of the prefix tree (every run of low
    bits) are computed once per model, and deeper levels once per call while a level has fewer
    states than there are pairs; pairs index into them and continue one by one after that.
    """

    def __init__(
        self, params: Params, chunk: int = 2048, share_prefixes: bool = True, table_levels: int = 6
    ) -> None:
        w_i, w_h, w_o = params["w_i"], params["w_h"], params["w_o"]
        size = hidden_size(params)
        b_h = params.get("b_h", np.zeros(size))
        b_o = params.get("b_o", np.zeros(1))
        self.size = size
        self.chunk = chunk
        self.share_prefixes = share_prefixes
        mat = np.empty((size + 3, size))
        mat[:size] = w_h.T / 4.0  # u_{t-1}
        mat[size] = w_i[:, 0] / 2.0  # bit of a
        mat[size + 1] = w_i[:, 1] / 2.0  # bit of b
        mat[size + 2] = w_h.sum(axis=1) / 4.0 + b_h / 2.0  # constant column
        self.mat = mat
        self.recur = np.ascontiguousarray(mat[:size])
        # the same step, per input symbol k = bit_a + 2 bit_b, for the prefix tree
        symbols = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float64)
        self.sym = symbols @ mat[size:]  # [4, H]
        self.out_w = w_o[0] / 2.0
        self.out_b = float(w_o.sum() / 2.0 + b_o[0])
        self.levels: list[np.ndarray] = []  # states of tree level t + 1: row = prefix key
        self.level_bits: list[np.ndarray] = []
        states = self.initial()
        for _ in range(table_levels if share_prefixes else 0):
            states = self.children(states)
            self.levels.append(states)
            self.level_bits.append(self.set_bits(states))
        self.level_lists = [b.tolist() for b in self.level_bits]  # for the one-pair path

    def bits(self, a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
        """Predicted sum bits [T, N] (bool) for input bits [T, N]."""
        steps, n = a_bits.shape
        out = np.empty((steps, n), dtype=bool)
        if n == 0 or steps == 0:
            return out
        symbol = a_bits.astype(np.intp)
        symbol += 2 * b_bits
        states = self.initial()
        key = np.zeros(n, dtype=np.intp)
        t = 0
        while t < steps and (
            t < len(self.levels) or (self.share_prefixes and 4 * len(states) <= n)
        ):
            if t < len(self.levels):
                states, set_bits = self.levels[t], self.level_bits[t]
            else:
                states = self.children(states)
                set_bits = self.set_bits(states)
            key *= 4
            key += symbol[t]
            out[t] = set_bits[key]
            t += 1
        u0 = states[key] if len(states) > 1 else np.broadcast_to(states, (n, self.size))
        self._dense(u0, a_bits[t:], b_bits[t:], out[t:])
        return out

    def add_one(self, a: int, b: int, bits: int) -> int:
        """The predicted sum of one pair, with as few array operations as the model allows."""
        total, key, t = 0, 0, 0
        for t in range(min(bits, len(self.levels))):
            key = 4 * key + ((a >> t) & 1) + 2 * ((b >> t) & 1)
            total |= self.level_lists[t][key] << t
        start = min(bits, len(self.levels))
        if start == bits:
            return total
        u = self.levels[start - 1][key] if start else self.initial()[0]
        states = np.empty((bits - start, self.size))
        for t in range(start, bits):
            u = np.tanh(u @ self.recur + self.sym[((a >> t) & 1) + 2 * ((b >> t) & 1)])
            states[t - start] = u
        for i, bit in enumerate((states @ self.out_w > -self.out_b).tolist()):
            total |= bit << (start + i)
        return total

    def initial(self) -> np.ndarray:
        """The one hidden state before any input: h_0 = 0, that is u_0 = -1."""
        return np.full((1, self.size), -1.0)

    def children(self, states: np.ndarray, symbols: int = 4) -> np.ndarray:
        """Next states for each state and each of the first `symbols` inputs: row 4 s + k."""
        out = np.empty((len(states), symbols, self.size))
        np.add((states @ self.mat[: self.size])[:, None, :], self.sym[None, :symbols], out=out)
        return np.tanh(out, out=out).reshape(-1, self.size)

    def set_bits(self, states: np.ndarray) -> np.ndarray:
        """Output bit of each hidden state."""
        return states @ self.out_w > -self.out_b

    def _dense(
        self, u0: np.ndarray, a_bits: np.ndarray, b_bits: np.ndarray, out: np.ndarray
    ) -> None:
        """Per-pair steps from hidden states u0, in cache-sized chunks, writing bits into out."""
        steps, n = a_bits.shape
        if steps == 0:
            return
        size = self.size
        work = np.empty((min(self.chunk, n), size + 3))
        pre = np.empty((min(self.chunk, n), size))
        logit = np.empty(min(self.chunk, n))
        for start in range(0, n, self.chunk):
            stop = min(start + self.chunk, n)
            u, z, o = work[: stop - start], pre[: stop - start], logit[: stop - start]
            u[:, :size] = u0[start:stop]
            u[:, size + 2] = 1.0
            for t in range(steps):
                u[:, size] = a_bits[t, start:stop]
                u[:, size + 1] = b_bits[t, start:stop]
                np.matmul(u, self.mat, out=z)
                np.tanh(z, out=u[:, :size])
                np.matmul(u[:, :size], self.out_w, out=o)
                np.greater(o, -self.out_b, out=out[t, start:stop])

    def add(
        self, a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, bits: int
    ) -> list[int]:
        """Predicted sums of pairs (a[i], b[i]) read over `bits` steps, as Python ints."""
        if len(a) == 1 and len(b) == 1:
            return [self.add_one(int(a[0]), int(b[0]), bits)]
        return decode(self.bits(encode(a, bits), encode(b, bits)))

    def add_array(self, a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
        """Predicted sums as uint64 for uint64 inputs; the no-Python-objects path (bits <= 64)."""
        if bits > 64:
            raise ValueError(f"add_array handles at most 64 bits, got {bits}")
        out = self.bits(encode(a, bits), encode(b, bits))
        weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
        return (out.T.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
