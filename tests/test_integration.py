"""A real 2-worker gunicorn: rollback and a corrupt CURRENT reach every worker; metrics add up."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import servers
from tests.conftest import clone_version, corrupt_version, point_current_at
from training.store import ModelStore

pytestmark = pytest.mark.integration
WORKERS = 2


@pytest.fixture
def server(tmp_path: Path) -> Iterator[servers.Server]:
    """A 2-worker gunicorn on a free port, always stopped by PID."""
    with servers.running_server(tmp_path, workers=WORKERS) as running:
        # /readyz answered by one worker; wait until every worker has booted with the model
        version = ModelStore(running.model_dir).current()
        eventually(lambda: len(servers.worker_pids_serving(running, version)) == WORKERS,
                   "every worker booted")
        yield running


def burst(server: servers.Server, count: int = 40) -> list[dict]:
    """Concurrent predictions, so that every worker answers some of them."""
    def one(i: int) -> dict:
        response = requests.post(f"{server.url}/v1/predict", json={"a": i, "b": 1}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def metric(server: servers.Server, name: str) -> float:
    """One unlabelled sample from /metrics, summed over the workers by prometheus_client."""
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Retry check (which may send requests) until it holds, within a bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def every_worker_serves(server: servers.Server, version: str) -> bool:
    """A burst answered only by version, and each live worker's gauge naming it."""
    answers = {r["model_version"] for r in burst(server)}
    return answers == {version} and len(servers.worker_pids_serving(server, version)) == WORKERS


def test_rollback_via_activate_reaches_every_worker(server: servers.Server) -> None:
    store = ModelStore(server.model_dir)
    old = store.current()
    new = clone_version(store)
    auth = {"Authorization": f"Bearer {server.token}"}
    for version in (new, old):
        response = requests.post(f"{server.url}/v1/models/{version}/activate", headers=auth,
                                 timeout=10)
        assert response.status_code == 200, response.text
        eventually(lambda v=version: every_worker_serves(server, v), f"all workers on {version}")


def test_corrupt_current_keeps_serving_and_counts_the_failure(server: servers.Server) -> None:
    store = ModelStore(server.model_dir)
    good = store.current()
    assert metric(server, "rnnadd_model_load_failures_total") == 0
    point_current_at(store, corrupt_version(store))

    def both_failed() -> bool:
        assert {r["model_version"] for r in burst(server)} == {good}
        return metric(server, "rnnadd_model_load_failures_total") >= WORKERS

    eventually(both_failed, "each worker tried the corrupt version")
    burst(server)
    assert metric(server, "rnnadd_model_load_failures_total") == WORKERS  # once, not per request
    ready = requests.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["model_version"] == good
    logged = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{") and '"logger"' in line]
    assert sum("failed to load" in r["msg"] for r in logged) == WORKERS


def test_request_metrics_add_up_across_workers(server: servers.Server) -> None:
    before = metric(server, "rnnadd_pairs_predicted_total")
    burst(server, 60)
    assert metric(server, "rnnadd_pairs_predicted_total") == before + 60
    assert len(servers.worker_pids_serving(server, ModelStore(server.model_dir).current())) == 2


def test_request_ids_and_json_access_log(server: servers.Server) -> None:
    response = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": "it-42"}, timeout=5)
    assert response.headers["X-Request-ID"] == "it-42"
    generated = requests.get(f"{server.url}/healthz", timeout=5).headers["X-Request-ID"]

    def logged() -> bool:
        ids = set()
        for line in server.log_text().splitlines():
            if line.startswith("{"):
                ids.add(json.loads(line).get("request_id"))
        return {"it-42", generated} <= ids

    eventually(logged, "both requests logged as JSON")


def test_errors_are_problem_json_under_gunicorn(server: servers.Server) -> None:
    response = requests.post(f"{server.url}/v1/predict", data="{", timeout=5,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    big = requests.post(f"{server.url}/v1/predict", data=b"x" * (2 * 1024 * 1024), timeout=10,
                        headers={"Content-Type": "application/json"})
    assert big.status_code == 413


def test_no_control_socket_and_own_metrics_dir_removed(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": "", "TMPDIR": str(scratch)}
    server = servers.start_server(tmp_path, workers=WORKERS, env=env)
    try:
        created = list(scratch.glob("rnnadd-metrics-*"))
        assert len(created) == 1 and any(created[0].iterdir())
        burst(server, 10)
        assert metric(server, "rnnadd_pairs_predicted_total") == 10
    finally:
        servers.stop_server(server)
    assert server.proc.returncode == 0  # SIGTERM is a graceful, successful shutdown
    assert not created[0].exists()
    assert not (tmp_path / ".gunicorn").exists()  # HOME is tmp_path: no control socket made


def raw_request(server: servers.Server, data: bytes) -> tuple[bytes, bytes]:
    """Send bytes as they are (no HTTP client would) and return the head and body of the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    (b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
])
def test_malformed_http_is_answered_as_problem_json(
    server: servers.Server, data: bytes, status: int
) -> None:
    head, body = raw_request(server, data)
    assert head.split(b" ", 2)[1] == str(status).encode()
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["status"] == status
