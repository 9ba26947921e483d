"""Certifier figures: verdict, search and re-check seconds, certificate bytes and tree nodes.

python -m benchmarks.certify [--seeds N] [--time-limit S]         # default trainer, seeds 0..N-1
python -m benchmarks.certify --models DIR/*.npz [--time-limit S]  # stored weights or versions

Run with OPENBLAS_NUM_THREADS=1. --models takes weights .npz files or version folders (for
instance models fine-tuned by the trainer); the tally and the median search and re-check
seconds close the table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from training.certify import Certificate, certify, verify
from training.certify.__main__ import WEIGHTS, load_weights
from training.train import make_config, train


def subjects(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(name, weights) of every model to measure."""
    if args.models:
        for path in args.models:
            yield path.name, load_weights(path / WEIGHTS if path.is_dir() else path)
        return
    for seed in range(args.seeds):
        yield f"seed {seed}", train(make_config({"seed": seed}, bound_work=False)).params


def main() -> None:
    """One line per model, then a tally and medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--models", type=Path, nargs="*", default=[])
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    print([(i["internal_api"], i["num_threads"]) for i in threadpool_info()])
    tally: dict[str, int] = {}
    searches, checks = [], []
    for name, params in subjects(args):
        verdict = certify(params, time_limit=args.time_limit)
        tally[verdict.status] = tally.get(verdict.status, 0) + 1
        line = f"{name:>16s} {verdict.status:14s} search {verdict.seconds:6.2f} s"
        if verdict.certificate is not None:
            searches.append(verdict.seconds)
            data = verdict.certificate.to_bytes()
            started = time.perf_counter()
            summary = verify(params, Certificate.from_bytes(data))
            checks.append(time.perf_counter() - started)
            line += (f"  re-check {checks[-1]:.3f} s  {len(data):8d} bytes  "
                     f"{summary['nodes']:6d} nodes  {summary['classes']:5d} classes  "
                     f"min margin {summary['min_margin']:.2f}")
        print(line, verdict.reason[:160], flush=True)
    print(tally)
    if searches:
        print(f"certified: median search {statistics.median(searches):.2f} s, "
              f"median re-check {statistics.median(checks):.3f} s, "
              f"max re-check {max(checks):.3f} s")


if __name__ == "__main__":
    main()
