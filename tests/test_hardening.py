"""Findings of the attack review, each kept closed by a test (issue numbers in the names)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.app import create_app
from tests import servers
from tests.conftest import corrupt_version, point_current_at
from training.store import ModelStore

INFER = "/v2/models/rnnadd/infer"
GOOD_A = {"name": "a", "datatype": "INT64", "shape": [1], "data": [3]}
GOOD_B = {"name": "b", "datatype": "INT64", "shape": [1], "data": [5]}


@pytest.mark.parametrize("body", [
    {"inputs": [{**GOOD_A, "datatype": ["INT64"]}, GOOD_B]},
    {"inputs": [{**GOOD_A, "datatype": {}}, GOOD_B]},
    {"inputs": [{**GOOD_A, "name": ["a"]}, GOOD_B]},
    {"inputs": [{**GOOD_A, "name": {}}, GOOD_B]},
    {"inputs": [GOOD_A, GOOD_B], "outputs": [{"name": ["sum"]}]},
    {"inputs": [GOOD_A, GOOD_B], "outputs": [{"name": {}}]},
    {"inputs": [GOOD_A, GOOD_B], "outputs": [{"name": "sum", "parameters": []}]},
    {"inputs": [GOOD_A, GOOD_B], "outputs": [{"name": "sum",
                                              "parameters": {"binary_data": []}}]},
    {"inputs": [GOOD_A, GOOD_B], "outputs": [{"name": "sum",
                                              "parameters": {"classification": {}}}]},
    {"inputs": [GOOD_A, GOOD_B], "outputs": {}},
    {"inputs": [{**GOOD_A, "shape": {}}, GOOD_B]},
    {"inputs": [{**GOOD_A, "shape": [[1]]}, GOOD_B]},
    {"inputs": [{**GOOD_A, "data": {}}, GOOD_B]},
    {"inputs": [{**GOOD_A, "data": [[3]]}, GOOD_B]},
    {"inputs": [{**GOOD_A, "data": ["3"]}, GOOD_B]},
    {"inputs": [{**GOOD_A, "parameters": []}, GOOD_B]},
    {"inputs": [{**GOOD_A, "parameters": {"binary_data_size": "8"}}, GOOD_B]},
    {"inputs": [GOOD_A, GOOD_B], "parameters": []},
    {"inputs": [GOOD_A, GOOD_B], "parameters": {"bits": []}},
    {"inputs": [GOOD_A, GOOD_B], "parameters": {"bits": {}}},
    {"inputs": [GOOD_A, GOOD_B], "parameters": {"binary_data_output": {}}},
    {"inputs": [GOOD_A, GOOD_B], "id": ["x"]},
    {"inputs": {}},
    {"inputs": [[]]},
    {"inputs": [GOOD_A, GOOD_B, 3]},
])
def test_1_every_v2_field_is_type_checked(client, body: dict[str, Any]) -> None:
    response = client.post(INFER, json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert set(response.get_json()) == {"error"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """A real gunicorn with a small body limit."""
    tmp = tmp_path_factory.mktemp("hardening")
    with servers.running_server(tmp, env={"RNNADD_MAX_BODY": "4096"}) as running:
        yield running


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on one connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_2_a_413_closes_the_connection_and_says_so(server: servers.Server) -> None:
    body = json.dumps({"pairs": [[1, 2]] * 2000}).encode()
    head = (f"POST /v1/predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    follow = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(server.port, head + body + follow)
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413")
    headers = rest.split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in headers
    with requests.Session() as session:  # a client told to close reconnects: nothing fails
        for _ in range(10):
            assert session.post(server.url + "/v1/predict/batch", data=body,
                                headers={"Content-Type": "application/json"}).status_code == 413
            assert session.post(server.url + "/v1/predict", json={"a": 1, "b": 2}).ok


@pytest.mark.parametrize("path", ["/v1/predict/batch", INFER, "/v1/predict"])
def test_3_a_chunked_body_over_the_limit_is_413(server: servers.Server, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pairs": ['
        for _ in range(1000):
            yield b"[1, 2], "
        yield b"[1, 2]]}"

    response = requests.post(server.url + path, data=chunks(),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 413, response.text


def test_3_a_chunked_body_under_the_limit_is_read_whole(server: servers.Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pairs": [[1, 2], '
        yield b"[3, 4]]}"

    response = requests.post(server.url + "/v1/predict/batch", data=chunks(),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 200 and len(response.json()["results"]) == 2


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", None])
def test_5_an_unreadable_current_is_shown_not_a_500(store: ModelStore, content: bytes | None,
                                                    model_dir: Path) -> None:
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    store.current_file.unlink()
    if content is None:
        store.current_file.mkdir()
    else:
        store.current_file.write_bytes(content)
    response = client.get("/v1/models")
    assert response.status_code == 200
    body = response.get_json()
    assert body["active"] is None and "CURRENT" in body["current_error"]
    assert str(model_dir) not in response.get_data(as_text=True)


def test_9_no_absolute_server_path_in_any_unauthenticated_body(store: ModelStore,
                                                               model_dir: Path) -> None:
    bad = corrupt_version(store)
    point_current_at(store, bad)
    (model_dir / "LAST_GOOD").unlink(missing_ok=True)
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    bodies = [client.get("/readyz"), client.post("/v1/predict", json={"a": 1, "b": 2}),
              client.get("/v1/models"), client.get(f"/v2/models/rnnadd/versions/{bad}"),
              client.post(f"/v2/models/rnnadd/versions/{bad}/infer",
                          json={"inputs": [GOOD_A, GOOD_B]})]
    assert [r.status_code for r in bodies] == [503, 503, 200, 409, 409]
    for response in bodies:
        text = response.get_data(as_text=True)
        assert str(model_dir) not in text and "/tmp" not in text, text
    assert bad in bodies[0].get_json()["detail"]


def test_11_a_worker_that_starts_on_a_broken_current_serves_the_last_good_version(
    store: ModelStore, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = store.current()
    store.activate(good)  # going live records it as the last version that passed the gate
    bad = corrupt_version(store)
    point_current_at(store, bad)
    with caplog.at_level(logging.ERROR, logger="rnnadd.model"):
        client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "degraded" and body["model_version"] == good
    assert bad in body["degraded"] and good in body["degraded"]
    assert client.post("/v1/predict", json={"a": 3, "b": 5}).get_json()["decimal"] == 8
    assert any(bad in record.getMessage() for record in caplog.records)
    assert "rnnadd_model_degraded 1.0" in client.get("/metrics").get_data(as_text=True)
    point_current_at(store, good)  # fixed: the worker follows and is no longer degraded
    client.application.extensions["rnnadd"].holder.refresh(force=True)
    assert client.get("/readyz").get_json()["status"] == "ready"
    assert "rnnadd_model_degraded 0.0" in client.get("/metrics").get_data(as_text=True)


def test_gunicorns_own_refusals_are_documented_problems(server: servers.Server,
                                                        openapi_document: dict) -> None:
    long_line = f"GET /v1/jobs?{'a' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(150))
    many_headers = f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode()
    for raw, path in ((long_line, "/v1/jobs"), (many_headers, "/healthz")):
        reply = exchange(server.port, raw)
        status = int(reply.split(b" ", 2)[1])
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"application/problem+json" in head and json.loads(body)["status"] == status
        assert str(status) in openapi_document["paths"][path]["get"]["responses"], status


# --- HTTP framing, redirects and forwarding headers ------------------------------------------

BATCH = "/v1/predict/batch"
CHUNKED_HEAD = ("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
# Bodies whose chunked framing is broken: each made a 500 and a logged traceback before.
MALFORMED_CHUNKS = {
    "extension ending in a bare LF": b"5;ext\nhello\r\n0\r\n\r\n",
    "Content-Length in the trailer": b"2\r\n{}\r\n0\r\nContent-Length: 5\r\n\r\n",
    "chunk size not hexadecimal": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk longer than its size": b"2\r\n{}xx\r\n0\r\n\r\n",
}


def server_errors(server: servers.Server) -> float:
    """5xx answers the service counted so far (all endpoints, all workers)."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("rnnadd_http_requests_total{") and 'status="5' in line)


def log_since(server: servers.Server, start: int) -> str:
    """What the server logged after byte offset start."""
    return server.log.read_text(errors="replace")[start:]


@pytest.mark.parametrize("path", [BATCH, "/v1/predict", INFER])
@pytest.mark.parametrize("name", sorted(MALFORMED_CHUNKS))
def test_malformed_chunked_framing_is_a_400_logged_at_info(server: servers.Server, path: str,
                                                           name: str) -> None:
    before, offset = server_errors(server), len(server.log.read_bytes())
    reply = exchange(server.port, CHUNKED_HEAD.format(path=path).encode()
                     + MALFORMED_CHUNKS[name])
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b"connection: close" in head.lower()  # the rest of the stream means nothing now
    answer = json.loads(body)
    if path == INFER:
        assert set(answer) == {"error"}, answer
    else:
        assert answer["type"] == "urn:rnnadd:problem:malformed-body", answer
    assert server_errors(server) == before
    logged = log_since(server, offset)
    assert "Traceback" not in logged and '"level": "error"' not in logged, logged[-2000:]
    assert '"level": "info", "logger": "rnnadd.inputs"' in logged, logged[-2000:]


ABORTED = {
    "Content-Length, then the client leaves": (
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 3000\r\n\r\n{{\"pairs\": [[1, 2], "),
    "chunked, then the client leaves": CHUNKED_HEAD + "10\r\n{{\"pairs\": [[1, 2]",
    "single pair, cut short": (
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 300\r\n\r\n{{\"a\": 1, \"b\": 2}}"),
}


@pytest.mark.parametrize("path", [BATCH, "/v1/predict"])
@pytest.mark.parametrize("name", sorted(ABORTED))
def test_an_upload_aborted_mid_body_is_no_server_error(server: servers.Server, path: str,
                                                       name: str) -> None:
    before, offset = server_errors(server), len(server.log.read_bytes())
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(ABORTED[name].format(path=path).encode())
        sock.shutdown(socket.SHUT_WR)  # the client is gone: no more body will come
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    # A valid JSON prefix is never answered as if it were the whole body.
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b'"decimal"' not in reply
    deadline = time.monotonic() + 5
    while path not in log_since(server, offset) and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = log_since(server, offset)
    assert f'"path": "{path}", "status": 400' in logged, logged[-2000:]
    assert "Traceback" not in logged and '"level": "error"' not in logged, logged[-2000:]
    assert server_errors(server) == before


@pytest.mark.parametrize(("path", "location"), [
    ("/v1//models", "/v1/models"),
    ("/v1//models?x=1", "/v1/models?x=1"),
    ("//v1//models", "/v1/models"),
])
def test_werkzeugs_redirects_never_echo_the_clients_host(server: servers.Server, path: str,
                                                         location: str) -> None:
    reply = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: evil.example\r\n"
                                  f"Connection: close\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 308"), reply[:300]
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert headers["Location"] == location
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["status"] == 308
    followed = requests.get(server.url + path, timeout=5)  # requests follows it to the API
    assert followed.status_code in {200, 404} and followed.headers["Content-Type"] != "text/html"


FORWARDING = ("GET /v1/models HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: {script}\r\n"
              "Connection: close\r\n\r\n")


def test_forwarding_headers_from_an_untrusted_peer_are_ignored(server: servers.Server) -> None:
    """gunicorn trusts loopback by default: any local client could set SCRIPT_NAME (a 500)."""
    for script in ("/elsewhere", "/v1"):
        reply = exchange(server.port, FORWARDING.format(script=script).encode())
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["active"]


def test_forwarding_headers_are_honoured_from_a_configured_proxy(tmp_path: Path) -> None:
    with servers.running_server(tmp_path, env={"RNNADD_FORWARDED_ALLOW_IPS": "127.0.0.0/8"}) \
            as trusted:
        reply = exchange(trusted.port, FORWARDING.format(script="/v1").encode())
    assert reply.startswith(b"HTTP/1.1 404"), reply[:300]  # PATH_INFO became /models
    assert b"No such endpoint: /models" in reply
