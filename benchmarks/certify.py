"""Certifier figures over seeds of the default trainer: verdict, search and re-check seconds.

python -m benchmarks.certify [--seeds N] [--time-limit S]; run with OPENBLAS_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import time

from threadpoolctl import threadpool_info

from training.certify import Certificate, certify, verify
from training.train import make_config, train


def main() -> None:
    """One line per seed, then a tally."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    print([(i["internal_api"], i["num_threads"]) for i in threadpool_info()])
    tally: dict[str, int] = {}
    for seed in range(args.seeds):
        params = train(make_config({"seed": seed}, bound_work=False)).params
        verdict = certify(params, time_limit=args.time_limit)
        tally[verdict.status] = tally.get(verdict.status, 0) + 1
        line = f"seed {seed:2d} {verdict.status:14s} search {verdict.seconds:6.2f} s"
        if verdict.certificate is not None:
            data = verdict.certificate.to_bytes()
            started = time.perf_counter()
            verify(params, Certificate.from_bytes(data))
            line += f"  re-check {time.perf_counter() - started:.3f} s  {len(data)} bytes"
        print(line, verdict.reason[:120], flush=True)
    print(tally)


if __name__ == "__main__":
    main()
