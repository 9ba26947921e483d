"""Counterexample search: families of pairs that uniform sampling misses, checked as served.

Every counterexample reported is confirmed with Predictor.add (the served computation) against
the exact sum, so a reported pair is always a real wrong answer.
"""

from __future__ import annotations

import time

import numpy as np

from training.gate import random_pairs, stress_pairs
from training.predictor import Predictor, decode

Pair = tuple[int, int, int]  # a, b, served width


def run_structured_words(rng: np.random.Generator, width: int, count: int) -> np.ndarray:
    """Symbols [width, count]: a short random periodic word with up to three long runs over it.

    Run lengths go up to a quarter of the width; the last symbol is 0 so that both operands are
    below 2^(width - 1), as the gate's pairs are (the sum then fits the width).
    """
    period = rng.integers(1, 9, size=count)
    motif = rng.integers(0, 4, size=(count, 8))
    words = motif[np.arange(count)[:, None], np.arange(width)[None, :] % period[:, None]]
    longest = max(1, width // 4)
    for _ in range(3):
        use = rng.random(count) < 0.75
        length = rng.integers(1, longest + 1, size=count)
        start = rng.integers(0, width, size=count)
        symbol = rng.integers(0, 4, size=count)
        t = np.arange(width)[None, :]
        inside = use[:, None] & (t >= start[:, None]) & (t < (start + length)[:, None])
        words = np.where(inside, symbol[:, None], words)
    words[:, -1] = 0
    return words.T


def run_structured_pairs(rng: np.random.Generator, width: int, count: int) -> list[Pair]:
    """Pairs (a, b, width) from run_structured_words: a = the symbols' low bits, b = high bits."""
    if width < 2:
        raise ValueError(f"width must be at least 2, got {width}")
    words = run_structured_words(rng, width, count)
    a, b = decode(words & 1), decode(words >> 1)
    return [(int(x), int(y), width) for x, y in zip(a, b, strict=True)]


def wrong_sums(predictor: Predictor, pairs: list[Pair]) -> list[dict]:
    """The pairs (all of one width) whose served sum is wrong, as counterexample dicts."""
    if not pairs:
        return []
    width = pairs[0][2]
    got = predictor.add([p[0] for p in pairs], [p[1] for p in pairs], width)
    mask = (1 << width) - 1
    return [{"a": a, "b": b, "bits": width, "got": value & mask}
            for (a, b, _), value in zip(pairs, got, strict=True) if value & mask != a + b]


def confirm(predictor: Predictor, found: dict) -> bool:
    """Re-run one pair on its own through Predictor.add: is its served sum really wrong?"""
    a, b, bits = found["a"], found["b"], found["bits"]
    return predictor.add([a], [b], bits)[0] & ((1 << bits) - 1) != a + b


def find_counterexample(predictor: Predictor, rng: np.random.Generator, deadline: float,
                        pool: int = 4096) -> dict | None:
    """Search until deadline: stress pairs, then rounds of run-structured and uniform pairs."""
    for width in (16, 32, 64, 128, 256):
        if found := wrong_sums(predictor, stress_pairs(width)):
            return found[0]
    while time.perf_counter() < deadline:
        width = int(rng.choice([int(rng.integers(9, 97)), int(rng.integers(97, 400))],
                               p=[0.85, 0.15]))
        count = max(64, pool * 48 // width)
        for pairs in (run_structured_pairs(rng, width, count),
                      random_pairs(rng, width, max(16, count // 8))):
            found = [f for f in wrong_sums(predictor, pairs) if confirm(predictor, f)]
            if found:
                return min(found, key=lambda f: (f["bits"], f["a"] + f["b"]))
    return None
