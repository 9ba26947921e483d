"""Training figures, side by side in one run: `python -m benchmarks.training`.

Prints the BLAS setup first, since OPENBLAS_CORETYPE and thread counts change numpy's speed.
Sections: the sigmoid recurrence against the tanh form, the gate's time, time to a gate-passing
model for seeds 0-19 against the original algorithm's time to 100% at 8 bits (with a table per
seed), inference rates, and (--work) the constants of config.work_seconds_estimate.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from training import rnn
from training.config import TrainConfig, make_config
from training.evaluate import random_pairs
from training.gate import random_pairs as wide_pairs
from training.gate import run_gate
from training.predictor import Predictor
from training.train import train


def blas_setup() -> str:
    """What numpy computes with, as threadpoolctl sees it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "  threadpoolctl not installed"
    lines = [
        f"  {i.get('internal_api')} {i.get('version')} arch={i.get('architecture')} "
        f"threads={i.get('num_threads')}"
        for i in threadpool_info()
    ]
    return "\n".join(lines) or "  (no BLAS found)"


def best_of(fn: Callable[[], object], repeat: int, number: int) -> float:
    """Best mean seconds per call over `repeat` rounds of `number` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def forward_tanh(params: rnn.Params, x: np.ndarray) -> rnn.Cache:
    """rnn.forward with sigmoid(z) = (1 + tanh(z / 2)) / 2 folded into the recurrence."""
    steps, n, _ = x.shape
    w_h, w_o = params["w_h"], params["w_o"]
    drive = 0.5 * (x @ params["w_i"].T) + 0.25 * w_h.sum(axis=1)
    recur = 0.25 * w_h.T
    u = np.empty((steps + 1, n, w_h.shape[0]))
    u[0] = -1.0
    for t in range(steps):
        np.matmul(u[t], recur, out=u[t + 1])
        u[t + 1] += drive[t]
        np.tanh(u[t + 1], out=u[t + 1])
    h = 0.5 * (1.0 + u)
    return {"x": x, "h": h, "p": 0.5 + 0.5 * np.tanh(0.5 * (h[1:] @ w_o[0]))}


def recurrence_section() -> None:
    """One training update (forward + backward, batch 32, 8 bits): textbook sigmoid vs tanh."""
    rng = np.random.default_rng(0)
    params = rnn.init_params(16, rng)
    x, y = rnn.batch(rng.integers(0, 128, 32), rng.integers(0, 128, 32), 8)
    sig = lambda: rnn.backward(params, rnn.forward(params, x), y)  # noqa: E731
    tanh = lambda: rnn.backward(params, forward_tanh(params, x), y)  # noqa: E731
    np.testing.assert_allclose(forward_tanh(params, x)["p"], rnn.forward(params, x)["p"], 0, 1e-12)
    a = [best_of(sig, 5, 2000), best_of(tanh, 5, 2000)]
    b = [best_of(sig, 5, 2000), best_of(tanh, 5, 2000)]  # interleaved, so drift hits both
    s, t = min(a[0], b[0]), min(a[1], b[1])
    print("\nOne update (forward + backward, 16 units, batch 32, 8 bits), best of 10 x 2000")
    print(f"  textbook sigmoid recurrence {s * 1e6:7.1f} us")
    print(f"  tanh form of the recurrence {t * 1e6:7.1f} us   (sigmoid / tanh = {s / t:.2f})")


def gate_section(params: rnn.Params) -> None:
    """Seconds for the whole gate at 4096 bits, one process."""
    predictor = Predictor(params)
    runs = [run_gate(predictor, 4096)["seconds"] for _ in range(5)]
    print(f"\nGate at max_bits 4096: median {statistics.median(runs):.3f} s, "
          f"worst {max(runs):.3f} s over 5 runs")


def worst_long_accuracy(params: rnn.Params) -> float:
    """Lowest accuracy over 1,000 random pairs at 64 bits and 100 at 256, 1024 and 4096."""
    predictor = Predictor(params)
    rng = np.random.default_rng(99)
    worst = 1.0
    for width, count in ((64, 1000), (256, 100), (1024, 100), (4096, 100)):
        pairs = wide_pairs(rng, width, count)
        got = predictor.add([p[0] for p in pairs], [p[1] for p in pairs], width)
        worst = min(worst, sum(g == a + b for g, (a, b, _) in zip(got, pairs, strict=True)) / count)
    return worst


def training_section(seeds: int) -> rnn.Params:
    """Per seed: the 8-bit-only trainer (before) and the default (after); then the original."""
    print(f"\nSeeds 0..{seeds - 1}: before = stop at 8-bit exactness (long_bits 0), after = default"
          " (train until the gate passes at 4096 bits)")
    print("  seed | before: s   steps worst-long | after: s  s-w/o-gate steps gate   worst-long")
    after_times, after_no_gate, passed, first = [], [], 0, None
    for seed in range(seeds):
        before = train(TrainConfig(seed=seed, long_bits=0))
        result = train(TrainConfig(seed=seed))
        first = first or result.params
        ok = result.gate is not None and result.gate["passed"]
        passed += ok
        after_times.append(result.seconds)
        after_no_gate.append(result.seconds - result.gate_seconds)
        print(f"  {seed:4d} | {before.seconds:8.3f} {before.steps:6d} "
              f"{worst_long_accuracy(before.params):9.3f} | {result.seconds:7.3f} "
              f"{after_no_gate[-1]:10.3f} {result.steps:5d} {'pass' if ok else 'FAIL'} "
              f"{worst_long_accuracy(result.params):9.3f}")
    original = []
    for seed in range(seeds):
        result = train(make_config({"preset": "original", "seed": seed}))
        original.append((result.seconds, result.steps, result.accuracy == 1.0))
    times = [r[0] for r in original]
    print(f"\n  default, time to a gate-passing model ({passed}/{seeds} pass): median "
          f"{statistics.median(after_times):.3f} s, worst {max(after_times):.3f} s")
    print(f"  default, the same without the time checking against the gate: median "
          f"{statistics.median(after_no_gate):.3f} s, worst {max(after_no_gate):.3f} s")
    print(f"  original algorithm, time to 100% at 8 bits ({sum(r[2] for r in original)}/{seeds} "
          f"reach it): median {statistics.median(times):.3f} s, worst {max(times):.3f} s")
    print(f"  speed-up, medians: {statistics.median(times) / statistics.median(after_times):.1f}x "
          f"with gate runs, {statistics.median(times) / statistics.median(after_no_gate):.1f}x "
          "without")
    return first


def inference_section(params: rnn.Params, count: int) -> None:
    """Pairs per second through Predictor.add, numpy arrays in."""
    predictor = Predictor(params)
    print("\nInference through Predictor.add, one process")
    for width, n in ((8, count), (64, count // 10), (4096, 100)):
        if width <= 64:
            a, b = random_pairs(np.random.default_rng(1), width, n)
        else:
            pairs = wide_pairs(np.random.default_rng(1), width, n)
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        seconds = best_of(lambda: predictor.add(a, b, width), 3, 1)  # noqa: B023
        print(f"  {n:9,d} pairs at {width:4d} bits: {n / seconds:12,.0f} pairs/s")


def work_section() -> None:
    """Seconds per update and bit for a few sizes: the constants of work_seconds_estimate."""
    print("\nWork: seconds per update and trained bit (fixed 200 updates, 32 bits)")
    rows = []
    for hidden, batch in ((1, 1), (16, 32), (64, 256), (128, 1024), (256, 1024)):
        config = TrainConfig(hidden_size=hidden, batch_size=batch, bits=32, long_bits=0,
                             max_steps=200, early_stop=False, check_every=10_000)
        started = time.perf_counter()
        train(config)
        per = (time.perf_counter() - started) / (200 * 32)
        units = batch * hidden * (hidden + 2)
        rows.append((units, per))
        print(f"  hidden {hidden:4d} batch {batch:5d}: {per * 1e6:9.2f} us  "
              f"units {units:,}")
    slope = (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])
    print(f"  fit: {rows[0][1]:.2e} s per update-bit + {slope:.2e} s per unit")


def main() -> None:
    """Run every section and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--work", action="store_true", help="also fit the work constants")
    args = parser.parse_args()
    print(f"numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print("BLAS (threadpoolctl):\n" + blas_setup())
    recurrence_section()
    params = training_section(args.seeds)
    gate_section(params)
    inference_section(params, args.pairs)
    if args.work:
        work_section()


if __name__ == "__main__":
    main()
