"""The service against a bare Flask endpoint over HTTP, side by side: `python -m benchmarks.http`.

For each worker setup asked for, both run under service/gunicorn.conf.py with the same worker
class, workers and threads. Every server is up at once and each client pattern runs in short
rounds that visit them all in turn, so the comparisons (service to bare, one setup to another)
see the same background load. Every phase has a fixed duration; the run ends by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import random
import runpy
import signal
import statistics
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from benchmarks import load
from benchmarks.serving import CONF, HOST, ROOT, Pair, Server, Workers, request, servers

PAIR = {"a": 100, "b": 27}
BATCH_PAIRS = 10_000
RATIO_TARGET = 0.85
PAIRS_TARGET = 1_000_000

Runner = Callable[[Server], load.Result]


def batch_body() -> bytes:
    """10,000 random 7-bit pairs, so sums fit the model's 8 bits."""
    rng = random.Random(0)
    pairs = [[rng.randrange(128), rng.randrange(128)] for _ in range(BATCH_PAIRS)]
    return json.dumps({"pairs": pairs}).encode()


def check_answers(port: int, batch: bytes) -> str:
    """Refuse to time wrong answers: one single-pair and one batch request, checked."""
    status, body = request(port, "POST", "/v1/predict", json.dumps(PAIR).encode())
    single = json.loads(body)
    if status != 200 or single.get("decimal") != PAIR["a"] + PAIR["b"]:
        raise RuntimeError(f"/v1/predict answered {status}: {body[:300]!r}")
    status, body = request(port, "POST", "/v1/predict/batch", batch)
    results = json.loads(body).get("results", []) if status == 200 else []
    pairs = json.loads(batch)["pairs"]
    if len(results) != len(pairs) or any(
        r["decimal"] != a + b for r, (a, b) in zip(results, pairs, strict=True)
    ):
        raise RuntimeError(f"/v1/predict/batch answered {status}: {body[:300]!r}")
    return single["model_version"]


def timed(server: Server, run: Runner) -> load.Result:
    """A load phase, with the CPU time that the server's processes used meanwhile."""
    before = load.tree_ticks(server.proc.pid)
    result = run(server)
    used = (load.tree_ticks(server.proc.pid) - before) / load.TICKS
    return dataclasses.replace(result, server_cpu=used)


def rounds(targets: list[Server], run: Runner, count: int) -> list[dict[int, load.Result]]:
    """`count` rounds over every target, in reversed order every other round."""
    out = []
    for index in range(count):
        order = targets if index % 2 == 0 else targets[::-1]
        out.append({server.port: timed(server, run) for server in order})
    return out


def line(label: str, result: load.Result, share: float | None = None) -> str:
    """A row: req/s, latency percentiles, server CPU, errors, and the share of the bare rate."""
    ratio = ""
    if share is not None:
        verdict = "meets" if share >= RATIO_TARGET else "misses"
        ratio = f"  {share:6.1%} of bare ({verdict} {RATIO_TARGET:.0%})"
    cpu = result.server_cpu / result.requests * 1e6 if result.requests else 0.0
    return (f"  {label:44s} {result.rate:7,.0f} req/s  p50 {result.p50 * 1e3:5.2f} ms  "
            f"p99 {result.p99 * 1e3:6.2f} ms  server CPU {cpu:4.0f} us/req  "
            f"errors {result.errors}{ratio}")


def single_runner(tool: str, body: str, close: bool, seconds: float) -> Runner:
    """One load phase of single-pair requests against a given server."""

    def run(server: Server) -> load.Result:
        if tool == "wrk":
            return load.wrk(f"http://{HOST}:{server.port}/v1/predict", body, close=close,
                            seconds=int(seconds))
        return load.python_load(HOST, server.port, "/v1/predict", body.encode(), close=close,
                                seconds=seconds)

    return run


def single_pair(pairs: list[Pair], args: argparse.Namespace,
                use_wrk: bool) -> dict[str, dict[str, tuple[float, float]]]:
    """Each client pattern over every server; per setup, the median per-round share of bare.

    Other work on the machine comes and goes; alternating and taking the median of the
    per-round shares keeps a burst of it from deciding the comparison.
    """
    body = json.dumps(PAIR)
    targets = [server for pair in pairs for server in (pair.bare, pair.service)]
    tools = (["wrk"] if use_wrk else []) + ["python"]
    figures: dict[str, dict[str, tuple[float, float]]] = {str(p.workers): {} for p in pairs}
    for tool in tools:
        for mode, close in (("keep-alive", False), ("close", True)):
            if tool == "wrk":
                seconds = max(1, args.seconds // args.rounds)
                title = f"wrk -t2 -c16, {mode}, {args.rounds} rounds of {seconds} s per server"
            else:
                seconds = args.python_seconds / args.rounds
                title = (f"python 2 procs x 8 connections, {mode}, {args.rounds} rounds of "
                         f"{seconds:g} s per server")
            run = single_runner(tool, body, close, seconds)
            others = load.OtherLoad()
            got = rounds(targets, run, args.rounds)
            print(f" {title} (other processes used {others.share():.0%} of the CPUs)")
            for pair in pairs:
                base = load.merge([r[pair.bare.port] for r in got])
                ours = load.merge([r[pair.service.port] for r in got])
                share = statistics.median(
                    r[pair.service.port].rate / r[pair.bare.port].rate
                    if r[pair.bare.port].rate else 0.0 for r in got)
                print(line(f"{pair.workers}: bare Flask", base))
                print(line(f"{pair.workers}: service", ours, share), flush=True)
                figures[str(pair.workers)][f"{tool} {mode}"] = (ours.rate, share)
    return figures


def batches(pairs: list[Pair], body: bytes, args: argparse.Namespace) -> dict[str, float]:
    """Two keep-alive clients posting 10,000-pair batches (both workers busy), per setup."""
    seconds = args.batch_seconds / args.rounds
    run = functools.partial(load.python_load, HOST, path="/v1/predict/batch", body=body,
                            close=False, seconds=seconds, processes=2, threads=1)
    others = load.OtherLoad()
    got = rounds([p.service for p in pairs], lambda s: run(port=s.port), args.rounds)
    print(f" /v1/predict/batch, {BATCH_PAIRS:,} pairs per request, 2 keep-alive clients, "
          f"{args.rounds} rounds of {seconds:g} s (other processes used {others.share():.0%} "
          f"of the CPUs)")
    out = {}
    for pair in pairs:
        result = load.merge([r[pair.service.port] for r in got])
        rate = out[str(pair.workers)] = result.rate * BATCH_PAIRS
        verdict = "meets" if rate >= PAIRS_TARGET else "misses"
        print(f"  {pair.workers!s:44s} {rate:10,.0f} pairs/s ({verdict} {PAIRS_TARGET:,})  "
              f"per request p50 {result.p50 * 1e3:5.1f} ms  p99 {result.p99 * 1e3:6.1f} ms  "
              f"server CPU {result.server_cpu / max(1, result.requests) * 1e3:4.1f} ms/req  "
              f"errors {result.errors}", flush=True)
    return out


def print_setup(setup: dict[str, Any], wrk_version: str | None, extra: dict[str, str]) -> None:
    """Versions, CPUs and the BLAS and environment the figures depend on."""
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, numpy {version('numpy')}, "
          f"flask {version('flask')}, gunicorn {version('gunicorn')}, "
          f"wrk: {wrk_version or 'not installed (apt-get install wrk)'}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  "
          f"config {CONF.relative_to(ROOT)}")
    for info in setup["blas"]:
        print(f"BLAS in a worker (threadpoolctl): {info.get('internal_api')} "
              f"{info.get('version')} arch={info.get('architecture')} "
              f"threads={info.get('num_threads')}")
    env = "  ".join(f"{k}={v}" for k, v in sorted(setup["env"].items()))
    print(f"worker environment: {env}")
    if extra:
        print("extra environment: " + "  ".join(f"{k}={v}" for k, v in extra.items()))


def main() -> None:
    """Start every setup's servers, measure them in interleaved rounds, print a summary."""
    conf = runpy.run_path(str(CONF))  # what the config resolves to in this environment
    configured = conf["worker_class"] + (f":{conf['threads']}" if conf["threads"] > 1 else "")
    other = "gthread:4" if configured == "sync" else "sync"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--setups", nargs="+", default=[configured, other],
                        metavar="CLASS[:THREADS]",
                        help=f"worker setups to compare (default: the configured {configured}, "
                             f"and {other})")
    parser.add_argument("--seconds", type=int, default=10,
                        help="wrk time per server and client pattern, over all rounds")
    parser.add_argument("--python-seconds", type=float, default=5.0,
                        help="Python client time per server and client pattern")
    parser.add_argument("--batch-seconds", type=float, default=10.0, help="per setup")
    parser.add_argument("--rounds", type=int, default=5,
                        help="visits to every server per client pattern")
    parser.add_argument("--no-wrk", action="store_true", help="Python clients only")
    parser.add_argument("--batch-only", action="store_true", help="skip single-pair phases")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment for every server, e.g. MALLOC_ARENA_MAX=2")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    if "OPENBLAS_CORETYPE" in extra:
        parser.error("OPENBLAS_CORETYPE stays as the environment has it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped
    wrk_version = None if args.no_wrk else load.wrk_available()
    body = batch_body()
    with contextlib.ExitStack() as stack:
        pairs = [stack.enter_context(servers(Workers.parse(s, args.workers), extra))
                 for s in dict.fromkeys(args.setups)]
        print_setup(json.loads(request(pairs[0].bare.port, "GET", "/setup")[1]), wrk_version,
                    extra)
        models = {check_answers(pair.service.port, body) for pair in pairs}
        mine = Workers.parse(configured, conf["workers"])
        names = ", ".join(f"{p.workers}{' (configured)' if p.workers == mine else ''}"
                          for p in pairs)
        print(f"setups: {names}; model {', '.join(models)}, answers checked; "
              f"load average {os.getloadavg()[0]:.2f}\n", flush=True)
        figures = {} if args.batch_only else single_pair(pairs, args, wrk_version is not None)
        rates = batches(pairs, body, args)
    print("\nSummary: service req/s (median share of bare) by client pattern; batch pairs/s")
    for pair in pairs:
        name = str(pair.workers)
        cells = "  ".join(f"{k} {rate:,.0f} ({share:.0%})"
                          for k, (rate, share) in figures.get(name, {}).items())
        print(f"  {name:32s} {cells}  batch {rates[name]:,.0f}")


if __name__ == "__main__":
    main()
