"""What the proxy costs: `python -m benchmarks.proxy` (needs a Docker engine and Compose).

Four setups are up at once and measured in interleaved rounds, so they share the same background
load, and every one is reached on 127.0.0.1: gunicorn started directly on the host (`make
serve`'s way, service/gunicorn.conf.py, 2 workers); one api container alone, through a port
published on 127.0.0.1 (Docker's networking, no proxy); and the compose stacks with HAProxy in
front of 1 replica and of 3 replicas through their published ports (Docker's networking +
HAProxy), as clients reach them. Each round sends single-pair
/v1/predict requests and 10,000-pair /v1/predict/batch requests over keep-alive connections (wrk
when installed, Python clients otherwise) for a fixed time. Figures are medians over rounds, and
ratios to direct gunicorn. Every answer is checked once before timing; the stacks are removed at
the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import load
from tests.servers import seed_models, start_gunicorn, stop_process

ROOT = Path(__file__).resolve().parent.parent
PAIR = {"a": 100, "b": 27}
BATCH_PAIRS = 10_000


@dataclass
class Setup:
    """One way of reaching the service."""

    name: str
    host: str
    port: int


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _compose() -> list[str]:
    with contextlib.suppress(OSError, RuntimeError):
        _run(["docker", "compose", "version"], timeout=30)
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("needs Docker Compose (`docker compose` or `docker-compose`)")


def _get(host: str, port: int, path: str, body: bytes | None = None,
         timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def _wait(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} not within {timeout:.0f} s")


@contextlib.contextmanager
def stack(replicas: int, compose: list[str], proxy_env: dict[str, str] | None = None,
          proxy_config: Path | None = None) -> Iterator[tuple[Setup, str]]:
    """A compose project with the proxy and `replicas` api replicas; (setup, project).

    proxy_env: variables for the proxy container only; proxy_config: a haproxy.cfg to mount in
    place of the image's (both through an override file)."""
    project = f"rnnaddbench{replicas}x{secrets.token_hex(3)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNADD_")}
    # Port 0: Docker picks free ports on 127.0.0.1 (HTTP read back with `compose port`), so
    # stacks run side by side
    env.update(COMPOSE_PROJECT_NAME=project, RNNADD_PORT="0", RNNADD_GRPC_PORT="0",
               RNNADD_IMAGE="rnnadd:bench",
               RNNADD_PROXY_IMAGE="rnnadd-proxy:bench", WEB_CONCURRENCY="2")
    base = [*compose, "-p", project]
    override = None
    if proxy_env or proxy_config:
        proxy: dict[str, list[str]] = {
            "environment": [f"{k}={v}" for k, v in (proxy_env or {}).items()]}
        if proxy_config:
            proxy["volumes"] = [f"{proxy_config}:/etc/haproxy/haproxy.cfg:ro"]
        handle, override = tempfile.mkstemp(prefix="rnnadd-bench-", suffix=".yml")
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps({"services": {"proxy": proxy}}))  # JSON is YAML
        base += ["-f", str(ROOT / "docker-compose.yml"), "-f", override]
    try:
        _run([*base, "up", "-d", "--scale", f"api={replicas}"], env)
        port = int(_run([*base, "port", "proxy", "8000"], env).strip().rsplit(":", 1)[1])

        def all_up() -> bool:
            proxy = _run([*base, "ps", "-q", "proxy"], env).split()
            if not proxy:
                return False
            text = _run(["docker", "exec", proxy[0], "python3", "-c",
                         "import urllib.request; print(urllib.request.urlopen("
                         "'http://127.0.0.1:8404/stats;csv').read().decode())"])
            rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
            return sum(r["pxname"] == "api" and r["svname"] != "BACKEND" and r["status"] == "UP"
                       for r in rows) == replicas

        _wait(all_up, f"{replicas} replicas UP behind the proxy")
        yield Setup(f"proxy, {replicas} replica{'s' if replicas > 1 else ''}", "127.0.0.1",
                    port), project
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run([*base, "down", "-v", "--timeout", "10"], env, timeout=180)
        if override:
            os.unlink(override)


@contextlib.contextmanager
def single_container() -> Iterator[Setup]:
    """One api container of the benchmark image, its port published on 127.0.0.1 only."""
    cid = _run(["docker", "run", "-d", "--rm", "-p", "127.0.0.1::8000", "--read-only",
                "--tmpfs", "/tmp", "--mount", "type=volume,dst=/var/lib/rnnadd/models",
                "-e", "WEB_CONCURRENCY=2", "rnnadd:bench"]).strip()
    try:
        port = int(_run(["docker", "port", cid, "8000/tcp"]).split()[0].rsplit(":", 1)[1])
        _wait(lambda: _get("127.0.0.1", port, "/readyz")[0] == 200, "one container ready")
        yield Setup("one container, direct", "127.0.0.1", port)
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run(["docker", "stop", "-t", "10", cid], timeout=60)


@contextlib.contextmanager
def host_gunicorn() -> Iterator[Setup]:
    """gunicorn on 127.0.0.1 from this checkout, configured as in the image (2 workers)."""
    with tempfile.TemporaryDirectory(prefix="rnnadd-bench-proxy-") as tmp:
        root = Path(tmp)
        seed_models(root / "models")
        (root / "prometheus").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RNNADD_")}
        env.update(RNNADD_MODEL_DIR=str(root / "models"), WEB_CONCURRENCY="2",
                   PROMETHEUS_MULTIPROC_DIR=str(root / "prometheus"))
        proc, url, _ = start_gunicorn(root, env=env)
        try:
            yield Setup("gunicorn, direct", "127.0.0.1", int(url.rsplit(":", 1)[1]))
        finally:
            stop_process(proc)


def batch_body() -> bytes:
    rng = random.Random(0)
    return json.dumps({"pairs": [[rng.randrange(128), rng.randrange(128)]
                                 for _ in range(BATCH_PAIRS)]}).encode()


def check(setup: Setup, batch: bytes) -> None:
    """Refuse to time wrong answers."""
    status, body = _get(setup.host, setup.port, "/v1/predict", json.dumps(PAIR).encode())
    if status != 200 or json.loads(body)["decimal"] != 127:
        raise RuntimeError(f"{setup.name}: /v1/predict answered {status} {body[:200]!r}")
    status, body = _get(setup.host, setup.port, "/v1/predict/batch", batch)
    pairs = json.loads(batch)["pairs"]
    results = json.loads(body)["results"] if status == 200 else []
    if [r["decimal"] for r in results] != [a + b for a, b in pairs]:
        raise RuntimeError(f"{setup.name}: /v1/predict/batch answered {status}")


def measure(setup: Setup, path: str, body: bytes, seconds: int, connections: int) -> load.Result:
    if load.wrk_available():
        return load.wrk(f"http://{setup.host}:{setup.port}{path}", body.decode(), close=False,
                        seconds=seconds, threads=2, connections=connections)
    return load.python_load(setup.host, setup.port, path, body, close=False, seconds=seconds,
                            processes=2, threads=max(1, connections // 2))


def build_images(compose: list[str]) -> None:
    """Build the api and proxy images the benchmark stacks run, as rnnadd:bench tags."""
    env = {**os.environ, "RNNADD_IMAGE": "rnnadd:bench", "RNNADD_PROXY_IMAGE": "rnnadd-proxy:bench"}
    print("building images ...", flush=True)
    _run([*compose, "-p", "rnnaddbenchbuild", "build"], env, timeout=1800)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per setup, pattern and round")
    parser.add_argument("--no-build", action="store_true", help="use the built rnnadd:bench "
                        "and rnnadd-proxy:bench images")
    args = parser.parse_args(argv)
    # A SIGTERM still removes the stacks (the with blocks' cleanup runs on SystemExit).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    compose = _compose()
    if not args.no_build:
        build_images(compose)
    batch = batch_body()
    patterns = [("single pair", "/v1/predict", json.dumps(PAIR).encode(), 16),
                ("10,000 pairs", "/v1/predict/batch", batch, 4)]
    with contextlib.ExitStack() as stacks:
        direct = stacks.enter_context(host_gunicorn())
        alone = stacks.enter_context(single_container())
        one, _ = stacks.enter_context(stack(1, compose))
        three, _ = stacks.enter_context(stack(3, compose))
        setups = [direct, alone, one, three]
        for setup in setups:
            check(setup, batch)
        figures: dict[tuple[str, str], list[load.Result]] = {}
        for round_no in range(args.rounds):
            for label, path, body, connections in patterns:
                for setup in setups:
                    result = measure(setup, path, body, args.seconds, connections)
                    figures.setdefault((label, setup.name), []).append(result)
                    print(f"round {round_no + 1} {label:12} {setup.name:24} "
                          f"{result.rate:8.1f} req/s  p99 {result.p99 * 1000:7.2f} ms  "
                          f"errors {result.errors}", flush=True)
    client = load.wrk_available() or "Python http.client"
    print(f"\n{platform.platform()}, {os.cpu_count()} CPUs, client {client}; medians of "
          f"{args.rounds} rounds x {args.seconds} s, keep-alive; 2 gunicorn workers x 4 threads "
          "per server\n")
    print(f"{'pattern':13} {'setup':24} {'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6}")
    for label, _, _, _ in patterns:
        base = statistics.median(r.rate for r in figures[(label, setups[0].name)])
        for setup in setups:
            results = figures[(label, setup.name)]
            rate = statistics.median(r.rate for r in results)
            print(f"{label:13} {setup.name:24} {rate:9.1f} {rate / base:6.2f} "
                  f"{statistics.median(r.p50 for r in results) * 1000:8.2f} "
                  f"{statistics.median(r.p99 for r in results) * 1000:8.2f} "
                  f"{sum(r.errors for r in results):6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
