"""The training core against independent references: finite differences and a per-pair loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from training import rnn


def random_params(hidden: int, seed: int, biases: bool) -> rnn.Params:
    """Random weights (and non-zero biases), so no gradient vanishes by symmetry."""
    rng = np.random.default_rng(seed)
    params = rnn.init_params(hidden, rng, biases)
    if biases:
        params["b_h"] = rng.uniform(-1, 1, hidden)
        params["b_o"] = rng.uniform(-1, 1, 1)
    return params


def random_batch(n: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs below 2**(width-1) as training tensors."""
    rng = np.random.default_rng(seed)
    high = 1 << (width - 1)
    return rnn.batch(rng.integers(0, high, n), rng.integers(0, high, n), width)


def per_pair_reference(params: rnn.Params, a: int, b: int, width: int) -> list[float]:
    """The textbook forward pass for one pair: column vectors, plain logistic, a loop per bit."""

    def logistic(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    size = params["w_h"].shape[0]
    b_h = params.get("b_h", np.zeros(size)).reshape(size, 1)
    b_o = params.get("b_o", np.zeros(1)).reshape(1, 1)
    h = np.zeros((size, 1))
    outputs = []
    for t in range(width):
        x = np.array([[(a >> t) & 1], [(b >> t) & 1]], dtype=np.float64)
        h = logistic(params["w_h"] @ h + params["w_i"] @ x + b_h)
        outputs.append(float(logistic(params["w_o"] @ h + b_o)[0, 0]))
    return outputs


def saturation_reference(params: rnn.Params, x: np.ndarray) -> float:
    """mean h (1 - h) over every step, pair and unit, from a per-step loop of its own."""
    size = params["w_h"].shape[0]
    b_h = params.get("b_h", np.zeros(size))
    h = np.zeros((x.shape[1], size))
    total = 0.0
    for t in range(x.shape[0]):
        h = 1.0 / (1.0 + np.exp(-(h @ params["w_h"].T + x[t] @ params["w_i"].T + b_h)))
        total += float(np.sum(h * (1.0 - h)))
    return total / (x.shape[0] * x.shape[1] * size)


def numeric_grads(params: rnn.Params, objective: Callable[[], float]) -> rnn.Params:
    """Central differences of objective() in every parameter."""
    eps = 1e-5
    out: rnn.Params = {}
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + eps
            up = objective()
            value[index] = saved - eps
            down = objective()
            value[index] = saved
            numeric[index] = (up - down) / (2 * eps)
        out[name] = numeric
    return out


def assert_close_grads(numeric: rnn.Params, grads: rnn.Params) -> None:
    """Every gradient within 1e-6 of the numeric one, relative to the larger of the two."""
    assert set(grads) == set(numeric)
    for name, expected in numeric.items():
        scale = max(np.abs(expected).max(), np.abs(grads[name]).max(), 1e-12)
        rel = np.abs(expected - grads[name]).max() / scale
        assert rel < 1e-6, f"{name}: relative error {rel:.2e}"


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize(("hidden", "n", "width"), [(1, 1, 2), (3, 5, 8), (16, 7, 8), (8, 4, 17)])
def test_bptt_matches_central_differences(hidden: int, n: int, width: int, biases: bool) -> None:
    params = random_params(hidden, seed=hidden * 31 + n, biases=biases)
    x, y = random_batch(n, width, seed=width)
    _, grads = rnn.loss_and_grads(params, x, y)
    numeric = numeric_grads(params, lambda: rnn.loss(rnn.forward(params, x)["p"], y))
    assert_close_grads(numeric, grads)


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize(("hidden", "n", "width"), [(1, 1, 2), (3, 5, 8), (8, 4, 17)])
def test_saturation_term_gradient_matches_central_differences(
    hidden: int, n: int, width: int, biases: bool
) -> None:
    """The penalty's value against its own loop, its gradient against finite differences."""
    params = random_params(hidden, seed=hidden * 17 + n, biases=biases)
    x, y = random_batch(n, width, seed=width + 1)
    weight = 0.7  # large, so a missing or mis-scaled penalty gradient shows above the tolerance
    value, grads = rnn.loss_and_grads(params, x, y, saturation=weight)
    plain = rnn.loss(rnn.forward(params, x)["p"], y)
    assert value == pytest.approx(plain + weight * saturation_reference(params, x), rel=1e-12)

    def objective() -> float:
        return rnn.loss(rnn.forward(params, x)["p"], y) + weight * saturation_reference(params, x)

    assert_close_grads(numeric_grads(params, objective), grads)
    # and the penalty's gradient alone, so that the loss's part cannot hide an error in it
    _, plain_grads = rnn.loss_and_grads(params, x, y)
    alone = {k: (grads[k] - plain_grads[k]) / weight for k in grads}
    assert_close_grads(numeric_grads(params, lambda: saturation_reference(params, x)), alone)


def test_saturation_needs_the_hidden_states() -> None:
    with pytest.raises(ValueError, match="hidden states"):
        rnn.loss(np.zeros((2, 1)), np.zeros((2, 1)), saturation=0.1)


@pytest.mark.parametrize("biases", [False, True])
def test_vectorized_forward_equals_per_pair_loop(biases: bool) -> None:
    params = random_params(16, seed=3, biases=biases)
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 1 << 11, 40), rng.integers(0, 1 << 11, 40)
    width = 12
    x, _ = rnn.batch(a, b, width)
    p = rnn.forward(params, x)["p"]
    for i in range(len(a)):
        expected = per_pair_reference(params, int(a[i]), int(b[i]), width)
        np.testing.assert_allclose(p[:, i], expected, rtol=1e-12, atol=1e-14)


def test_init_matches_the_original_ranges() -> None:
    params = rnn.init_params(16, np.random.default_rng(0))
    assert set(params) == {"w_i", "w_h", "w_o"}
    assert params["w_i"].shape == (16, 2) and params["w_h"].shape == (16, 16)
    assert params["w_o"].shape == (1, 16)
    for value in params.values():
        assert value.dtype == np.float64 and value.min() >= -1 and value.max() < 1
    with_biases = rnn.init_params(3, np.random.default_rng(0), biases=True)
    assert with_biases["b_h"].tolist() == [0, 0, 0] and with_biases["b_o"].tolist() == [0]


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizers_reduce_the_loss(name: str) -> None:
    params = random_params(8, seed=2, biases=True)
    x, y = random_batch(64, 8, seed=9)
    optimizer = rnn.optimizer(name, 0.05 if name == "adam" else 1.0)
    first, _ = rnn.loss_and_grads(params, x, y)
    for _ in range(50):
        loss, grads = rnn.loss_and_grads(params, x, y)
        optimizer.step(params, grads)
    assert loss < first and math.isfinite(loss)


def test_forward_handles_saturated_units_without_warnings() -> None:
    params = random_params(4, seed=0, biases=True)
    params["b_h"][:] = -1e4  # exp(-z) overflows: the unit is simply off
    x, _ = random_batch(3, 8, seed=0)
    with np.errstate(all="raise"):
        cache = rnn.forward(params, x)
    assert np.all(cache["h"][1:] == 0.0) and np.all(np.isfinite(cache["p"]))


def test_batch_bits_are_least_significant_first() -> None:
    x, y = rnn.batch(np.array([6]), np.array([3]), 4)
    assert x[:, 0, 0].tolist() == [0, 1, 1, 0] and x[:, 0, 1].tolist() == [1, 1, 0, 0]
    assert y[:, 0].tolist() == [1, 0, 0, 1]
