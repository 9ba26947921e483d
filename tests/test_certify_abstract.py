"""The enclosures against exact arithmetic: tanh by mpmath, linear parts by fractions."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest

from tests.adders import adder
from training.certify import abstract
from training.certify.abstract import (
    cell_zonotopes,
    contained,
    fold,
    inverse_frame,
    step,
    tanh_relaxation,
)
from training.predictor import SYMBOL_BITS, Predictor

mpmath.mp.dps = 40


def exact_tanh(z: float) -> mpmath.mpf:
    """tanh of a float, to 40 digits."""
    return mpmath.tanh(mpmath.mpf(z))


def test_numpy_tanh_is_within_the_assumed_error() -> None:
    """The one assumption on libm: numpy's tanh within TANH_ERROR (measured: a few ulp)."""
    z = np.random.default_rng(0).uniform(-20, 20, 20_000)
    values = np.tanh(z)
    worst = max(abs(mpmath.mpf(float(values[i])) - exact_tanh(float(z[i]))) for i in range(len(z)))
    assert worst < 1e-15 < abstract.TANH_ERROR


@pytest.mark.parametrize("seed", range(4))
def test_tanh_relaxation_holds_at_dense_points(seed: int) -> None:
    """s z + m - q <= tanh(z) <= s z + m + q at the ends and 40 points of random intervals."""
    rng = np.random.default_rng(seed)
    center = rng.uniform(-4, 4, 60)
    width = 10.0 ** rng.uniform(-6, 0.5, 60)
    low, high = center - width, center + width
    point = np.clip(center + rng.uniform(-1, 1, 60) * width, low, high)
    slope, mid, radius = tanh_relaxation(low, high, point)
    for i in range(60):
        for z in [low[i], high[i], *np.linspace(low[i], high[i], 40)]:
            value = exact_tanh(float(z)) - mpmath.mpf(float(slope[i])) * mpmath.mpf(float(z))
            assert abs(value - mpmath.mpf(float(mid[i]))) <= mpmath.mpf(float(radius[i]))


def test_tanh_relaxation_is_tight() -> None:
    """Not sound by being useless: a narrow interval gets a radius of order its width squared."""
    slope, _, radius = tanh_relaxation(np.array([0.49]), np.array([0.51]), np.array([0.5]))
    assert radius[0] < 1e-4 and slope[0] > 0.7


def exact_c(params: dict, symbol: int) -> list[Fraction]:
    """c[k] = (w_h 1 / 2 + w_i x(k) + b_h) / 2 in exact rationals."""
    w_h, w_i, b_h = params["w_h"], params["w_i"], params["b_h"]
    x = SYMBOL_BITS[symbol]
    return [(sum(Fraction(v) for v in w_h[i]) / 2 + sum(Fraction(w_i[i, j]) * Fraction(x[j])
             for j in range(2)) + Fraction(b_h[i])) / 2 for i in range(len(b_h))]


def random_params(rng: np.random.Generator, size: int) -> dict:
    """Trained-like weights of moderate size, with biases."""
    return {"w_i": rng.uniform(-6, 6, (size, 2)), "w_h": rng.uniform(-6, 6, (size, size)),
            "w_o": rng.uniform(-6, 6, (1, size)), "b_h": rng.uniform(-2, 2, size),
            "b_o": rng.uniform(-2, 2, 1)}


@pytest.mark.parametrize("seed", range(3))
def test_step_holds_exact_images_plus_the_allowance(seed: int) -> None:
    """For points of the input (same eps), tanh(A v + c) +- allowance has |d'| <= e' exactly.

    Points are moved by 0.999 x the allowance on every unit: without the allowance in the
    step, this fails.
    """
    rng = np.random.default_rng(seed)
    size = 3
    params = random_params(rng, size)
    model = fold(params)
    n = 20
    x = rng.uniform(-0.9, 0.9, (n, size))
    g = rng.uniform(-1, 1, (n, size, size)) * 10.0 ** rng.uniform(-4, -1, (n, 1, 1))
    e = rng.uniform(0, 1e-3, (n, size))
    symbols = rng.integers(0, 4, n)
    nx, ng, ne = step(model, (x, g, e), symbols)
    a = [[Fraction(v) for v in row] for row in model.a]
    for k in range(n):
        c = exact_c(params, int(symbols[k]))
        for _ in range(12):
            eps = rng.choice([-1.0, 1.0], size) * rng.uniform(0.5, 1, size)
            d = rng.choice([-1.0, 1.0], size) * e[k]
            v = [Fraction(x[k, i]) + sum(Fraction(g[k, i, j]) * Fraction(eps[j])
                                         for j in range(size)) + Fraction(d[i])
                 for i in range(size)]
            for i in range(size):
                z = sum(a[i][j] * v[j] for j in range(size)) + c[i]
                image = mpmath.tanh(mpmath.mpf(z.numerator) / z.denominator)
                moved = image + rng.choice([-1, 1]) * 0.999 * model.allowance
                rep = mpmath.mpf(float(nx[k, i])) + sum(
                    mpmath.mpf(float(ng[k, i, j])) * mpmath.mpf(float(eps[j]))
                    for j in range(size))
                assert abs(moved - rep) <= mpmath.mpf(float(ne[k, i]))


def test_served_error_is_below_the_allowance_and_fold_matches_predictor() -> None:
    """The served pass's own per-step bound fits in the allowance; same constants as served."""
    params = random_params(np.random.default_rng(5), 16)
    model = fold(params)
    served = Predictor(params)
    assert model.served_error < model.allowance
    assert np.array_equal(model.a_t, served._recur)
    assert np.array_equal(model.c, served._drive)
    assert np.array_equal(model.w, served._out_w) and model.b == served._out_b


def exact_frame_values(q: np.ndarray, m: np.ndarray, v: list[Fraction]) -> list[Fraction]:
    """Q (v - m) exactly."""
    return [sum(Fraction(q[i, j]) * (v[j] - Fraction(m[j])) for j in range(len(v)))
            for i in range(len(v))]


@pytest.mark.parametrize("seed", range(3))
def test_containment_is_never_wrong(seed: int) -> None:
    """Where contained() says yes, every vertex and random point is inside, exactly."""
    rng = np.random.default_rng(seed)
    size, n = 3, 300
    q = np.linalg.qr(rng.normal(size=(n, size, size)))[0]
    m = rng.uniform(-0.5, 0.5, (n, size))
    x = m + rng.normal(scale=0.05, size=(n, size))
    g = rng.normal(scale=0.02, size=(n, size, size))
    e = rng.uniform(0, 0.01, (n, size))
    radius = np.abs(np.einsum("nij,nj->ni", q, x - m)) + rng.uniform(0.0, 0.1, (n, size))
    inside = contained(q, m, radius, (x, g, e))
    assert 0 < inside.sum() < n  # both answers occur
    for k in np.flatnonzero(inside):
        for _ in range(20):
            eps = rng.choice([-1.0, 1.0], size)
            d = rng.choice([-1.0, 1.0], size) * e[k]
            v = [Fraction(x[k, i]) + sum(Fraction(g[k, i, j]) * Fraction(eps[j])
                                         for j in range(size)) + Fraction(d[i])
                 for i in range(size)]
            y = exact_frame_values(q[k], m[k], v)
            assert all(abs(y[i]) <= Fraction(radius[k, i]) for i in range(size))


def test_cell_zonotopes_hold_their_boxes() -> None:
    """Every point m + Q^-1 y with y in [low, high] lies in the cell's zonotope (exact Q^-1)."""
    rng = np.random.default_rng(3)
    size, n = 3, 30
    q = rng.normal(size=(n, size, size)) + 3 * np.eye(size)
    m = rng.uniform(-0.5, 0.5, (n, size))
    low = -rng.uniform(0, 0.3, (n, size))
    high = low + rng.uniform(0, 0.3, (n, size))
    r_inv, rho = inverse_frame(q)
    x, g, e = cell_zonotopes(m, r_inv, rho, low, high)
    mid, half = (low + high) / 2, (high - low) / 2
    for k in range(n):
        exact_inv = [[Fraction(v) for v in row] for row in np.eye(size)]
        qq = [[Fraction(v) for v in row] for row in q[k]]
        # Gauss-Jordan on [Q | I] in rationals
        for col in range(size):
            pivot = next(r for r in range(col, size) if qq[r][col] != 0)
            qq[col], qq[pivot] = qq[pivot], qq[col]
            exact_inv[col], exact_inv[pivot] = exact_inv[pivot], exact_inv[col]
            scale = qq[col][col]
            qq[col] = [v / scale for v in qq[col]]
            exact_inv[col] = [v / scale for v in exact_inv[col]]
            for r in range(size):
                if r != col and qq[r][col] != 0:
                    f = qq[r][col]
                    qq[r] = [a - f * b for a, b in zip(qq[r], qq[col], strict=True)]
                    exact_inv[r] = [a - f * b for a, b in
                                    zip(exact_inv[r], exact_inv[col], strict=True)]
        for _ in range(10):
            eps = rng.choice([-1.0, 1.0], size)
            y = [Fraction(low[k, j]) if eps[j] < 0 else Fraction(high[k, j]) for j in range(size)]
            v = [Fraction(m[k, i]) + sum(exact_inv[i][j] * y[j] for j in range(size))
                 for i in range(size)]
            # the zonotope's eps for this y: (y - mid) / half, within [-1, 1]
            z = [(y[j] - Fraction(mid[k, j])) / Fraction(half[k, j]) if half[k, j] else 0
                 for j in range(size)]
            for i in range(size):
                rep = Fraction(x[k, i]) + sum(Fraction(g[k, i, j]) * z[j] for j in range(size))
                assert abs(v[i] - rep) <= Fraction(e[k, i])


def test_served_states_stay_in_the_abstract_chain() -> None:
    """Predictor's own states along a word lie in the enclosures stepped from the start."""
    params = adder(13)
    model = fold(params)
    rng = np.random.default_rng(0)
    word = rng.integers(0, 4, 200)
    served = Predictor(params)._run(np.full((1, model.size), -1.0), word[:, None].copy())[:, 0]
    zono = abstract.start_zonotope(model.size, model.size)
    for t, s in enumerate(word):
        zono = step(model, zono, np.array([s]))
        x, g, e = zono
        spread = np.abs(g[0]).sum(axis=1) + e[0]
        assert np.all(np.abs(served[t] - x[0]) <= spread)
