"""gunicorn settings: `gunicorn -c service/gunicorn.conf.py 'service.app:create_app()'`.

Every value can come from the environment, and a --bind (or any flag) on the command line
overrides this file. Hooks run in the master: they prepare the shared directory of
prometheus_client's multiprocess mode before any worker imports it, and tidy it up after.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import shutil
import socket
import tempfile
from typing import Any


def _load_settings() -> Any:
    """The service's Settings; gunicorn runs this file by path, so the project may not be on
    sys.path yet (it is once the app is imported)."""
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from service.settings import Settings

    return Settings.from_env()


wsgi_app = "service.app:create_app()"
# One Settings object for the app and this file: each default is written once, in it.
_settings = _load_settings()
bind = [_settings.bind]
workers = _settings.workers
# gthread keeps client connections alive, which sync workers cannot (they close every one);
# other services reuse connections. docs/benchmarks.md compares the two.
worker_class = _settings.worker_class
threads = _settings.threads
timeout = _settings.timeout  # a stuck worker is killed and replaced
graceful_timeout = _settings.graceful_timeout  # SIGTERM: finish requests in flight
keepalive = _settings.keepalive  # seconds an idle connection is kept
# Request logging is the app's (one JSON line per request); gunicorn logs only its own events.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
# gunicorn 25.1+ opens a control socket under ~/.gunicorn by default, which a read-only root
# filesystem or a home-less user cannot create. Off unless a path is given explicitly.
control_socket = _settings.control_socket
control_socket_disable = not control_socket
# SCRIPT_NAME, PATH_INFO and X-Forwarded-Proto are taken from these peers only (gunicorn trusts
# loopback by default, so any local client could set them); empty: from nobody.
forwarded_allow_ips = _settings.forwarded_allow_ips
# Worker heartbeats: a RAM-backed directory, so a slow or read-only disk never stalls them.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

# One BLAS thread per worker: the batch path is small matmuls, and extra threads only contend.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_created_metrics_dir: list[str] = []
# The gRPC port, bound (not listening) by the master for as long as it runs: workers listen on
# it with SO_REUSEPORT, so port 0 becomes one port for all, and no other user can take it.
_grpc_port_holder: list[socket.socket] = []

# glibc returns every large buffer (a 10,000-pair answer is about 1 MB) to the kernel at once
# and maps it anew on the next request; keeping them in the heap spares that (docs/benchmarks.md).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 128 << 20))
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own answer to a malformed request, as problem+json instead of HTML."""
    from gunicorn import util

    body = json.dumps({"type": f"urn:rnnadd:problem:http-{status_int}", "title": reason,
                       "status": status_int, "detail": mesg}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def on_starting(server: Any) -> None:
    """Before any worker exists: pin BLAS threads, prepare the metrics dir, JSON errors."""
    from gunicorn import util

    util.write_error = write_problem  # workers look it up at call time (too-long URIs etc.)
    for name in BLAS_THREADS:
        os.environ.setdefault(name, "1")
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="rnnadd-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _created_metrics_dir.append(path)
    else:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):  # figures of an earlier run
            os.remove(stale)
    server.log.info("prometheus multiprocess metrics in %s", path)
    reserve_grpc_port(server)


def reserve_grpc_port(server: Any) -> None:
    """Hold RNNADD_GRPC_BIND's port for the workers' gRPC servers; say where it is."""
    from service.settings import grpc_address

    bind = os.environ.get("RNNADD_GRPC_BIND", _settings.grpc_bind).strip()
    address = grpc_address(bind) if bind else None
    if address is None:
        return
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"RNNADD_GRPC_BIND={bind}: cannot bind: {exc}") from exc
    _grpc_port_holder.append(sock)
    port = sock.getsockname()[1]
    bound = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    os.environ["RNNADD_GRPC_BIND"] = bound  # what the workers' Settings read
    server.log.info("gRPC listening at: %s (in every worker)", bound)


def post_fork(server: Any, worker: Any) -> None:
    """In each worker: raise glibc's malloc thresholds unless the operator tuned them."""
    if any(name in os.environ for name in MALLOC_ENV):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    for param, value in MALLOC_SETTINGS:
        mallopt(param, value)


def post_worker_init(worker: Any) -> None:
    """Each worker also follows CURRENT from a background thread, so an idle worker (or one
    whose clients keep their connections to another) switches versions too."""
    from service import single_write  # status, headers and body in one send: see its docstring

    single_write.install()
    services = getattr(worker.wsgi, "extensions", {}).get("rnnadd")
    if services is not None:
        services.holder.watch()
    if os.environ.get("RNNADD_GRPC_BIND", "").strip():
        from service import grpc_server  # imported in workers only: grpc must not fork

        grpc_server.serve_in_worker(worker)


def worker_exit(server: Any, worker: Any) -> None:
    """Let the worker's gRPC calls in flight finish before it exits."""
    running = getattr(worker, "rnnadd_grpc", None)
    if running is not None:
        from service import grpc_server

        grpc_server.finish_in_worker(worker)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges so they stop counting; its counters stay summed."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory this master created (never one the operator chose)."""
    for path in _created_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)
