"""The run-structured family and the counterexample search."""

from __future__ import annotations

import itertools
import time

import numpy as np

from training.certify.falsify import find_counterexample, run_structured_pairs, wrong_sums
from training.predictor import Predictor


def test_run_structured_pairs_have_long_runs_and_fit_the_width() -> None:
    """Operands below 2^(w - 1); runs of one symbol up to a quarter of the width occur."""
    pairs = run_structured_pairs(np.random.default_rng(0), 200, 300)
    assert all(a < 1 << 199 and b < 1 << 199 and w == 200 for a, b, w in pairs)

    def longest_run(a: int, b: int) -> int:
        symbols = [((a >> t) & 1) + 2 * ((b >> t) & 1) for t in range(199)]
        best = run = 1
        for x, y in itertools.pairwise(symbols):
            run = run + 1 if x == y else 1
            best = max(best, run)
        return best

    runs = [longest_run(a, b) for a, b, _ in pairs]
    assert max(runs) >= 30 and min(runs) < 30


def test_seed_0_counterexample_found_fast(seed0_before_certification: dict) -> None:
    """Seed 0 of the trainer before certification: a wrong sum, confirmed as served, fast."""
    served = Predictor(seed0_before_certification)
    started = time.perf_counter()
    found = find_counterexample(served, np.random.default_rng(0), started + 20)
    assert found is not None and time.perf_counter() - started < 10
    assert wrong_sums(served, [(found["a"], found["b"], found["bits"])])
