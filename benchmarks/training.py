"""Training figures, side by side in one run: `python -m benchmarks.training`.

Prints the BLAS setup first, since OPENBLAS_CORETYPE and thread counts change numpy's speed.
Sections: the sigmoid recurrence against the tanh form; per seed 0-19, time to a certified model
(and its certifier's search, and re-checking its certificate) against the original algorithm's
time to 100% at 8 bits; the models of the trainer before certification (gated by the checks it
had, without run-structured pairs) against the certified ones on run-structured pairs, and which
of them today's gate catches; the gate's time; inference rates; and (--work) the constants of
config.work_seconds_estimate, with the estimate against measured runs.
Run it with OPENBLAS_NUM_THREADS=1: the figures are for one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from training import gate as gate_module
from training import rnn
from training.certify import Certificate, verify
from training.certify.falsify import run_structured_pairs
from training.config import TrainConfig, make_config, work_seconds_estimate
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
    """Seconds for the whole gate at 4096 bits, one process; the run-structured share of it."""
    predictor = Predictor(params)
    runs = [run_gate(predictor, 4096)["seconds"] for _ in range(5)]
    saved = gate_module.RUN_STRUCTURED
    gate_module.RUN_STRUCTURED = {}
    try:
        without = [run_gate(predictor, 4096)["seconds"] for _ in range(5)]
    finally:
        gate_module.RUN_STRUCTURED = saved
    print(f"\nGate at max_bits 4096: median {statistics.median(runs):.3f} s, "
          f"worst {max(runs):.3f} s over 5 runs; without the run-structured checks "
          f"{statistics.median(without):.3f} s")


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


def run_structured_wrong(params: rnn.Params, width: int, count: int) -> int:
    """Wrong sums among `count` run-structured pairs at `width` (not the gate's own draws)."""
    pairs = run_structured_pairs(np.random.default_rng(2024 + width), width, count)
    got = Predictor(params).add([p[0] for p in pairs], [p[1] for p in pairs], width)
    return sum(g != a + b for g, (a, b, _) in zip(got, pairs, strict=True))


def before_certification(seed: int) -> rnn.Params:
    """The trainer as it was: no fine-tune, no certifier, gated without run-structured pairs."""
    saved = gate_module.RUN_STRUCTURED
    gate_module.RUN_STRUCTURED = {}
    try:
        return train(TrainConfig(seed=seed, certify=False)).params
    finally:
        gate_module.RUN_STRUCTURED = saved


def reverify_seconds(result_params: rnn.Params, data: bytes) -> float:
    """Best of 3: parse a stored certificate and re-check it against the weights."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        verify(result_params, Certificate.from_bytes(data))
        best = min(best, time.perf_counter() - started)
    return best


def training_section(seeds: int, pairs: int) -> rnn.Params:
    """Per seed: the default trainer to a certified model beside the original algorithm."""
    print(f"\nSeeds 0..{seeds - 1}: the default trainer until the certifier proves the model "
          "(every width), beside the original algorithm until 100% at 8 bits")
    print("  seed | steps rounds | certified  total s  search s (all rounds)  re-check s | "
          "original s steps")
    rows, first = [], None
    for seed in range(seeds):
        result = train(TrainConfig(seed=seed))
        original = train(make_config({"preset": "original", "seed": seed}))
        recheck = float("nan")
        if result.certified:
            first = first or result.params
            recheck = reverify_seconds(result.params, result.verdict.certificate.to_bytes())
        rows.append((result, original, recheck))
        last = result.verdict.seconds if result.certified else float("nan")
        print(f"  {seed:4d} | {result.steps:5d} {len(result.finetune):6d} | "
              f"{'yes' if result.certified else 'NO ':9s} {result.seconds:8.3f} "
              f"{last:8.3f} ({result.certify_seconds:7.3f})   {recheck:11.3f} | "
              f"{original.seconds:10.3f} "
              f"{original.steps:5d}{'' if original.accuracy == 1.0 else ' (not 100%)'}")
    med = statistics.median
    done = [r for r in rows if r[0].certified]
    total = [r[0].seconds for r in rows]
    search = [r[0].verdict.seconds for r in done]
    every = [r[0].certify_seconds for r in rows]
    recheck = [r[2] for r in done]
    original = [r[1].seconds for r in rows]
    print(f"\n  certified: {len(done)}/{seeds}")
    if done:
        print(f"  certifying search (the round that certified): median {med(search):.3f} s, "
              f"worst {max(search):.3f} s (target: median under 2 s)")
        print(f"  certifier, every round of a run: median {med(every):.3f} s, worst "
              f"{max(every):.3f} s")
        print(f"  re-checking a stored certificate: median {med(recheck):.3f} s, worst "
              f"{max(recheck):.3f} s (target: under 0.5 s)")
    print(f"  time to a certified model: median {med(total):.3f} s, worst {max(total):.3f} s")
    print(f"  original algorithm, time to 100% at 8 bits ({sum(r[1].accuracy == 1.0 for r in rows)}"
          f"/{seeds} reach it): median {med(original):.3f} s, worst {max(original):.3f} s")
    print(f"  median time to a certified model / original's median: "
          f"{med(total) / med(original):.2f} (target: at most 4)")
    run_structured_section(seeds, rows, pairs)
    return first or rows[0][0].params


def run_structured_section(seeds: int, rows: list, count: int) -> None:
    """Wrong sums on run-structured pairs, before certification and after; today's gate on them."""
    print(f"\nRun-structured pairs ({count:,} at 64 bits and at 512 bits per model, not the "
          "gate's draws): before = the trainer without fine-tune and certifier, gated by the "
          "checks it had; after = the default (certified)")
    print("  seed | before: wrong 64  wrong 512  today's gate | after: wrong 64  wrong 512")
    caught = []
    for seed in range(seeds):
        before = before_certification(seed)
        after = rows[seed][0].params
        gate = run_gate(Predictor(before), 4096)
        verdict = "passes" if gate["passed"] else f"fails {gate['failed']}"
        if not gate["passed"]:
            caught.append(seed)
        print(f"  {seed:4d} | {run_structured_wrong(before, 64, count):15d} "
              f"{run_structured_wrong(before, 512, count):10d}  {verdict:28s} | "
              f"{run_structured_wrong(after, 64, count):14d} "
              f"{run_structured_wrong(after, 512, count):10d}")
    print(f"  today's gate fails the before-models of seeds {caught or 'none'}")


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
    print("\nWork: inference seconds per pair and step (the checks' and the gate's unit)")
    for hidden in (1, 16, 64):
        predictor = Predictor(rnn.init_params(hidden, np.random.default_rng(0)))
        pairs = wide_pairs(np.random.default_rng(1), 1024, 200)
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        per = best_of(lambda: predictor.add(a, b, 1024), 3, 1) / (200 * 1024)  # noqa: B023
        print(f"  hidden {hidden:4d}: {per * 1e9:9.1f} ns  units {hidden * (hidden + 2):,}")
    print("\nWork: the estimate against runs (no early stop, so every check counts)")
    for body in ({"max_steps": 300, "check_every": 1, "early_stop": False},
                 {"max_steps": 2000, "early_stop": False}, {}):
        config = make_config(body, bound_work=False)
        started = time.perf_counter()
        train(config)
        took = time.perf_counter() - started
        print(f"  {body or 'defaults'}: estimate {work_seconds_estimate(config):7.1f} s, "
              f"took {took:6.1f} s")


def main() -> None:
    """Run every section and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--structured", type=int, default=2_000,
                        help="run-structured pairs per width and model")
    parser.add_argument("--work", action="store_true", help="also fit the work constants")
    args = parser.parse_args()
    print(f"numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print("BLAS (threadpoolctl):\n" + blas_setup())
    recurrence_section()
    params = training_section(args.seeds, args.structured)
    gate_section(params)
    inference_section(params, args.pairs)
    if args.work:
        work_section()


if __name__ == "__main__":
    main()
