"""Each response leaves a gunicorn worker in one send: status line, headers and body together.

A real gunicorn on 127.0.0.1 runs the project's config (service/gunicorn.conf.py, whose
post_worker_init installs service.single_write) plus a hook that logs every socket send of the
worker. The control server runs the same config with the patch left out and must show the split
(head and body in two sends), so the instrument is known to see what it is meant to see.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT, Server, seed_models, start_gunicorn, stop_server

pytestmark = pytest.mark.integration

# The test's config: the project's own, with a send counter hooked in after its post_worker_init.
CONF = """
import runpy, socket
_conf = runpy.run_path({service_conf!r})
globals().update({{k: v for k, v in _conf.items() if not k.startswith("__")}})
_project_post_worker_init = _conf["post_worker_init"]
if not {patched!r}:
    import service.single_write
    service.single_write.install = lambda: False  # the patch left out: the control server

def post_worker_init(worker):
    _project_post_worker_init(worker)
    sendall, send = socket.socket.sendall, socket.socket.send

    def log(data):
        with open({log!r}, "a") as out:
            out.write(f"{{len(data)}} {{bytes(data[:12])!r}}\\n")

    def counted_sendall(self, data, *args):
        log(data)
        return sendall(self, data, *args)

    def counted_send(self, data, *args):
        log(data)
        return send(self, data, *args)

    socket.socket.sendall, socket.socket.send = counted_sendall, counted_send
"""

REQUESTS = [
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("POST", "/v1/predict", {"a": 3, "b": 5}),
    ("POST", "/v1/predict/batch", {"pairs": [[1, 2], [100, 27]]}),
    ("POST", "/v2/models/rnnadd/infer", {"inputs": [
        {"name": "a", "shape": [1], "datatype": "INT64", "data": [3]},
        {"name": "b", "shape": [1], "datatype": "INT64", "data": [5]}]}),
    ("GET", "/v1/jobs/nope", None),  # an error answer (problem+json) too
]


def _server(tmp: Path, patched: bool) -> Server:
    """gunicorn with the counting config, one worker, on a port it binds itself."""
    tmp.mkdir(parents=True, exist_ok=True)
    model_dir, metrics_dir, sends = tmp / "models", tmp / "prometheus", tmp / "sends.log"
    seed_models(model_dir)
    metrics_dir.mkdir()
    conf = tmp / "gunicorn_conf.py"
    conf.write_text(CONF.format(service_conf=str(ROOT / "service" / "gunicorn.conf.py"),
                                patched=patched, log=str(sends)))
    env = {"RNNADD_MODEL_DIR": str(model_dir), "WEB_CONCURRENCY": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    proc, url, log = start_gunicorn(tmp, env=env, conf=conf)
    return Server(url, proc, model_dir, "", log, metrics_dir)


def _sends_per_response(server: Server) -> list[int]:
    """Send REQUESTS on one keep-alive connection; count the worker's sends for each answer."""
    sends = server.model_dir.parent / "sends.log"
    sends.write_text("")  # forget the readiness probes
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    counts = []
    try:
        for method, path, body in REQUESTS:
            before = len(sends.read_text().splitlines())
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            payload = resp.read()
            assert payload, f"{method} {path}: empty body"
            counts.append(len(sends.read_text().splitlines()) - before)
    finally:
        conn.close()
    return counts


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, Server]]:
    """The patched server (the project's config) and the control server."""
    tmp = tmp_path_factory.mktemp("single-write")
    started: dict[bool, Server] = {}
    try:
        for patched in (True, False):
            started[patched] = _server(tmp / ("patched" if patched else "control"), patched)
        yield started
    finally:
        for server in started.values():
            stop_server(server)


def test_each_response_is_one_send(servers: dict[bool, Server]) -> None:
    counts = _sends_per_response(servers[True])
    assert counts == [1] * len(REQUESTS), dict(zip([p for _, p, _ in REQUESTS], counts,
                                                   strict=True))


def test_control_without_the_patch_splits_head_and_body(servers: dict[bool, Server]) -> None:
    """Without service.single_write gunicorn sends the head and the body separately."""
    counts = _sends_per_response(servers[False])
    assert all(count >= 2 for count in counts), counts

