"""service/gunicorn.conf.py: settings from the environment, command line first, hooks' effects."""

from __future__ import annotations

import json
import os
import runpy
import socket
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.app.wsgiapp import WSGIApplication

CONF = Path(__file__).resolve().parent.parent / "service" / "gunicorn.conf.py"


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """The config module's namespace under the given environment."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def gunicorn_settings(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """gunicorn's own view of the settings, parsed exactly as `gunicorn -c CONF ...` would."""
    monkeypatch.setattr(sys, "argv", ["gunicorn", "-c", str(CONF), *args])
    return WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load(monkeypatch)
    assert conf["bind"] == ["127.0.0.1:8000"] and conf["workers"] == 2
    assert conf["wsgi_app"] == "service.app:create_app()"
    assert conf["control_socket_disable"] is True
    assert conf["timeout"] > 0 and conf["graceful_timeout"] > 0 and conf["keepalive"] > 0
    assert conf["accesslog"] is None  # the app logs each request itself, as JSON


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load(monkeypatch, RNNADD_BIND="0.0.0.0:9000", WEB_CONCURRENCY="5",
                RNNADD_CONTROL_SOCKET="/run/rnnadd/gunicorn.ctl")
    assert conf["bind"] == ["0.0.0.0:9000"] and conf["workers"] == 5
    assert conf["control_socket"] == "/run/rnnadd/gunicorn.ctl"
    assert conf["control_socket_disable"] is False


def test_command_line_bind_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNADD_BIND", "127.0.0.1:8111")
    assert gunicorn_settings(monkeypatch).bind == ["127.0.0.1:8111"]
    cfg = gunicorn_settings(monkeypatch, "--bind", "127.0.0.1:9999", "--workers", "3")
    assert cfg.bind == ["127.0.0.1:9999"] and cfg.workers == 3
    assert cfg.control_socket_disable is True and cfg.wsgi_app == "service.app:create_app()"


def test_on_starting_creates_and_on_exit_removes_a_metrics_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    conf = load(monkeypatch)
    server = SimpleNamespace(log=SimpleNamespace(info=lambda *a: None))
    monkeypatch.setattr(tempfile, "tempdir", None)  # honour the TMPDIR set above
    conf["on_starting"](server)
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert path.parent == tmp_path and path.is_dir()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    conf["on_exit"](server)
    assert not path.exists()


def test_an_operator_metrics_dir_is_emptied_not_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    conf = load(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    server = SimpleNamespace(log=SimpleNamespace(info=lambda *a: None))
    conf["on_starting"](server)
    conf["on_exit"](server)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_child_exit_drops_the_dead_workers_live_gauges(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "gauge_liveall_4242.db").write_bytes(b"")
    (tmp_path / "counter_4242.db").write_bytes(b"")
    conf = load(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    conf["child_exit"](None, SimpleNamespace(pid=4242))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db"]


def test_worker_class_keeps_connections_alive_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load(monkeypatch)
    assert (conf["worker_class"], conf["threads"]) == ("gthread", 4)
    conf = load(monkeypatch, RNNADD_WORKER_CLASS="sync", RNNADD_THREADS="1")
    assert (conf["worker_class"], conf["threads"]) == ("sync", 1)


def test_each_worker_starts_watching_current(monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    holder = SimpleNamespace(watch=lambda: started.append(True))
    worker = SimpleNamespace(wsgi=SimpleNamespace(extensions={"rnnadd": SimpleNamespace(
        holder=holder)}))
    load(monkeypatch)["post_worker_init"](worker)
    assert started == [True]
    load(monkeypatch)["post_worker_init"](SimpleNamespace(wsgi=object()))  # another app: no-op


def test_post_fork_raises_malloc_thresholds_unless_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    fake_libc = SimpleNamespace(mallopt=lambda param, value: calls.append((param, value)))
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    conf = load(monkeypatch)
    monkeypatch.setattr(conf["ctypes"], "CDLL", lambda name: fake_libc)
    conf["post_fork"](None, None)
    assert calls == [(-3, 32 << 20), (-1, 128 << 20)]
    calls.clear()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    conf["post_fork"](None, None)
    assert calls == []


def test_gunicorn_protocol_errors_are_problem_json(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load(monkeypatch)
    left, right = socket.socketpair()
    with left, right:
        conf["write_problem"](left, 414, "URI Too Long", "line <script> too long")
        left.shutdown(socket.SHUT_WR)
        raw = b"".join(iter(lambda: right.recv(4096), b""))
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 414 URI Too Long")
    assert b"Content-Type: application/problem+json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"type": "urn:rnnadd:problem:http-414", "title": "URI Too Long",
                                "status": 414, "detail": "line <script> too long"}
