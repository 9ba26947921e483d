"""Exact-sum accuracy: exhaustive at 8 bits, sampled at longer widths, through Predictor.add."""

from __future__ import annotations

import numpy as np

from training.predictor import Predictor
from training.rnn import Params

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
    """Fraction of pairs whose whole predicted sum is exact (bits <= 64)."""
    got = np.array(predictor.add(a, b, bits), dtype=np.uint64)
    return float(np.mean(got == a + b))


def exhaustive_accuracy(model: Params | Predictor, bits: int = EXHAUSTIVE_BITS) -> float:
    """Accuracy over all pairs a, b < 2**(bits-1) (16,384 at 8 bits)."""
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    return accuracy(predictor, *all_pairs(bits), bits)


def evaluate(params: Params, seed: int = 0, count: int = 1000) -> dict[str, float]:
    """Exhaustive 8-bit accuracy plus accuracy on `count` random pairs per long width."""
    predictor = Predictor(params)
    rng = np.random.default_rng(seed)
    metrics = {"accuracy_8bit": exhaustive_accuracy(predictor)}
    for bits in LONG_WIDTHS:
        metrics[f"accuracy_{bits}bit"] = accuracy(predictor, *random_pairs(rng, bits, count), bits)
    return metrics
