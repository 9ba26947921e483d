"""Real gunicorn servers on 127.0.0.1 for integration tests and benchmarks alike.

gunicorn binds port 0 itself and the port is read from its log, so no port is handed from a
probe to the server (another process could take it in between). Servers are ended by PID.
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from training.store import ModelStore
from training.train import TrainConfig, train_and_save

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "service" / "gunicorn.conf.py"
BUNDLED_MODELS = ROOT / "models"
SERVICE_APP = "service.app:create_app()"
TOKEN = "integration-test-token"
LISTENING = re.compile(rb"Listening at: http://127\.0\.0\.1:([0-9]+)")
GRPC_LISTENING = re.compile(rb"gRPC listening at: 127\.0\.0\.1:([0-9]+)")


@dataclass
class Server:
    """A running gunicorn and what a test needs to talk to it."""

    url: str
    proc: subprocess.Popen
    model_dir: Path
    token: str
    log: Path
    metrics_dir: Path
    grpc: str | None = None  # host:port of the workers' gRPC servers, when on

    @property
    def port(self) -> int:
        """The port gunicorn bound."""
        return int(self.url.rsplit(":", 1)[1])

    def log_text(self) -> str:
        """gunicorn's and the app's output, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def free_port() -> int:
    """A port nothing listens on right now (for tests of a server that is not there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bundled_version() -> str | None:
    """The model the repository ships (models/BUNDLED), whatever CURRENT says locally."""
    marker = BUNDLED_MODELS / "BUNDLED"
    if marker.is_file():
        return marker.read_text().strip() or None
    return ModelStore(BUNDLED_MODELS).current() if BUNDLED_MODELS.is_dir() else None


def seed_models(dest: Path) -> str:
    """Copy only the bundled version and make it active (in a bare checkout, train one)."""
    dest.mkdir(parents=True, exist_ok=True)
    version = bundled_version()
    if version and (BUNDLED_MODELS / version).is_dir():
        shutil.copytree(BUNDLED_MODELS / version, dest / version)
        (dest / "CURRENT").write_text(version + "\n")
        return version
    version, _ = train_and_save(TrainConfig(), ModelStore(dest), activate=True)
    return version


def start_gunicorn(
    tmp: Path, app: str = SERVICE_APP, *, args: Sequence[str] = (),
    env: Mapping[str, str] | None = None, ready_path: str = "/readyz", timeout: float = 60.0,
    name: str = "gunicorn", conf: Path = CONF,
) -> tuple[subprocess.Popen, str, Path]:
    """gunicorn -c service/gunicorn.conf.py on 127.0.0.1:0; (process, url, log) once ready."""
    log = tmp / f"{name}.log"
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", "127.0.0.1:0",
           *args, app]
    # gRPC only where a test asks for it (RNNADD_GRPC_BIND=127.0.0.1:0), never on the default port.
    full_env = {**os.environ, "HOME": str(tmp), "RNNADD_GRPC_BIND": "", **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        url = _wait_listening(proc, log, timeout)
        _wait_path(proc, url + ready_path, log, timeout)
    except BaseException:
        stop_process(proc)
        raise
    return proc, url, log


def _wait_listening(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """The URL gunicorn announces once it has bound its port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_bytes())
        if found:
            return f"http://127.0.0.1:{int(found.group(1))}"
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn did not bind within {timeout} s:\n{_tail(log)}")


def _wait_path(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Poll a URL until 200; fail early with the log if gunicorn exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    """The end of a server log, for failure messages."""
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def grpc_target(log: Path) -> str | None:
    """host:port that the master reserved for the workers' gRPC servers (read from its log)."""
    found = GRPC_LISTENING.search(log.read_bytes())
    return f"127.0.0.1:{int(found.group(1))}" if found else None


def start_server(
    tmp: Path, *, workers: int = 2, env: Mapping[str, str] | None = None, timeout: float = 60.0,
    grpc: bool = False,
) -> Server:
    """The service on a copy of the bundled model, with the admin token, once ready.

    grpc=True also serves gRPC on a port of the kernel's choosing (Server.grpc).
    """
    model_dir, metrics_dir = tmp / "models", tmp / "prometheus"
    if not model_dir.exists():
        seed_models(model_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        "RNNADD_MODEL_DIR": str(model_dir),
        "RNNADD_ADMIN_TOKEN": TOKEN,
        "RNNADD_RELOAD_INTERVAL": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WEB_CONCURRENCY": str(workers),
        **({"RNNADD_GRPC_BIND": "127.0.0.1:0"} if grpc else {}),
        **(env or {}),
    }
    proc, url, log = start_gunicorn(tmp, env=full_env, timeout=timeout)
    server = Server(url, proc, model_dir, TOKEN, log, metrics_dir, grpc_target(log))
    if grpc:
        try:
            wait_grpc_ready(server, timeout, workers)
        except BaseException:
            stop_process(proc)
            raise
    return server


def wait_grpc_ready(server: Server, timeout: float, workers: int = 1) -> None:
    """Until every worker's gRPC server answers Health.Check SERVING (or gunicorn exits)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if server.grpc is None:
        raise RuntimeError(f"gunicorn did not say where gRPC listens:\n{_tail(server.log)}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.proc.returncode}:\n"
                               f"{_tail(server.log)}")
        started = server.log.read_bytes().count(b'"gRPC listening at ')
        with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(server.grpc) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING and started >= workers:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gRPC on {server.grpc} not serving after {timeout} s:\n"
                       f"{_tail(server.log)}")


def wait_ready(server: Server, timeout: float) -> None:
    """Poll /readyz until 200; fail early with the log if gunicorn exits."""
    _wait_path(server.proc, server.url + "/readyz", server.log, timeout)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (graceful) to the master by PID, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """End a server by its master's PID."""
    stop_process(server.proc, timeout)


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
        if record.get("status") in ("succeeded", "failed", "rejected", "cancelled"):
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")
