"""The training CLI against the original program, as whole processes: `python -m benchmarks.cli`.

Alternating runs, each a fresh process from start to exit: the original program as a script
(benchmarks/original_program.py, matplotlib's Agg backend), `python -m training.train` with
certification off (train, gate, save; not activated, as only a certified model may be), and the
default CLI (which also fine-tunes and certifies),
whose time is also given without the certifier's search (the seconds its record states).
Every process gets OPENBLAS_NUM_THREADS=1 unless the caller set it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.training import blas_setup

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = ROOT / "benchmarks" / "original_program.py"


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one process from start to exit; it must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def cli_run(extra: list[str], env: dict[str, str], seed: int) -> tuple[float, float]:
    """One CLI process into a fresh store: its wall seconds, and its certifier's search seconds."""
    with tempfile.TemporaryDirectory() as store:
        argv = [sys.executable, "-m", "training.train", "--model-dir", store, "--quiet",
                "--seed", str(seed), *extra]
        seconds = timed(argv, env)
        (version,) = [p for p in Path(store).iterdir() if (p / "model.json").exists()]
        record = json.loads((version / "model.json").read_text())
    rounds = record["certificate"].get("rounds", [])
    return seconds, sum(r.get("certify_seconds", 0.0) for r in rounds)


def main() -> None:
    """Alternate the three processes `--runs` times and print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", env["OPENBLAS_NUM_THREADS"])
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}, "
          f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("BLAS (threadpoolctl, this process):\n" + blas_setup())
    original, plain, full, search = [], [], [], []
    for run in range(1, args.runs + 1):
        original.append(timed([sys.executable, str(ORIGINAL)], env))
        plain.append(cli_run(["--no-certify", "--no-activate"], env, args.seed)[0])
        seconds, searched = cli_run([], env, args.seed)
        full.append(seconds)
        search.append(searched)
        print(f"  run {run}: original {original[-1]:.2f} s | CLI --no-certify --no-activate "
              f"{plain[-1]:.2f} s"
              f" | CLI default {full[-1]:.2f} s, of which certifier search {search[-1]:.2f} s")
    med = statistics.median
    without = [f - s for f, s in zip(full, search, strict=True)]
    print(f"\nmedians of {args.runs}: original {med(original):.2f} s, CLI --no-certify "
          f"{med(plain):.2f} s ({med(original) / med(plain):.1f}x faster), CLI default "
          f"{med(full):.2f} s ({med(original) / med(full):.1f}x), default without the "
          f"certifier's search {med(without):.2f} s ({med(original) / med(without):.1f}x; "
          "target 3x)")


if __name__ == "__main__":
    main()
