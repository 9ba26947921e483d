"""Is the WSGI fast path worth keeping? `python -m benchmarks.fastpath`.

Two services under the same gunicorn config, one with RNNADD_FAST_PATH=1 and one with 0, are
up at once; single-pair POST /v1/predict load visits them in alternating rounds, and the median
per-round ratio is reported. The fast path stays only while it gives at least 15% more requests
per second than Flask alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks import load
from benchmarks.serving import HOST, request
from tests.servers import seed_models, start_gunicorn, stop_process

TARGET = 1.15
PAIR = json.dumps({"a": 100, "b": 27})


def main() -> None:
    """Start both services, alternate load rounds over them, print each round and the median."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and service")
    parser.add_argument("--no-wrk", action="store_true", help="Python clients only")
    args = parser.parse_args()
    use_wrk = not args.no_wrk and load.wrk_available() is not None
    with tempfile.TemporaryDirectory(prefix="rnnadd-fastpath-") as tmp, \
            contextlib.ExitStack() as stack:
        root = Path(tmp)
        seed_models(root / "models")
        ports = {}
        for flag in ("1", "0"):
            (root / flag).mkdir()
            proc, url, _ = start_gunicorn(root / flag, env={
                "RNNADD_MODEL_DIR": str(root / "models"), "RNNADD_FAST_PATH": flag,
                "RNNADD_ACCESS_LOG": "1", "PROMETHEUS_MULTIPROC_DIR": str(root / flag)})
            stack.callback(stop_process, proc)
            ports[flag] = int(url.rsplit(":", 1)[1])
            status, body = request(ports[flag], "POST", "/v1/predict", PAIR.encode())
            if status != 200 or json.loads(body)["decimal"] != 127:
                raise RuntimeError(f"fast path {flag} answered {status}: {body[:200]!r}")
        describe_machine()
        tools = (["wrk"] if use_wrk else []) + ["python"]
        for tool in tools:
            ratios = []
            for index in range(args.rounds):
                order = ("1", "0") if index % 2 == 0 else ("0", "1")
                rates = {flag: run(tool, ports[flag], args.seconds).rate for flag in order}
                ratios.append(rates["1"] / rates["0"])
                print(f"  {tool:6s} round {index + 1}: fast path {rates['1']:7,.0f} req/s, "
                      f"Flask alone {rates['0']:7,.0f} req/s, ratio {ratios[-1]:.2f}", flush=True)
            median = statistics.median(ratios)
            verdict = "keep it" if median >= TARGET else "remove it"
            print(f"{tool}, 16 keep-alive connections: fast path / Flask alone = {median:.2f} "
                  f"(median of {args.rounds} rounds; target {TARGET:.2f}: {verdict})\n")


def describe_machine() -> None:
    """CPUs, OPENBLAS_CORETYPE and what threadpoolctl shows, beside the figures."""
    from threadpoolctl import threadpool_info

    coretype = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    print(f"{os.cpu_count()} CPUs, OPENBLAS_CORETYPE={coretype}, "
          f"wrk: {load.wrk_available() or 'not installed'}")
    for info in threadpool_info():
        print(f"threadpoolctl: {info.get('internal_api')} {info.get('version')} "
              f"arch={info.get('architecture')} threads={info.get('num_threads')}")


def run(tool: str, port: int, seconds: float) -> load.Result:
    """One round of single-pair keep-alive load."""
    if tool == "wrk":
        return load.wrk(f"http://{HOST}:{port}/v1/predict", PAIR, close=False,
                        seconds=max(1, int(seconds)))
    return load.python_load(HOST, port, "/v1/predict", PAIR.encode(), close=False,
                            seconds=seconds)


if __name__ == "__main__":
    main()
