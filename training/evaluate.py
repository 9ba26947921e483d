"""Exact-sum accuracy: exhaustive at 8 bits, sampled at the long widths the service serves."""

from __future__ import annotations

import numpy as np

from training.rnn import Params, Predictor

EXHAUSTIVE_BITS = 8
LONG_WIDTHS = (16, 32, 64)


def all_pairs(bits: int = EXHAUSTIVE_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Every pair a, b < 2**(bits-1), so that each sum fits in `bits` bits."""
    half = 1 << (bits - 1)
    grid = np.arange(half, dtype=np.uint64)
    return np.repeat(grid, half), np.tile(grid, half)


def random_pairs(rng: np.random.Generator, bits: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform pairs below 2**(bits-1) (bits <= 64), drawn as uint64."""
    high = np.uint64(1) << np.uint64(bits - 1)
    return (
        rng.integers(0, high, count, dtype=np.uint64, endpoint=False),
        rng.integers(0, high, count, dtype=np.uint64, endpoint=False),
    )


def accuracy(predictor: Predictor, a: np.ndarray, b: np.ndarray, bits: int) -> float:
    """Fraction of pairs whose whole predicted sum is exact."""
    predicted = predictor.add_array(a, b, bits)
    return float(np.mean(predicted == a + b))


def exhaustive_accuracy(params: Params | Predictor, bits: int = EXHAUSTIVE_BITS) -> float:
    """Accuracy over all pairs a, b < 2**(bits-1) (16,384 at 8 bits): the promotion criterion.

    Walks the prefix tree once: every state is a distinct run of low bits, carrying the
    true carry so far and whether every bit predicted so far was right.
    """
    predictor = params if isinstance(params, Predictor) else Predictor(params, table_levels=0)
    states = predictor.initial()
    carry = np.zeros(1, dtype=np.int8)
    exact = np.ones(1, dtype=bool)
    column = np.array([0, 1, 1, 2], dtype=np.int8)  # bit of a + bit of b for symbol k
    for t in range(bits):
        symbols = 4 if t < bits - 1 else 1  # the top bit of both operands is 0
        states = predictor.children(states, symbols)
        total = (carry[:, None] + column[None, :symbols]).reshape(-1)
        exact = np.repeat(exact, symbols) & (predictor.set_bits(states) == (total & 1).astype(bool))
        carry = total >> 1
    return float(exact.mean())


def evaluate(params: Params, seed: int = 0, count: int = 1000) -> dict[str, float]:
    """Exhaustive 8-bit accuracy plus accuracy on `count` random pairs per long width."""
    predictor = Predictor(params)
    rng = np.random.default_rng(seed)
    metrics = {"accuracy_8bit": exhaustive_accuracy(predictor)}
    for bits in LONG_WIDTHS:
        metrics[f"accuracy_{bits}bit"] = accuracy(predictor, *random_pairs(rng, bits, count), bits)
    return metrics
