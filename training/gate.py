"""The promotion gate: a version goes live only if it adds exactly at every width it will serve.

The model is causal: output bit t depends on input bits 0..t only. So the answer at a served
width w is the low w bits of a longer run over the same (zero-padded) inputs, and pairs of many
widths are checked in one run; and all pairs a, b < 128 at 8 bits also cover every width below 8.

The gate is the fast falsifier: sampled checks that find most wrong models in a fraction of a
second. Passing it proves nothing about the widths and inputs it did not try; the certifier
(training/certify) does, and runs after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from training.predictor import Predictor

EXHAUSTIVE_BITS = 8
RANDOM_64_PAIRS = 10_000
LONG_WIDTHS = (256, 1024, 4096)
LONG_PAIRS = 100
DENSE_WIDTHS = range(9, 81)
# A short periodic word with long runs written over it: inputs whose states drift slowly, where
# uniform pairs and carry chains miss wrong sums. Width -> pairs (widths above max_bits skipped).
RUN_STRUCTURED = {64: 8_000, 512: 200, 4096: 20}

Pair = tuple[int, int, int]  # a, b, served width


def stress_widths(max_bits: int) -> list[int]:
    """Every width 9..80, and 2^k - 1, 2^k, 2^k + 1 and max_bits itself, up to max_bits."""
    widths = set(DENSE_WIDTHS)
    k = 3
    while (1 << k) - 1 <= max_bits:
        widths.update({(1 << k) - 1, 1 << k, (1 << k) + 1})
        k += 1
    widths.add(max_bits)
    return sorted(w for w in widths if EXHAUSTIVE_BITS < w <= max_bits)


def stress_pairs(width: int) -> list[Pair]:
    """Pairs whose carries run the whole operand, never, or every other bit (inputs < 2^(w-1))."""
    n = width - 1  # operand bits, so that the sum fits in the served width
    ones = (1 << n) - 1  # 11...1
    odd = ones // 3  # 0101...01 (bit 0 set)
    even = ones ^ odd  # 1010...10
    top = 1 << (n - 1)
    pairs = [
        (ones, 1), (1, ones),  # one carry through every bit, out into the last
        (ones, ones),  # a carry generated and propagated at every bit
        (ones, 0), (0, ones), (0, 0),  # one operand zero
        (odd, even), (even, odd),  # all ones, no carry at all
        (odd, odd), (even, even),  # carries at every other bit
        (ones, odd), (even, ones),
        (top, top),  # a single carry into the last bit
        (top - 1, 1),  # a carry chain ending in the top operand bit
        (ones - 1, 1), (ones, top),
    ]
    return [(a, b, width) for a, b in pairs]


def random_pairs(rng: np.random.Generator, width: int, count: int) -> list[Pair]:
    """Uniform operands below 2^(width - 1), as Python ints of any size, drawn in one call."""
    if width <= 64:
        drawn = rng.integers(0, 1 << (width - 1), size=2 * count, dtype=np.uint64).tolist()
    else:
        nbytes = (width + 7) // 8
        mask = (1 << (width - 1)) - 1
        raw = rng.bytes(2 * count * nbytes)
        drawn = [int.from_bytes(raw[i : i + nbytes], "little") & mask
                 for i in range(0, len(raw), nbytes)]
    return [(drawn[2 * k], drawn[2 * k + 1], width) for k in range(count)]


def exhaustive_pairs() -> list[Pair]:
    """All 16,384 pairs a, b < 128 at 8 bits."""
    half = 1 << (EXHAUSTIVE_BITS - 1)
    return [(a, b, EXHAUSTIVE_BITS) for a in range(half) for b in range(half)]


def _run_bits(width: int, max_bits: int) -> int:
    """The run length a width is checked in: nearby widths share one run (see the docstring)."""
    if width <= DENSE_WIDTHS.stop - 1:
        return min(max_bits, DENSE_WIDTHS.stop - 1)
    return min(max_bits, (1 << (width - 2).bit_length()) + 1)


def check(predictor: Predictor, name: str, pairs: list[Pair], max_bits: int) -> dict:
    """Count wrong sums among pairs and keep the first one as an example."""
    shared = name == "carry_chains"  # few pairs at many widths: run nearby widths together
    groups: dict[int, list[int]] = {}
    for i, (_, _, width) in enumerate(pairs):
        groups.setdefault(_run_bits(width, max_bits) if shared else width, []).append(i)
    errors, example = 0, None
    for run, indices in sorted(groups.items()):
        got = predictor.add([pairs[i][0] for i in indices], [pairs[i][1] for i in indices], run)
        for i, value in zip(indices, got, strict=True):
            a, b, width = pairs[i]
            served = value & ((1 << width) - 1)
            if served != a + b:
                errors += 1
                if example is None or i < example[0]:
                    example = (i, {"a": str(a), "b": str(b), "bits": width, "got": str(served)})
    return {
        "name": name,
        "pairs": len(pairs),
        "errors": errors,
        "passed": errors == 0,
        "example": None if example is None else example[1],
    }


def checks(max_bits: int, seed: int = 0) -> Iterable[tuple[str, list[Pair]]]:
    """The gate's checks in order, cheapest and most telling first."""
    rng = np.random.default_rng(seed)
    yield "exhaustive_8bit", exhaustive_pairs()
    yield "carry_chains", [p for w in stress_widths(max_bits) for p in stress_pairs(w)]
    wide = min(64, max_bits)
    yield f"random_{wide}bit", random_pairs(rng, wide, RANDOM_64_PAIRS)
    for width in LONG_WIDTHS:
        if width <= max_bits:
            yield f"random_{width}bit", random_pairs(rng, width, LONG_PAIRS)
    # the certifier's falsifier builds on this module's pairs, so it is imported here, not above
    from training.certify.falsify import run_structured_pairs

    runs = np.random.default_rng([seed, 1])  # its own stream: the checks above stay as they were
    for width, count in RUN_STRUCTURED.items():
        if width <= max_bits:
            yield f"run_structured_{width}bit", run_structured_pairs(runs, width, count)


def work_pair_bits(max_bits: int) -> int:
    """Pairs x steps the predictor runs for one gate at max_bits: what its time scales with."""
    half = 1 << (EXHAUSTIVE_BITS - 1)
    total = half * half * EXHAUSTIVE_BITS
    total += sum(len(stress_pairs(w)) * _run_bits(w, max_bits) for w in stress_widths(max_bits))
    total += RANDOM_64_PAIRS * min(64, max_bits)
    total += sum(LONG_PAIRS * w for w in LONG_WIDTHS if w <= max_bits)
    return total + sum(n * w for w, n in RUN_STRUCTURED.items() if w <= max_bits)


def run_gate(predictor: Predictor, max_bits: int, seed: int = 0) -> dict:
    """Every check at widths up to max_bits; passed only if every sum is exact."""
    if not EXHAUSTIVE_BITS <= max_bits <= 1 << 16:
        raise ValueError(f"max_bits must be from {EXHAUSTIVE_BITS} to {1 << 16}, got {max_bits}")
    started = time.perf_counter()
    results = [check(predictor, name, pairs, max_bits) for name, pairs in checks(max_bits, seed)]
    failed = next((r["name"] for r in results if not r["passed"]), None)
    return {
        "passed": failed is None,
        "max_bits": max_bits,
        "seconds": round(time.perf_counter() - started, 4),
        "failed": failed,
        "checks": results,
    }


def quick_check(predictor: Predictor, max_bits: int, seed: int = 0) -> bool:
    """Cheap subsets of the gate, short widths first: a full run is worth it only if they pass."""
    rng = np.random.default_rng(seed)
    short = [p for w in (16, 64, 256) if w <= max_bits for p in stress_pairs(w)]
    short += random_pairs(rng, min(64, max_bits), 500)
    long = stress_pairs(max_bits) + random_pairs(rng, max_bits, 10)
    return all(check(predictor, "quick", pairs, max_bits)["passed"] for pairs in (short, long))
