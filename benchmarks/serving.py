"""gunicorn servers for benchmarks.http: the service and a bare Flask endpoint, side by side.

Each pair runs under service/gunicorn.conf.py with the same explicit worker class, workers
and threads, started and stopped by the same harness as the integration tests (tests.servers).
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import CONF, ROOT, SERVICE_APP, seed_models, start_gunicorn, stop_process

__all__ = ["CONF", "ROOT"]
BARE_APP = "benchmarks.bare_app:create_app()"
HOST = "127.0.0.1"


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


@dataclass
class Pair:
    """The bare endpoint and the service under one worker setup."""

    workers: Workers
    bare: Server
    service: Server


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
    """gunicorn with explicit workers, class and threads, through the tests' harness."""
    args = ["--workers", str(workers.count), "--worker-class", workers.kind,
            "--threads", str(workers.threads)]
    proc, url, log = start_gunicorn(tmp, app, args=args, ready_path=ready_path,
                                    env={"WEB_CONCURRENCY": str(workers.count), **env},
                                    name=name.split()[0])
    return Server(name, int(url.rsplit(":", 1)[1]), proc, log)


def stop(server: Server) -> None:
    """End a server by its master's PID."""
    stop_process(server.proc)


@contextlib.contextmanager
def servers(workers: Workers, extra: dict[str, str]) -> Iterator[Pair]:
    """The bare endpoint and the service, both up for the duration of a with block."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnadd-bench-")))
        seed_models(tmp / "models")
        (tmp / "prometheus").mkdir()
        bare = start(f"bare {workers}", BARE_APP, workers, tmp, extra, "/setup")
        stack.callback(stop, bare)
        service_env = {**extra, "RNNADD_MODEL_DIR": str(tmp / "models"),
                       "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus")}
        service = start(f"service {workers}", SERVICE_APP, workers, tmp, service_env, "/readyz")
        stack.callback(stop, service)
        yield Pair(workers, bare, service)
