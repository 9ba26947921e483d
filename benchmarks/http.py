"""The service against a bare Flask endpoint over HTTP, side by side: `python -m benchmarks.http`.

Both run under service/gunicorn.conf.py with the same worker class, workers and threads, on
free 127.0.0.1 ports, for each worker setup asked for; every load phase has a fixed duration,
and both gunicorn masters are ended by PID when the run ends, however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import http.client
import json
import os
import platform
import random
import runpy
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import load

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "service" / "gunicorn.conf.py"
SERVICE_APP = "service.app:create_app()"
BARE_APP = "benchmarks.bare_app:create_app()"
HOST = "127.0.0.1"
PAIR = {"a": 100, "b": 27}
BATCH_PAIRS = 10_000
RATIO_TARGET = 0.85
PAIRS_TARGET = 1_000_000


@dataclass(frozen=True)
class Workers:
    """A gunicorn worker setup, given as CLASS or CLASS:THREADS (e.g. sync, gthread:4)."""

    kind: str
    count: int
    threads: int

    @classmethod
    def parse(cls, text: str, count: int) -> Workers:
        """sync -> 1 thread; gthread:4 -> 4 threads per worker."""
        kind, _, threads = text.partition(":")
        return cls(kind, count, int(threads or 1))

    def __str__(self) -> str:
        threads = f" x {self.threads} threads" if self.kind != "sync" else ""
        return f"{self.kind}, {self.count} workers{threads}"


@dataclass
class Server:
    """A gunicorn master we started, and where its output goes."""

    name: str
    port: int
    proc: subprocess.Popen
    log: Path


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def copy_models(dest: Path) -> None:
    """A private copy of the bundled active model, so the run never touches models/."""
    current = (ROOT / "models" / "CURRENT").read_text().strip()
    shutil.copytree(ROOT / "models" / current, dest / current)
    shutil.copy2(ROOT / "models" / "CURRENT", dest / "CURRENT")


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start(name: str, app: str, workers: Workers, tmp: Path, env: dict[str, str],
          ready_path: str) -> Server:
    """gunicorn -c service/gunicorn.conf.py with explicit workers, class and threads."""
    port = free_port()
    log = tmp / f"{name}.log"
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--bind", f"{HOST}:{port}",
           "--workers", str(workers.count), "--worker-class", workers.kind,
           "--threads", str(workers.threads), app]
    full_env = {**os.environ, "HOME": str(tmp), "WEB_CONCURRENCY": str(workers.count), **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(port, "GET", ready_path)[0] == 200:
                return server
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"{name} not ready after 60 s:\n{log.read_text()[-3000:]}")


def stop(server: Server) -> None:
    """SIGTERM to the master by PID (graceful), SIGKILL if it lingers."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


@contextlib.contextmanager
def servers(workers: Workers, extra: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """The bare endpoint and the service, both up for the duration of a with block."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnadd-bench-")))
        copy_models(tmp / "models")
        (tmp / "prometheus").mkdir()
        bare = start("bare", BARE_APP, workers, tmp, extra, "/setup")
        stack.callback(stop, bare)
        service_env = {**extra, "RNNADD_MODEL_DIR": str(tmp / "models"),
                       "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus")}
        service = start("service", SERVICE_APP, workers, tmp, service_env, "/readyz")
        stack.callback(stop, service)
        yield bare, service


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


def worker_setup(port: int) -> dict[str, Any]:
    """BLAS and environment as a worker sees them (asked of the bare app's worker)."""
    return json.loads(request(port, "GET", "/setup")[1])


def timed(server: Server, run: Callable[[], load.Result]) -> load.Result:
    """A load phase, with the CPU time that the server's processes used meanwhile."""
    before = load.tree_ticks(server.proc.pid)
    result = run()
    used = (load.tree_ticks(server.proc.pid) - before) / load.TICKS
    return dataclasses.replace(result, server_cpu=used)


def line(label: str, result: load.Result, share: float | None = None) -> str:
    """A row: req/s, latency percentiles, server CPU, errors, and the share of the bare rate."""
    ratio = ""
    if share is not None:
        verdict = "meets" if share >= RATIO_TARGET else "misses"
        ratio = f"  {share:6.1%} of bare ({verdict} {RATIO_TARGET:.0%})"
    cpu = result.server_cpu / result.requests * 1e6 if result.requests else 0.0
    return (f"  {label:20s} {result.rate:7,.0f} req/s  p50 {result.p50 * 1e3:5.2f} ms  "
            f"p99 {result.p99 * 1e3:6.2f} ms  server CPU {cpu:4.0f} us/req  "
            f"errors {result.errors}{ratio}")


def single_pair(bare: Server, service: Server, args: argparse.Namespace,
                use_wrk: bool) -> dict[str, tuple[float, float]]:
    """Each client pattern in short rounds alternating the two servers; the median share.

    Other work on the machine comes and goes; alternating and taking the median of the
    per-round shares keeps a burst of it from deciding the comparison.
    """
    body = json.dumps(PAIR)
    phases = [("python", f"python 2 procs x 8 conns {args.python_seconds:g}s")]
    if use_wrk:
        phases.insert(0, ("wrk", f"wrk -t2 -c16 {args.seconds}s"))
    figures: dict[str, tuple[float, float]] = {}
    for tool, title in phases:
        for mode, close in (("keep-alive", False), ("close", True)):
            rounds: list[dict[str, load.Result]] = []
            others = load.OtherLoad()
            for index in range(args.rounds):
                got = {}
                for server in (bare, service) if index % 2 == 0 else (service, bare):
                    if tool == "wrk":
                        run = functools.partial(
                            load.wrk, f"http://{HOST}:{server.port}/v1/predict", body,
                            close=close, seconds=max(1, args.seconds // args.rounds))
                    else:
                        run = functools.partial(
                            load.python_load, HOST, server.port, "/v1/predict", body.encode(),
                            close=close, seconds=args.python_seconds / args.rounds)
                    got[server.name] = timed(server, run)
                rounds.append(got)
            base = load.merge([r["bare"] for r in rounds])
            ours = load.merge([r["service"] for r in rounds])
            share = statistics.median(
                r["service"].rate / r["bare"].rate if r["bare"].rate else 0.0 for r in rounds)
            print(f" {title} {mode}, {args.rounds} rounds (other processes used "
                  f"{others.share():.0%} of the CPUs)")
            print(line("bare Flask endpoint", base))
            print(line("service /v1/predict", ours, share), flush=True)
            figures[f"{tool} {mode}"] = (ours.rate, share)
    return figures


def batch(service: Server, body: bytes, seconds: float) -> float:
    """Two keep-alive clients posting 10,000-pair batches, so both workers stay busy."""
    others = load.OtherLoad()
    result = timed(service, functools.partial(
        load.python_load, HOST, service.port, "/v1/predict/batch", body, close=False,
        seconds=seconds, processes=2, threads=1))
    pairs = result.rate * BATCH_PAIRS
    verdict = "meets" if pairs >= PAIRS_TARGET else "misses"
    print(f" /v1/predict/batch, {BATCH_PAIRS:,} pairs per request, 2 clients, {seconds:g}s "
          f"(other processes used {others.share():.0%} of the CPUs)")
    print(f"  {result.requests} requests, {pairs:,.0f} pairs/s ({verdict} {PAIRS_TARGET:,}); "
          f"per request p50 {result.p50 * 1e3:.1f} ms, p99 {result.p99 * 1e3:.1f} ms, "
          f"server CPU {result.server_cpu / max(1, result.requests) * 1e3:.1f} ms/request, "
          f"errors {result.errors}", flush=True)
    return pairs


def print_setup(setup: dict[str, Any], wrk_version: str | None) -> None:
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
    print(f"worker environment: {env}", flush=True)


def main() -> None:
    """Measure each worker setup in turn and print a summary for choosing one."""
    conf = runpy.run_path(str(CONF))  # what the config resolves to in this environment
    configured = conf["worker_class"] + (f":{conf['threads']}" if conf["threads"] > 1 else "")
    other = "gthread:4" if configured == "sync" else "sync"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--setups", nargs="+", default=[configured, other],
                        metavar="CLASS[:THREADS]",
                        help=f"worker setups to compare (default: the configured {configured}, "
                             f"then {other})")
    parser.add_argument("--seconds", type=int, default=10,
                        help="wrk time per endpoint and client pattern, over all rounds")
    parser.add_argument("--python-seconds", type=float, default=5.0,
                        help="Python client time per endpoint and client pattern")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternations of bare and service per client pattern")
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    parser.add_argument("--no-wrk", action="store_true", help="Python clients only")
    parser.add_argument("--batch-only", action="store_true", help="skip single-pair phases")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment for both servers, e.g. MALLOC_ARENA_MAX=2")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    if "OPENBLAS_CORETYPE" in extra:
        parser.error("OPENBLAS_CORETYPE stays as the environment has it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped
    setups = [Workers.parse(s, args.workers) for s in args.setups]
    wrk_version = None if args.no_wrk else load.wrk_available()
    body = batch_body()
    summary = []
    for index, workers in enumerate(setups):
        with servers(workers, extra) as (bare, service):
            if index == 0:
                print_setup(worker_setup(bare.port), wrk_version)
                if extra:
                    print("extra environment: " + "  ".join(f"{k}={v}" for k, v in extra.items()))
            model = check_answers(service.port, body)
            mark = " (configured)" if workers == Workers.parse(configured, conf["workers"]) else ""
            print(f"\n== gunicorn {workers}{mark} (model {model}; answers checked; "
                  f"load average {os.getloadavg()[0]:.2f})", flush=True)
            figures = {} if args.batch_only else single_pair(
                bare, service, args, wrk_version is not None)
            pairs = batch(service, body, args.batch_seconds)
        summary.append((workers, figures, pairs))
    print("\nSummary: service req/s (median share of bare) by client pattern; batch pairs/s")
    for workers, figures, pairs in summary:
        cells = "  ".join(f"{k} {rate:,.0f} ({share:.0%})" for k, (rate, share) in figures.items())
        print(f"  {workers!s:32s} {cells}  batch {pairs:,.0f}")


if __name__ == "__main__":
    main()
