"""Hand-built adder networks for the certifier's tests: exact ones and one wrong beyond N bits.

Units 0-2 fire when a + b + carry reaches 1, 2, 3 (unit 1 is the carry); the sum bit is their
parity, unit0 - unit1 + unit2, which the output reads linearly. Extra units are idle
(saturated off). slow_adder adds a bistable unit just past a saddle-node: under a run of
symbol 1 (a = 1, b = 0) it creeps past the ghost of its lost fixed point for N steps, then
jumps on and flips the output; any other symbol resets it.
"""

from __future__ import annotations

import numpy as np

from training.predictor import Predictor

GAIN, OUT = 20.0, 20.0


def adder(extra: int = 0) -> dict[str, np.ndarray]:
    """An exact adder with 3 + extra hidden units (sigmoid weights, with biases)."""
    size = 3 + extra
    w_i, w_h, b_h = np.zeros((size, 2)), np.zeros((size, size)), np.full(size, -GAIN)
    for j in range(3):
        w_i[j], w_h[j, 1], b_h[j] = GAIN, GAIN, -GAIN * (j + 0.5)
    w_o = np.zeros((1, size))
    w_o[0, :3] = [OUT, -OUT, OUT]
    return {"w_i": w_i, "w_h": w_h, "w_o": w_o, "b_h": b_h, "b_o": np.array([-OUT / 2])}


def _with_slow_unit(beta: float) -> dict[str, np.ndarray]:
    """adder(1) whose unit 3 follows u' = tanh(2 u + beta) under symbol 1 (u = 2 h - 1)."""
    params = adder(1)
    params["w_h"][3, 3] = 8.0  # A = w_h / 4 = 2
    params["b_h"][3] = -40.0
    params["w_i"][3] = [2.0 * beta + 36.0, -40.0]  # c[1] = (4 + w_i0 - 40) / 2 = beta
    params["w_o"][0, 3] = -30.0
    return params


def run_length_to_flip(params: dict[str, np.ndarray], most: int) -> int:
    """Steps of symbol 1 (a = 2^n - 1, b = 0) until the served sum first goes wrong, or most."""
    a = (1 << most) - 1
    got = Predictor(params).add([a], [0], most)[0]
    wrong = got ^ a
    return (wrong & -wrong).bit_length() - 1 if wrong else most


def slow_adder(low: int = 6000, high: int = 9000) -> tuple[dict[str, np.ndarray], int]:
    """A model exact up to N bits (low < N < high) and wrong beyond; returns it and N.

    The critical drive is beta_c = 2 / sqrt(2) - atanh(1 / sqrt(2)); the passage time grows as
    (beta - beta_c)^(-1/2), so bisection on beta finds an N in range.
    """
    critical = np.sqrt(2.0) - np.arctanh(1.0 / np.sqrt(2.0))
    lo, hi = 1e-14, 1e-3  # offsets: lo gives a long passage, hi a short one
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        params = _with_slow_unit(critical + mid)
        flip = run_length_to_flip(params, high)
        if low < flip < high:
            return params, flip
        if flip >= high:
            lo = mid
        else:
            hi = mid
    raise RuntimeError("no offset gives a flip in range")
