"""gunicorn servers for benchmarks.http: the service and a bare Flask endpoint, side by side.

Each pair runs under service/gunicorn.conf.py with the same explicit worker class, workers
and threads, on free 127.0.0.1 ports, and is ended by the master's PID, however the run ends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "service" / "gunicorn.conf.py"
SERVICE_APP = "service.app:create_app()"
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
    log = tmp / f"{name.split()[0]}.log"
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
def servers(workers: Workers, extra: dict[str, str]) -> Iterator[Pair]:
    """The bare endpoint and the service, both up for the duration of a with block."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnadd-bench-")))
        copy_models(tmp / "models")
        (tmp / "prometheus").mkdir()
        bare = start(f"bare {workers}", BARE_APP, workers, tmp, extra, "/setup")
        stack.callback(stop, bare)
        service_env = {**extra, "RNNADD_MODEL_DIR": str(tmp / "models"),
                       "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus")}
        service = start(f"service {workers}", SERVICE_APP, workers, tmp, service_env, "/readyz")
        stack.callback(stop, service)
        yield Pair(workers, bare, service)
