"""Training and in-process inference, side by side in one run: `python -m benchmarks.training`.

Prints the BLAS setup first, since OPENBLAS_CORETYPE and thread counts change numpy's speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from benchmarks import torch_reference
from training import rnn
from training.evaluate import random_pairs
from training.train import TrainConfig, preset, train


def blas_setup() -> str:
    """What numpy computes with, as threadpoolctl sees it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    lines = [
        f"  {i.get('internal_api')} {i.get('version')} arch={i.get('architecture')} "
        f"threads={i.get('num_threads')}"
        for i in threadpool_info()
    ]
    return "\n".join(lines) or "  (no BLAS found)"


def has_torch() -> bool:
    """PyTorch is an optional extra of the benchmark (requirements-bench.txt)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def time_to_full(config: TrainConfig) -> tuple[float, int, bool]:
    """Seconds and updates until 100% exhaustive accuracy (or the step budget runs out)."""
    started = time.perf_counter()
    result = train(config)
    return time.perf_counter() - started, result.steps, result.accuracy == 1.0


def training_section(seeds: int, convergence_seeds: int) -> None:
    """Median time to 100% for the original algorithm and the default trainer, same seeds."""
    print(f"\nTime to 100% exact sums on all 16,384 pairs (seeds 0..{seeds - 1})")
    medians = {}
    for name, make in [
        ("original", lambda s: preset("original", seed=s)),
        ("default", lambda s: TrainConfig(seed=s)),
    ]:
        runs = [time_to_full(make(seed)) for seed in range(seeds)]
        times = [r[0] for r in runs]
        medians[name] = statistics.median(times)
        print(
            f"  {name:9s} median {medians[name] * 1e3:8.1f} ms   "
            f"updates {[r[1] for r in runs]}   reached 100%: {sum(r[2] for r in runs)}/{seeds}"
        )
    runs = [torch_reference.time_to_full(seed) for seed in range(seeds)] if has_torch() else []
    if runs:
        medians["pytorch"] = statistics.median(r[0] for r in runs)
        print(
            f"  {'pytorch':9s} median {medians['pytorch'] * 1e3:8.1f} ms   "
            f"updates {[r[1] for r in runs]}   reached 100%: {sum(r[2] for r in runs)}/{seeds}"
            "   (same network, Adam, batch 32, autograd)"
        )
    else:
        print("  pytorch   skipped (pip install -r requirements-bench.txt to compare)")
    print(
        f"  speed-up (median original / median default): "
        f"{medians['original'] / medians['default']:.1f}x"
    )
    if "pytorch" in medians:
        print(
            f"  speed-up (median pytorch / median default): "
            f"{medians['pytorch'] / medians['default']:.1f}x"
        )
    runs = [time_to_full(TrainConfig(seed=seed)) for seed in range(convergence_seeds)]
    print(
        f"  default trainer converged on {sum(r[2] for r in runs)}/{convergence_seeds} seeds; "
        f"max {max(r[0] for r in runs) * 1e3:.1f} ms, max updates {max(r[1] for r in runs)}"
    )


def per_pair_loop(params: rnn.Params, a: np.ndarray, b: np.ndarray, bits: int) -> list[int]:
    """The textbook inference: one pair at a time, one bit at a time, column vectors."""
    sums = []
    for x_a, x_b in zip(a.tolist(), b.tolist(), strict=True):
        h = np.zeros((params["w_h"].shape[0], 1))
        total = 0
        for t in range(bits):
            x = np.array([[(x_a >> t) & 1], [(x_b >> t) & 1]], dtype=np.float64)
            h = 1.0 / (1.0 + np.exp(-(params["w_h"] @ h + params["w_i"] @ x)))
            p = 1.0 / (1.0 + np.exp(-(params["w_o"] @ h)))
            total |= int(p[0, 0] > 0.5) << t
        sums.append(total)
    return sums


def rate(fn, pairs: int, repeat: int = 3) -> float:
    """Best-of-`repeat` pairs per second."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return pairs / best


def inference_section(count: int, loop_count: int) -> None:
    """Pairs per second at 8 bits, numpy arrays in and out, against a per-pair loop."""
    params = train(TrainConfig(seed=0)).params
    a, b = random_pairs(np.random.default_rng(1), 8, count)
    shared, dense = rnn.Predictor(params), rnn.Predictor(params, share_prefixes=False)
    reference = per_pair_loop(params, a[:loop_count], b[:loop_count], 8)
    expected = shared.add_array(a, b, 8)
    if expected[:loop_count].tolist() != reference or not np.array_equal(
        dense.add_array(a, b, 8), expected
    ):
        raise SystemExit("inference paths disagree")
    print(f"\nInference, {count:,} pairs at 8 bits, one process (results identical across rows)")
    rows = [
        (
            "per-pair loop (textbook)",
            rate(lambda: per_pair_loop(params, a[:loop_count], b[:loop_count], 8), loop_count, 1),
        ),
        (
            "vectorized forward pass",
            rate(lambda: rnn.predict_bits(params, rnn.encode(a, 8), rnn.encode(b, 8)), count),
        ),
        ("Predictor, dense", rate(lambda: dense.add_array(a, b, 8), count)),
        ("Predictor, shared prefixes", rate(lambda: shared.add_array(a, b, 8), count)),
    ]
    base = rows[0][1]
    for name, value in rows:
        print(f"  {name:28s} {value:14,.0f} pairs/s  ({value / base:8.1f}x the loop)")
    wide = random_pairs(np.random.default_rng(2), 64, 100_000)
    wide_rate = rate(lambda: shared.add_array(*wide, 64), 100_000)
    print(f"  {'Predictor at 64 bits':28s} {wide_rate:14,.0f} pairs/s")


def main() -> None:
    """Run every section and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--convergence-seeds", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--loop-pairs", type=int, default=5_000)
    args = parser.parse_args()
    print(
        f"numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    print("BLAS (threadpoolctl):\n" + blas_setup())
    training_section(args.seeds, args.convergence_seeds)
    inference_section(args.pairs, args.loop_pairs)


if __name__ == "__main__":
    main()
