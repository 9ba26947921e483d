"""A real gunicorn serving the app on a free 127.0.0.1 port, for integration tests.

Tests start one with `running_server(tmp_path)` (a context manager) or `start_server` +
`stop_server`; the server process is ended by its PID, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from training.store import ModelStore, is_version
from training.train import TrainConfig, train_and_save

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODELS = ROOT / "models"
TOKEN = "integration-test-token"


@dataclass
class Server:
    """A running gunicorn and what a test needs to talk to it."""

    url: str
    proc: subprocess.Popen
    model_dir: Path
    token: str
    log: Path
    metrics_dir: Path

    def log_text(self) -> str:
        """gunicorn's and the app's output, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (nothing else listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_models(dest: Path) -> str:
    """Copy the bundled models (or, in a bare checkout, train a quick one); the active version."""
    dest.mkdir(parents=True, exist_ok=True)
    store = ModelStore(BUNDLED_MODELS)
    current = store.current() if BUNDLED_MODELS.is_dir() else None
    if current:
        for path in BUNDLED_MODELS.iterdir():
            if is_version(path.name) and path.is_dir():
                shutil.copytree(path, dest / path.name)
        shutil.copy2(store.current_file, dest / "CURRENT")
        return current
    version, _, _ = train_and_save(TrainConfig(), ModelStore(dest), activate=True)
    return version


def start_server(
    tmp: Path, *, workers: int = 2, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Server:
    """Start gunicorn with the project's config on a free port and wait until it is ready."""
    model_dir, metrics_dir = tmp / "models", tmp / "prometheus"
    if not model_dir.exists():
        seed_models(model_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        "RNNADD_MODEL_DIR": str(model_dir),
        "RNNADD_ADMIN_TOKEN": TOKEN,
        "RNNADD_RELOAD_INTERVAL": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WEB_CONCURRENCY": str(workers),
        "HOME": str(tmp),  # anything gunicorn writes under ~ stays in the test's directory
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers)]
    conf = ROOT / "service" / "gunicorn.conf.py"
    cmd += ["-c", str(conf)] if conf.is_file() else ["--no-control-socket"]
    cmd.append("service.app:create_app()")
    log = tmp / "gunicorn.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, model_dir, TOKEN, log, metrics_dir)
    try:
        wait_ready(server, timeout)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_ready(server: Server, timeout: float) -> None:
    """Poll /readyz until 200; fail early with the log if gunicorn exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.proc.returncode}:\n"
                               f"{server.log_text()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not ready after {timeout} s:\n{server.log_text()}")


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """SIGTERM (graceful) to the master by PID, SIGKILL if it lingers."""
    if server.proc.poll() is not None:
        return
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(5)


@contextlib.contextmanager
def running_server(tmp: Path, **kwargs: object) -> Iterator[Server]:
    """A server for the duration of a with block."""
    server = start_server(tmp, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_server(server)


def worker_pids_serving(server: Server, version: str) -> set[str]:
    """PIDs of live workers whose active-model gauge says they serve version (from /metrics)."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    pids = set()
    for line in text.splitlines():
        if not line.startswith("rnnadd_model_active{") or not line.endswith(" 1.0"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("version") == version and "pid" in labels:
            pids.add(labels["pid"])
    return pids


def wait_job(server: Server, job_id: str, timeout: float = 120.0) -> dict:
    """Poll GET /v1/jobs/<id> until the job ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = requests.get(f"{server.url}/v1/jobs/{job_id}", timeout=5).json()
        if record.get("status") in ("succeeded", "failed", "rejected"):
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")
