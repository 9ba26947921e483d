"""Container tests: the compose stack as an operator and a client use it, real containers only.

One stack for the module: the `proxy` (HAProxy) in front of three `api` replicas that share the
`models` volume, under a unique compose project, reached on 127.0.0.1 only, torn down with its
volume (`down -v`) at the end. The tests run in file order and some build on earlier ones (the
retrained version, the replica killed and brought back).

They need a Docker engine and Docker Compose (`docker compose` or `docker-compose`). Without them
they are skipped, except in CI (`CI=true`) or with `REQUIRE_DOCKER=1`, where they fail, so a broken
image can never pass unnoticed. The base image comes from `RNNADD_PYTHON_IMAGE` or `PYTHON_IMAGE`
when set (scripts/offline-base-image.sh builds one where no registry is reachable).
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = "/var/lib/rnnadd/models"
# Tags of the images under test; RNNADD_TEST_IMAGE_TAG keeps concurrent runs of different
# checkouts on one engine from testing each other's images.
IMAGE = f"rnnadd:{os.environ.get('RNNADD_TEST_IMAGE_TAG', 'test')}"
PROXY_IMAGE = f"rnnadd-proxy:{os.environ.get('RNNADD_TEST_IMAGE_TAG', 'test')}"
REPLICAS = 3
BUILD_TIMEOUT = 1200.0
COMPOSE_TIMEOUT = 180.0
HEALTHY_TIMEOUT = 150.0
JOB_TIMEOUT = 300.0
HTTP_TIMEOUT = 15.0
TERMINAL = {"succeeded", "failed", "rejected"}
RELOAD_INTERVAL = 1.0  # the service's default RNNADD_RELOAD_INTERVAL; the stack does not set it
SWAP_BOUND = RELOAD_INTERVAL + 1.0  # every replica serves a new version within this
STATE: dict[str, str] = {}  # what earlier tests leave for later ones (the retrained version)


def _docker_required() -> bool:
    """CI must never skip these tests silently."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("REQUIRE_DOCKER") == "1"


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command from the checkout with a bound on its time, capturing its output."""
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _compose_command() -> list[str] | None:
    """Prefer the Compose v2 plugin, else the standalone docker-compose (1.29 on Debian)."""
    try:
        if _run(["docker", "compose", "version"], 30).returncode == 0:
            return ["docker", "compose"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return ["docker-compose"] if shutil.which("docker-compose") else None


def _docker_problem() -> str | None:
    """Why Docker cannot be used here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], 30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        return f"no Docker engine answers (`docker info`: {info.stderr.strip()[-300:]})"
    if _compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


def _compose_env(project: str, token: str) -> dict[str, str]:
    """The caller's environment without its rnnadd settings, plus this stack's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RNNADD_") and k not in {"WEB_CONCURRENCY", "PYTHON_IMAGE"}
    }
    env.update(
        COMPOSE_PROJECT_NAME=project,
        RNNADD_PORT="0",  # Docker picks a free port itself; Stack.up reads which
        RNNADD_GRPC_PORT="0",
        RNNADD_ADMIN_TOKEN=token,
        RNNADD_IMAGE=IMAGE,
        RNNADD_PROXY_IMAGE=PROXY_IMAGE,
        WEB_CONCURRENCY="2",
    )
    base = os.environ.get("RNNADD_PYTHON_IMAGE") or os.environ.get("PYTHON_IMAGE")
    if base:
        env["PYTHON_IMAGE"] = base
    return env


# Run inside an api container: poll its own gunicorn's /readyz every 50 ms and print each reading
# ("<unix time> <version>"), until stdin closes or LIMIT seconds pass. Container and host share
# the kernel's clock, so the host compares these times with the CURRENT file's mtime.
WATCHER = """
import json, sys, threading, time, urllib.request
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
end = time.time() + {limit}
print("started", flush=True)
while not stop.is_set() and time.time() < end:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8000/readyz", timeout=2) as r:
            version = json.load(r).get("model_version")
    except Exception as exc:
        version = "error:" + type(exc).__name__
    print(f"{{time.time():.3f}} {{version}}", flush=True)
    time.sleep(0.05)
"""


@dataclass
class Stack:
    """A compose project of the service, reached through the proxy on 127.0.0.1:port."""

    compose: list[str]
    project: str
    token: str
    env: dict[str, str] = field(repr=False)
    port: int = 0  # published by Docker on 127.0.0.1; known once the stack is up
    grpc_port: int = 0  # the proxy's gRPC port, likewise

    def compose_run(self, *args: str, timeout: float = COMPOSE_TIMEOUT) -> str:
        """Run a compose subcommand on this project; fail the test with its output if it fails."""
        cmd = [*self.compose, "-p", self.project, *args]
        try:
            result = _run(cmd, timeout, self.env)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s")
        if result.returncode != 0:
            pytest.fail(
                f"`{' '.join(cmd)}` exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def up(self) -> None:
        """Start (or complete) the stack: the proxy and REPLICAS api replicas."""
        self.compose_run("up", "-d", "--no-recreate", "--scale", f"api={REPLICAS}")
        published = self.compose_run("port", "proxy", "8000").strip()  # 127.0.0.1:<port>
        self.port = int(published.rsplit(":", 1)[1])
        self.grpc_port = 0  # read when first needed: up() stays as quick as it was

    @property
    def grpc(self) -> str:
        """host:port of the proxy's gRPC frontend."""
        if not self.grpc_port:
            published = self.compose_run("port", "proxy", "8081").strip()
            self.grpc_port = int(published.rsplit(":", 1)[1])
        return f"127.0.0.1:{self.grpc_port}"

    def containers(self, service: str = "api") -> list[str]:
        """Ids of the service's running containers."""
        ids = self.compose_run("ps", "-q", service).split()
        if not ids:
            return []
        states = self.docker("inspect", "-f", "{{.Id}} {{.State.Running}}", *ids).stdout
        return [line.split()[0] for line in states.splitlines() if line.endswith(" true")]

    def logs(self, service: str = "api", tail: int = 60) -> str:
        """Last lines of a service's log, for failure messages and log checks."""
        cmd = [*self.compose, "-p", self.project, "logs", "--no-color", "--tail", str(tail),
               service]
        try:
            result = _run(cmd, 60, self.env)
        except subprocess.TimeoutExpired:
            return "(compose logs timed out)"
        return result.stdout[-60000:] + result.stderr[-2000:]

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a docker command with a bound on its time."""
        return _run(["docker", *args], timeout)

    def exec_python(self, cid: str, code: str, timeout: float = 30) -> str:
        """Run Python code in a container; its stdout (fails the test when it fails)."""
        result = self.docker("exec", cid, "python3", "-c", code, timeout=timeout)
        assert result.returncode == 0, f"exec in {cid[:12]} failed: {result.stderr[-2000:]}"
        return result.stdout

    def local(self, cid: str, method: str, path: str, body: object = None,
              admin: bool = False) -> tuple[int, object]:
        """One request from inside a container to its own gunicorn (127.0.0.1:8000)."""
        code = (
            "import json, os, urllib.error, urllib.request\n"
            f"req = urllib.request.Request('http://127.0.0.1:8000{path}', method={method!r},"
            f" data={None if body is None else json.dumps(body).encode()!r},"
            " headers={'Content-Type': 'application/json'})\n"
            + ("req.add_header('Authorization', 'Bearer ' + os.environ['RNNADD_ADMIN_TOKEN'])\n"
               if admin else "")
            + "try:\n"
            "    r = urllib.request.urlopen(req, timeout=10); status, raw = r.status, r.read()\n"
            "except urllib.error.HTTPError as e:\n"
            "    status, raw = e.code, e.read()\n"
            "print(json.dumps([status, json.loads(raw or b'null')]))\n"
        )
        status, payload = json.loads(self.exec_python(cid, code))
        return status, payload

    def proxy_servers(self, backend: str = "api") -> dict[str, dict[str, str]]:
        """HAProxy's view of a backend, from its stats page inside the proxy container."""
        (proxy,) = self.containers("proxy")
        text = self.exec_python(proxy, "import urllib.request; print(urllib.request.urlopen("
                                       "'http://127.0.0.1:8404/stats;csv', timeout=5)"
                                       ".read().decode())")
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row for row in rows
                if row["pxname"] == backend and row["svname"] not in {"FRONTEND", "BACKEND"}}

    def wait_replicas_up(self, count: int, timeout: float = 60.0,
                         backend: str = "api") -> dict[str, dict[str, str]]:
        """Wait until the proxy has exactly count replicas UP (in the api or grpc backend)."""
        deadline = time.monotonic() + timeout
        servers: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            servers = self.proxy_servers(backend)
            up = {name: row for name, row in servers.items() if row["status"] == "UP"}
            if len(up) == count:
                return up
            time.sleep(0.5)
        states = {name: row["status"] for name, row in servers.items()}
        pytest.fail(f"the proxy did not see {count} replicas UP within {timeout:.0f} s: {states}")

    def wait_healthy(self) -> None:
        """Docker reports every container healthy (REPLICAS api + the proxy); fail early if one
        stops."""
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        states: list[str] = []
        while time.monotonic() < deadline:
            ids = self.containers("api") + self.containers("proxy")
            inspect = self.docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}",
                                  *ids) if ids else None
            states = inspect.stdout.split("\n")[:-1] if inspect else []
            if len(ids) == REPLICAS + 1 and all(s == "running healthy" for s in states):
                return
            if any(s.startswith(("exited", "dead")) for s in states):
                pytest.fail(f"a container stopped: {states}\n{self.logs()}")
            time.sleep(1)
        pytest.fail(f"not healthy within {HEALTHY_TIMEOUT:.0f} s: {states}\n{self.logs()}")

    def request(
        self, method: str, path: str, body: object | None = None, token: str | None = None,
        headers: dict[str, str] | None = None, timeout: float = HTTP_TIMEOUT,
    ) -> tuple[int, dict[str, str], object]:
        """Send one HTTP request to the proxy; return status, headers and JSON body."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, hdrs, raw = err.code, dict(err.headers), err.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return status, {k.lower(): v for k, v in hdrs.items()}, payload


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Build both images and start a fresh stack (proxy + 3 replicas) with an empty volume."""
    problem = _docker_problem()
    if problem is not None:
        message = f"container tests need Docker: {problem}"
        if _docker_required():
            pytest.fail(f"{message} (required because CI=true or REQUIRE_DOCKER=1)")
        pytest.skip(f"{message}; set REQUIRE_DOCKER=1 to make this a failure")
    compose = _compose_command()
    assert compose is not None
    project = f"rnnaddtest{secrets.token_hex(4)}"
    token = secrets.token_urlsafe(24)
    env = _compose_env(project, token)
    stack = Stack(compose, project, token, env)
    try:
        stack.compose_run("build", timeout=BUILD_TIMEOUT)
        stack.up()
        stack.wait_healthy()
        stack.wait_replicas_up(REPLICAS)
        stack.wait_replicas_up(REPLICAS, backend="grpc")
        yield stack
    finally:
        cmd = [*compose, "-p", project, "down", "-v", "--remove-orphans", "--timeout", "20"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            _run(cmd, COMPOSE_TIMEOUT, env)
        with contextlib.suppress(subprocess.TimeoutExpired):
            _run(["docker", "volume", "rm", "-f", f"{project}_models"], 60)


def _bundled_version() -> str:
    """The version the image bakes in: the one models/CURRENT names."""
    return (ROOT / "models" / "CURRENT").read_text().strip()


# --- the stack as deployed ---------------------------------------------------------------------


def test_every_container_runs_as_non_root(stack: Stack) -> None:
    for cid in stack.containers("api") + stack.containers("proxy"):
        result = stack.docker("exec", cid, "id", "-u")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() != "0", cid


def test_only_the_proxy_publishes_a_port(stack: Stack) -> None:
    for cid in stack.containers("api"):
        ports = stack.docker("inspect", "-f", "{{json .HostConfig.PortBindings}}", cid).stdout
        assert ports.strip() in {"{}", "null"}, ports
    (proxy,) = stack.containers("proxy")
    ports = json.loads(stack.docker("inspect", "-f", "{{json .NetworkSettings.Ports}}",
                                    proxy).stdout)
    grpc_port = stack.grpc.rsplit(":", 1)[1]
    assert ports == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(stack.port)}],
                     "8081/tcp": [{"HostIp": "127.0.0.1", "HostPort": grpc_port}]}
    readonly = stack.docker("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", proxy).stdout
    assert readonly.strip() == "true"


def test_empty_volume_was_seeded_with_the_bundled_model(stack: Stack) -> None:
    bundled = _bundled_version()
    for cid in stack.containers("api"):  # one volume: every replica sees the same store
        current = stack.docker("exec", cid, "cat", f"{MODEL_DIR}/CURRENT")
        assert current.returncode == 0, current.stderr
        assert current.stdout.strip() == bundled
        record = stack.docker("exec", cid, "test", "-f", f"{MODEL_DIR}/{bundled}/model.json")
        assert record.returncode == 0, f"{bundled} was not copied into the volume"
    assert "seeded" in stack.logs(tail=500)
    status, _, body = stack.request("GET", "/v1/model")
    assert status == 200, body
    assert body["version"] == bundled


def test_readyz_names_the_served_model_and_the_replica(stack: Stack) -> None:
    hostnames = {stack.docker("inspect", "-f", "{{.Config.Hostname}}", cid).stdout.strip()
                 for cid in stack.containers("api")}
    seen = set()
    for _ in range(12):
        status, _, body = stack.request("GET", "/readyz")
        assert status == 200, body
        assert body["model_version"] == _bundled_version()
        if "replica" in body:
            assert body["replica"] in hostnames, body
            seen.add(body["replica"])
    assert not seen or len(seen) >= 2, f"the proxy sent every probe to {seen}"


def test_predict_single_and_batch_through_the_proxy(stack: Stack) -> None:
    status, headers, body = stack.request("POST", "/v1/predict", {"a": 3, "b": 5})
    assert status == 200, body
    assert body["decimal"] == 8
    assert body["correct"] is True
    assert body["binary"] == "00001000"
    assert body["model_version"] == _bundled_version()
    assert headers.get("x-request-id")

    status, _, body = stack.request("POST", "/v1/predict/batch", {"pairs": [[3, 5], [100, 27]]})
    assert status == 200, body
    assert [r["decimal"] for r in body["results"]] == [8, 127]
    assert body["accuracy"] == 1.0

    pairs = [[random.randrange(2**16), random.randrange(2**16)] for _ in range(2000)]
    status, _, body = stack.request("POST", "/v1/predict/batch", {"pairs": pairs, "bits": 17})
    assert status == 200, body
    assert [r["decimal"] for r in body["results"]] == [a + b for a, b in pairs]


def _pair_inputs(a: list[int], b: list[int]) -> list:
    """Inputs a and b as tritonclient.grpc sends them (raw_input_contents)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    tensors = []
    for name, values in (("a", a), ("b", b)):
        tensor = grpcclient.InferInput(name, [len(values)], "INT64")
        tensor.set_data_from_numpy(np.array(values, dtype=np.int64))
        tensors.append(tensor)
    return tensors


def test_grpc_through_the_proxy(stack: Stack) -> None:
    import grpc
    import tritonclient.grpc as grpcclient
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(stack.grpc)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("rnnadd")
        assert client.get_model_metadata("rnnadd").versions == [_bundled_version()]
        assert client.get_server_metadata().name == "rnnadd"
        pairs = [(random.randrange(2**40), random.randrange(2**40)) for _ in range(3000)]
        a, b = [x for x, _ in pairs], [y for _, y in pairs]
        result = client.infer("rnnadd", _pair_inputs(a, b), request_id="ctest-grpc")
        assert result.as_numpy("sum").tolist() == [x + y for x, y in pairs]
        assert result.as_numpy("correct").all()
        assert result.get_response().model_version == _bundled_version()
        with pytest.raises(InferenceServerException) as info:
            client.infer("rnnadd", _pair_inputs([1], [2])[:1])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "missing inputs ['b']" in info.value.message()
    finally:
        client.close()
    with grpc.insecure_channel(stack.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ctest-grpc" not in stack.logs("proxy", 400):
        time.sleep(0.5)
    assert any('"protocol": "grpc"' in line and "ModelInfer" in line
               for line in stack.logs("proxy", 400).splitlines())


def test_request_id_is_passed_through_or_created_and_logged(stack: Stack) -> None:
    rid = f"ctest-{secrets.token_hex(6)}"
    status, headers, _ = stack.request("GET", "/v1/model", headers={"X-Request-ID": rid})
    assert status == 200
    assert headers["x-request-id"] == rid
    status, headers, _ = stack.request("GET", "/v1/model")
    made = headers["x-request-id"]
    assert len(made) == 36 and made.count("-") == 4, made  # a UUID from the proxy
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proxy_log, api_log = stack.logs("proxy", 200), stack.logs("api", 600)
        if rid in proxy_log and made in proxy_log and rid in api_log and made in api_log:
            break
        time.sleep(0.5)
    line = next(ln for ln in proxy_log.splitlines() if rid in ln)
    record = json.loads(line[line.index("{"):])  # compose prefixes "proxy_1  | "
    assert record["status"] == 200 and record["method"] == "GET" and record["path"] == "/v1/model"
    assert rid in api_log and made in api_log, "the replica logged another id"


def test_the_proxy_refuses_bodies_over_the_limit_in_the_services_shapes(stack: Stack) -> None:
    """Content-Length over RNNADD_MAX_BODY: 413 at once, without sending the body."""
    for path, problem in (("/v1/predict", True), ("/v2/models/rnnadd/infer", False)):
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
        try:
            conn.putrequest("POST", path)
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(1024 * 1024 + 1))
            conn.endheaders()
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
        assert resp.status == 413, body
        if problem:
            assert resp.getheader("Content-Type") == "application/problem+json"
            assert body["status"] == 413 and body["type"].startswith("urn:rnnadd:problem:")
            assert {"type", "title", "status", "detail"} <= set(body)
            assert body["request_id"] == resp.getheader("X-Request-ID")
        else:
            assert resp.getheader("Content-Type") == "application/json"
            assert set(body) == {"error"}, body


def test_a_refused_client_is_let_go_within_the_request_timeout(stack: Stack) -> None:
    """After the 413 for an announced body over the limit, the proxy stops waiting for that
    body within 5 s (its `timeout client` there), not 30 s: refused clients cannot pile up."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=15) as sock:
        began = time.monotonic()
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: rnnadd\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 2000000\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        closed = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert closed < 8.0, closed


def test_retrain_needs_the_token(stack: Stack) -> None:
    status, headers, body = stack.request("POST", "/v1/retrain", {"max_steps": 10})
    assert status == 401, body
    assert "bearer" in headers.get("www-authenticate", "").lower()
    status, _, body = stack.request("POST", "/v1/retrain", {"max_steps": 10}, token="wrong")
    assert status == 401, body


# --- slow clients --------------------------------------------------------------------------------


# Run in a separate process (its own GIL, like a real attacker): keep `count` connections open,
# each having sent half a request header and nothing more; a connection the proxy answers or
# closes is replaced at once. Prints "open" once all are connected, then a JSON summary (each
# distinct answer with its count).
HALF_HEADERS = """
import collections, json, select, socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
partial = (b"POST /v1/predict HTTP/1.1\\r\\nHost: rnnadd\\r\\n"
           b"Content-Type: application/json\\r\\nX-Sl")
opened, answers = 0, []

def connect():
    global opened
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(partial)
    opened += 1
    return sock

socks = [connect() for _ in range(count)]
print("open", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    readable, _, _ = select.select(socks, [], [], 0.2)
    for sock in readable:
        try:
            answers.append(sock.recv(4096).decode("latin-1"))
        except OSError as exc:
            answers.append(repr(exc))
        sock.close()
        socks[socks.index(sock)] = connect()
print(json.dumps({"opened": opened, "answers": collections.Counter(answers)}), flush=True)
"""


Probe = tuple[str, float, float, object]  # path, seconds into the attack, duration, outcome


def probe_during(stack: Stack, attack_code: str, args: list[str], limit: float,
                 each_round: Callable[[list[Probe]], None] | None = None,
                 ) -> tuple[list[Probe], dict]:
    """Run an attack script (it prints "open", then a JSON summary) and probe /healthz and
    /v1/predict through the proxy with a 1 s timeout until it ends or `limit` seconds pass."""
    attack = subprocess.Popen([sys.executable, "-c", attack_code, str(stack.port), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probes: list[Probe] = []
    try:
        assert attack.stdout is not None and attack.stdout.readline().strip() == "open"
        began = time.monotonic()
        while attack.poll() is None and time.monotonic() - began < limit:
            for method, path, body in (("GET", "/healthz", None),
                                       ("POST", "/v1/predict", {"a": 21, "b": 21})):
                started = time.monotonic()
                try:
                    status, _, payload = stack.request(method, path, body, timeout=1.0)
                    outcome: object = (status, payload)
                except OSError as exc:  # a timeout after 1 s included
                    outcome = repr(exc)
                probes.append((path, round(started - began, 2), time.monotonic() - started,
                               outcome))
            if each_round is not None:
                each_round(probes)
            time.sleep(0.2)
        out, err = attack.communicate(timeout=30)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait(10)
    assert attack.returncode == 0, err[-2000:]
    return probes, json.loads(out)


def test_half_sent_headers_do_not_starve_the_service(stack: Stack) -> None:
    """256 connections hold half a request header for 20 s; every probe still answers < 1 s."""
    probes, summary = probe_during(stack, HALF_HEADERS, ["256", "20"], 25)
    assert len(probes) >= 40, probes
    failed = [p for p in probes if not (isinstance(p[3], tuple) and p[3][0] == 200)]
    assert not failed, failed[:5]
    slowest = max(probes, key=lambda p: p[2])
    assert slowest[2] < 1.0, slowest
    predictions = [p[3][1] for p in probes if p[0] == "/v1/predict"]
    assert all(body["decimal"] == 42 for body in predictions)
    # The proxy, not the client, ended the half-sent requests, each with its 408 problem document
    # (the parser's errorfile: HAProxy 2.6 could only close them or send built-in HTML).
    assert summary["opened"] > 256, "no connection was ended by the proxy's request timeout"
    assert len(summary["answers"]) == 1, list(summary["answers"])[:3]
    (answer,) = summary["answers"]
    status, _, problem = _problem_answer(answer.encode("latin-1"))
    assert status == 408 and problem["status"] == 408 and "request_id" not in problem, answer


# Run in a separate process: keep `count` uploads of a 200 KB body open, each having sent its
# headers and the first 17.6 KB at once (more than HAProxy's default 16 KiB buffer), then 8 bytes
# every 2 s; an upload the proxy answers or closes is replaced at once. Prints "open", then JSON
# (the answers' status lines with their counts: a list could outgrow the pipe).
SLOW_UPLOADS = """
import collections, json, select, socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
head = (b"POST /v1/predict/batch HTTP/1.1\\r\\nHost: rnnadd\\r\\n"
        b"Content-Type: application/json\\r\\nContent-Length: 200000\\r\\n\\r\\n")
opened, answers = 0, []

def connect():
    global opened
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head + b" " * 17600)
    opened += 1
    return sock

socks = [connect() for _ in range(count)]
print("open", flush=True)
end, next_drip = time.monotonic() + seconds, time.monotonic() + 2
while time.monotonic() < end:
    readable, _, _ = select.select(socks, [], [], 0.2)
    for sock in readable:
        try:
            answers.append(sock.recv(4096).decode("latin-1").split("\\r\\n", 1)[0])
        except OSError as exc:
            answers.append(repr(exc))
        sock.close()
        socks[socks.index(sock)] = connect()
    if time.monotonic() >= next_drip:
        next_drip += 2
        for i, sock in enumerate(socks):
            try:
                sock.sendall(b" " * 8)
            except OSError:  # closed by the proxy since the last select: its answer is lost
                sock.close()
                socks[i] = connect()
summary = {"opened": opened, "answers": collections.Counter(answers)}
print(json.dumps(summary), flush=True)
"""


def _down_transitions(stack: Stack) -> dict[str, int]:
    """How often the proxy has taken each replica out (HAProxy's chkdown counter)."""
    return {name: int(row["chkdown"] or 0) for name, row in stack.proxy_servers().items()
            if row["status"] != "MAINT"}


def test_slow_uploads_of_large_bodies_do_not_take_replicas_offline(stack: Stack) -> None:
    """48 uploads of 200 KB trickle in for 30 s against 3 replicas: with the body streamed on
    past the proxy's first 16 KiB, 8 of them took a replica DOWN. The proxy must hold each
    whole body, so every probe through it answers within 1 s and no replica goes down."""
    stack.wait_replicas_up(REPLICAS)
    downs = _down_transitions(stack)
    states: list[dict[str, str]] = []

    def replica_states(probes: list) -> None:
        if len(probes) % 20 == 0:
            states.append({n: r["status"] for n, r in stack.proxy_servers().items()})

    probes, summary = probe_during(stack, SLOW_UPLOADS, ["48", "30"], 36, replica_states)
    assert len(probes) >= 60, probes
    failed = [p for p in probes if not (isinstance(p[3], tuple) and p[3][0] == 200)]
    assert not failed, failed[:5]
    slowest = max(probes, key=lambda p: p[2])
    print(f"slow uploads: {len(probes)} probes, slowest {slowest[2] * 1000:.0f} ms; "
          f"{summary['opened']} uploads opened, answers {sorted(set(summary['answers']))}")
    assert slowest[2] < 1.0, slowest
    assert states and all(list(s.values()).count("UP") == REPLICAS for s in states), states
    assert _down_transitions(stack) == downs, "a replica went DOWN during the attack"
    # The proxy ended every stalled upload itself, with its 408, before any replica saw it.
    assert summary["opened"] >= 48 * 5, summary["opened"]
    assert set(summary["answers"]) == {"HTTP/1.1 408 Request Time-out"}, summary["answers"][:5]


def _problem_answer(answer: bytes) -> tuple[int, dict[str, str], dict]:
    """One HTTP answer read as a problem document: status, headers (lower-case), the document."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 "), answer[:400]
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert headers.get("content-type") == "application/problem+json", answer[:400]
    assert int(headers["content-length"]) == len(body), answer[:400]
    problem = json.loads(body)
    status = int(lines[0].split(" ", 2)[1])
    assert problem["status"] == status and problem["type"].startswith("urn:rnnadd:problem:")
    assert {"type", "title", "status", "detail"} <= set(problem), problem
    return status, headers, problem


def _exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes; read one answer (headers, then Content-Length bytes) or until the proxy
    closes. The answer and the seconds it took."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
                head, sep, body = answer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if sep and length is not None and len(body) >= length:
                    break
    return answer, time.monotonic() - started


# Requests HAProxy refuses itself, each with the status it must answer: its parser's refusals
# before any rule runs (the frontend's errorfiles, no request id), then its rules' (a request id).
PARSER_REFUSALS = {
    "malformed request line": (b"GET /x y z HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "space in a header name": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    "two Content-Length values": (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 2, 3\r\n\r\n{}", 400),
    "TE identity, chunked": (b"POST /v1/predict/batch HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 422),
    "chunk size not hexadecimal": (b"POST /v1/predict/batch HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", 400),
    "too many headers": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-H%d: 1\r\n" % i for i in range(120)) + b"\r\n", 400),
    "headers over the buffer": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                                + b"a" * 20000 + b"\r\n\r\n", 431),
    "request line over the buffer": (b"GET /healthz?" + b"a" * 20000
                                     + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
}
RULE_REFUSALS = {
    "request line over 8 KiB": (b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                                414),
    "body over the limit": (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 99999999\r\n\r\n", 413),
}


@pytest.mark.parametrize("name", sorted(PARSER_REFUSALS))
def test_the_parsers_refusals_are_problem_documents(stack: Stack, name: str) -> None:
    request, expected = PARSER_REFUSALS[name]
    answer, _ = _exchange(stack.port, request)
    status, headers, problem = _problem_answer(answer)
    assert status == expected, answer[:400]
    assert "request_id" not in problem and "x-request-id" not in headers  # no stream, no id
    assert headers["connection"] == "close"


@pytest.mark.parametrize("name", sorted(RULE_REFUSALS))
def test_the_proxys_rules_refuse_with_problem_documents_and_the_request_id(
        stack: Stack, name: str) -> None:
    request, expected = RULE_REFUSALS[name]
    answer, _ = _exchange(stack.port, request)
    status, headers, problem = _problem_answer(answer)
    assert status == expected, answer[:400]
    assert problem["request_id"] == headers["x-request-id"] and problem["request_id"]


def test_headers_only_the_relay_cannot_take_get_a_431_problem_document(stack: Stack) -> None:
    """Headers of about 15 KiB pass the public parser, go through the holder (over 12 KiB), and
    with the headers the public frontend adds no longer fit the relay frontend's buffer."""
    answer, _ = _exchange(stack.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                          + b"a" * 15200 + b"\r\n\r\n")
    status, _, problem = _problem_answer(answer)
    assert status == 431 and "request_id" not in problem, answer[:400]


def test_headers_that_never_complete_get_a_408_problem_document(stack: Stack) -> None:
    answer, seconds = _exchange(stack.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Sl")
    assert 4.0 < seconds < 8.0, seconds  # timeout http-request is 5 s
    status, _, problem = _problem_answer(answer)
    assert status == 408 and "request_id" not in problem


# What HAProxy 3.2.26 ends without sending a byte, whatever is configured (measured with no
# errorfile at all as well; docs/deployment.md): never an answer in another shape.
CLOSED_WITHOUT_AN_ANSWER = {
    "two Content-Length headers": (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2"
                                   b"\r\nContent-Length: 3\r\n\r\n{}", None),
    "HTTP/1.0 GET with a body": (b"GET /healthz HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                                 None),
    "chunk framing broken after the headers": (
        b"POST /v1/predict/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"zz\r\nhello\r\n"),
}


@pytest.mark.parametrize("name", sorted(CLOSED_WITHOUT_AN_ANSWER))
def test_what_haproxy_refuses_without_an_answer_is_closed_at_once(stack: Stack,
                                                                   name: str) -> None:
    """If a later HAProxy answers these, they belong with the problem documents above."""
    first, later = CLOSED_WITHOUT_AN_ANSWER[name]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(first)
        if later is not None:  # the chunked body goes to the holder once its headers are in
            time.sleep(0.3)
            sock.sendall(later)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer == b"" and time.monotonic() - started < 3.0, answer[:400]


def test_the_holder_and_relay_parsers_answer_problem_documents_too(stack: Stack) -> None:
    """The holder (127.0.0.1:8001) and the relay frontend (127.0.0.1:8002) get only what the
    public parser took, rewritten (request id, forwarding headers), so their own parsers are
    reached from inside the proxy's container alone."""
    (proxy,) = stack.containers("proxy")
    cases = [(8001, "malformed request line", 400), (8001, "TE identity, chunked", 422),
             (8001, "too many headers", 400), (8002, "malformed request line", 400),
             (8002, "headers over the buffer", 431)]
    code = (
        "import json, socket\n"
        "out = []\n"
        f"for port, request in {[(port, PARSER_REFUSALS[kind][0]) for port, kind, _ in cases]!r}:\n"
        "    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:\n"
        "        sock.sendall(request)\n"
        "        answer = b''\n"
        "        while chunk := sock.recv(65536):\n"
        "            answer += chunk\n"
        "    out.append(answer.decode('latin-1'))\n"
        "print(json.dumps(out))\n"
    )
    answers = json.loads(stack.exec_python(proxy, code))
    statuses = [_problem_answer(answer.encode("latin-1"))[0] for answer in answers]
    assert statuses == [expected for _, _, expected in cases], answers


def test_a_stalled_body_gets_a_408_problem_document(stack: Stack) -> None:
    """With a stream, so with the request id (HAProxy 3.2 then keeps the connection to drain
    the body until `timeout client`: the answer is read by its Content-Length)."""
    answer, seconds = _exchange(stack.port, b"POST /v1/predict HTTP/1.1\r\nHost: rnnadd\r\n"
                                b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
                                b'{"a": 1,', timeout=15)
    assert 4.0 < seconds < 8.0, seconds  # timeout http-request is 5 s
    status, headers, problem = _problem_answer(answer)
    assert status == 408 and problem["request_id"] == headers["x-request-id"], answer


# --- a replica killed under load ------------------------------------------------------------------


def _load(port: int, requests_per_thread: int, threads: int, done: list[int],
          failures: list[str]) -> list[threading.Thread]:
    """Client threads sending single predictions over keep-alive connections, checking each."""

    def work(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        for _ in range(requests_per_thread):
            a, b = rng.randrange(256), rng.randrange(256)
            try:
                conn.request("POST", "/v1/predict", body=json.dumps({"a": a, "b": b}),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 200 or json.loads(raw)["decimal"] != a + b:
                    failures.append(f"{resp.status} {raw[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            done[0] += 1
        conn.close()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def test_killing_a_replica_under_load_loses_no_request(stack: Stack) -> None:
    (proxy,) = stack.containers("proxy")
    proxy_started = stack.docker("inspect", "-f", "{{.State.StartedAt}}", proxy).stdout
    victim = stack.containers("api")[0]
    done, failures = [0], []
    total = 4 * 800
    workers = _load(stack.port, 800, 4, done, failures)
    deadline = time.monotonic() + 30
    while done[0] < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    killed_at = done[0]
    kill = stack.docker("kill", victim)
    assert kill.returncode == 0, kill.stderr
    for worker in workers:
        worker.join(120)
    assert done[0] == total, f"{done[0]} of {total} requests finished"
    assert killed_at < total - 1000, f"the kill came too late ({killed_at} of {total} done)"
    assert not failures, f"{len(failures)} failed: {failures[:5]}"

    # The proxy took the dead replica out by itself, then finds it again once compose restarts
    # it: same proxy process throughout, no reload.
    stack.wait_replicas_up(REPLICAS - 1, timeout=15)
    stack.up()
    stack.wait_replicas_up(REPLICAS, timeout=60)
    (proxy_after,) = stack.containers("proxy")
    assert proxy_after == proxy
    assert stack.docker("inspect", "-f", "{{.State.StartedAt}}", proxy).stdout == proxy_started


def test_killing_a_replica_under_grpc_load_fails_no_call(stack: Stack) -> None:
    # Single pairs from two threads and 1,500-pair calls (24 KB, too large for the proxy's
    # 16 KiB buffers: the body holder holds and replays them) from two others.
    import tritonclient.grpc as grpcclient

    victim, target = stack.containers("api")[0], stack.grpc
    calls, threads = 600, 4
    done, failures = [0], []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        client = grpcclient.InferenceServerClient(target)
        size = 1500 if seed < 2 else 1
        for _ in range(calls):
            a = [rng.randrange(2**20) for _ in range(size)]
            b = [rng.randrange(2**20) for _ in range(size)]
            try:
                got = client.infer("rnnadd", _pair_inputs(a, b), client_timeout=20)
                if got.as_numpy("sum").tolist() != [x + y for x, y in zip(a, b, strict=True)]:
                    failures.append(f"wrong sums for {size} pairs")
            except Exception as exc:  # any failed call fails the test
                failures.append(repr(exc)[:300])
            done[0] += 1
        client.close()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while done[0] < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    killed_at = done[0]
    kill = stack.docker("kill", victim)
    assert kill.returncode == 0, kill.stderr
    for worker in workers:
        worker.join(120)
    total = calls * threads
    assert done[0] == total, f"{done[0]} of {total} calls finished"
    assert killed_at < total - 800, f"the kill came too late ({killed_at} of {total} done)"
    assert not failures, f"{len(failures)} failed: {failures[:5]}"
    stack.wait_replicas_up(REPLICAS - 1, timeout=15, backend="grpc")
    stack.up()
    stack.wait_replicas_up(REPLICAS, timeout=60)
    stack.wait_replicas_up(REPLICAS, timeout=60, backend="grpc")


def test_a_large_grpc_call_on_a_killed_replica_is_replayed(stack: Stack) -> None:
    # 1,500-pair calls (24 KB) one after another, every replica's connection warm, then a
    # replica killed: the first call sent to it goes unanswered, and after the relay's 8 s the
    # body holder, which holds the whole call, sends it again to a live replica.
    import tritonclient.grpc as grpcclient

    a = list(range(1500))
    expected = [2 * x for x in a]
    client = grpcclient.InferenceServerClient(stack.grpc)
    try:
        for _ in range(3 * REPLICAS):
            assert client.infer("rnnadd", _pair_inputs(a, a)).as_numpy("sum").tolist() == expected
        kill = stack.docker("kill", stack.containers("api")[0])
        assert kill.returncode == 0, kill.stderr
        began, answered = time.monotonic(), 0
        while time.monotonic() - began < 12:
            got = client.infer("rnnadd", _pair_inputs(a, a), client_timeout=20)
            assert got.as_numpy("sum").tolist() == expected
            answered += 1
    finally:
        client.close()
    assert answered > 10
    stack.wait_replicas_up(REPLICAS - 1, timeout=15, backend="grpc")
    stack.up()
    stack.wait_replicas_up(REPLICAS, timeout=60)
    stack.wait_replicas_up(REPLICAS, timeout=60, backend="grpc")


def test_replicas_added_and_removed_are_seen_without_restarting_the_proxy(stack: Stack) -> None:
    (proxy,) = stack.containers("proxy")
    proxy_started = stack.docker("inspect", "-f", "{{.State.StartedAt}}", proxy).stdout
    stack.compose_run("up", "-d", "--no-recreate", "--scale", f"api={REPLICAS + 1}")
    stack.wait_replicas_up(REPLICAS + 1, timeout=60)
    # Scaling down under a light load: the removed replica finishes what it has (graceful stop)
    # while DNS and the checks take it out; no request fails.
    done, failures = [0], []
    workers = _load(stack.port, 2500, 2, done, failures)
    time.sleep(0.2)
    stack.up()  # back to REPLICAS: compose stops and removes one
    removed_at = done[0]
    for worker in workers:
        worker.join(120)
    assert done[0] == 5000 and not failures, failures[:5]
    assert removed_at < 5000, "the load ended before the replica was removed"
    stack.wait_replicas_up(REPLICAS, timeout=30)
    assert len(stack.containers("api")) == REPLICAS
    assert stack.docker("inspect", "-f", "{{.State.StartedAt}}", proxy).stdout == proxy_started


# --- retrain and rollback across replicas -----------------------------------------------------


class Watchers:
    """One WATCHER per api container, started before a version change."""

    def __init__(self, stack: Stack, limit: float = 240.0) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        for cid in stack.containers("api"):
            proc = subprocess.Popen(
                ["docker", "exec", "-i", cid, "python3", "-u", "-c",
                 WATCHER.format(limit=limit)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs[cid] = proc
        for cid, proc in self.procs.items():
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.strip() == "started", f"watcher in {cid[:12]}: {line!r}"

    def stop(self) -> dict[str, list[tuple[float, str]]]:
        """End every watcher (closing its stdin); each container's readings."""
        readings: dict[str, list[tuple[float, str]]] = {}
        for cid, proc in self.procs.items():
            out, _ = proc.communicate(input="", timeout=30)
            rows = [line.split(" ", 1) for line in out.splitlines() if line.strip()]
            readings[cid] = [(float(ts), version) for ts, version in rows]
        return readings


def _current_mtime(stack: Stack) -> float:
    """When CURRENT (on the shared volume) was last replaced: the moment of the switch."""
    cid = stack.containers("api")[0]
    return float(stack.exec_python(cid, f"import os; print(os.stat('{MODEL_DIR}/CURRENT')"
                                        ".st_mtime)"))


def _assert_all_switched(stack: Stack, readings: dict[str, list[tuple[float, str]]],
                         version: str) -> dict[str, float]:
    """Every replica served version from at most SWAP_BOUND after CURRENT changed; the lag of
    each (the last reading of anything else, after the switch)."""
    switched = _current_mtime(stack)
    lags = {}
    assert len(readings) == REPLICAS
    for cid, rows in readings.items():
        assert rows and rows[-1][1] == version, f"{cid[:12]} ends on {rows[-1:]}"
        stale = [ts for ts, v in rows if v != version and ts >= switched]
        lags[cid[:12]] = round(max(stale, default=switched) - switched, 3)
    assert all(lag <= SWAP_BOUND for lag in lags.values()), lags
    return lags


def _wait_for_job(stack: Stack, job_id: str) -> dict:
    """Poll a retrain job through the proxy until it ends, within JOB_TIMEOUT."""
    deadline = time.monotonic() + JOB_TIMEOUT
    job: dict = {}
    while time.monotonic() < deadline:
        status, _, job = stack.request("GET", f"/v1/jobs/{job_id}")
        assert status == 200, job
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not finish within {JOB_TIMEOUT:.0f} s: {job}\n{stack.logs()}")


def test_one_retrain_at_a_time_across_replicas(stack: Stack) -> None:
    """A slow job (not activated) holds the lock on the shared volume: every replica answers
    409 to a second retrain, and every replica reports the same job record."""
    slow = {"max_steps": 5000, "learning_rate": 1e-6, "hidden_size": 64, "batch_size": 256,
            "check_every": 100, "certify": False, "seed": 3, "activate": False}
    status, _, body = stack.request("POST", "/v1/retrain", slow, token=stack.token)
    assert status == 202, body
    job_id = body["job_id"]
    for cid in stack.containers("api"):
        status, answer = stack.local(cid, "POST", "/v1/retrain", {"max_steps": 10}, admin=True)
        assert status == 409, (cid[:12], answer)
        status, record = stack.local(cid, "GET", f"/v1/jobs/{job_id}")
        assert status == 200 and record["id"] == job_id and record["status"] in {"queued",
                                                                                  "running"}
    job = _wait_for_job(stack, job_id)
    assert job["status"] == "succeeded", job
    records = [stack.local(cid, "GET", f"/v1/jobs/{job_id}") for cid in stack.containers("api")]
    assert all(r == (200, job) for r in records), records


def test_retrain_through_the_proxy_reaches_every_replica_in_time(stack: Stack) -> None:
    watchers = Watchers(stack)
    try:
        status, headers, body = stack.request(
            "POST", "/v1/retrain", {"max_steps": 2000, "seed": 1}, token=stack.token)
        assert status == 202, body
        job_id = body["job_id"]
        assert headers.get("location", "").endswith(f"/v1/jobs/{job_id}")
        job = _wait_for_job(stack, job_id)
        assert job["status"] == "succeeded", f"{job}\n{stack.logs()}"
        version = job["model_version"]
        assert version and version != _bundled_version()
        time.sleep(SWAP_BOUND + 0.5)
    finally:
        readings = watchers.stop()
    lags = _assert_all_switched(stack, readings, version)
    print(f"retrain: replicas switched {lags} s after CURRENT changed (bound {SWAP_BOUND} s)")
    finished = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")).timestamp()
    assert finished >= _current_mtime(stack) - 0.01  # the job activated, then said so
    for _ in range(6):
        status, _, body = stack.request("POST", "/v1/predict", {"a": 3, "b": 5})
        assert status == 200 and body["model_version"] == version, body
    STATE["retrained"] = version


def test_the_retrained_version_survives_a_restart_of_the_stack(stack: Stack) -> None:
    version = STATE.get("retrained")
    if version is None:
        pytest.skip("needs the retrained version of the test before")
    stack.compose_run("down", "--timeout", "20")
    stack.up()
    stack.wait_replicas_up(REPLICAS, timeout=90)
    for cid in stack.containers("api"):
        assert stack.local(cid, "GET", "/readyz")[1]["model_version"] == version
    status, _, body = stack.request("GET", "/v1/model")
    assert status == 200 and body["version"] == version, body


def test_rollback_through_the_proxy_reaches_every_replica_in_time(stack: Stack) -> None:
    if STATE.get("retrained") is None:
        pytest.skip("needs the retrained version of the test before")
    bundled = _bundled_version()
    watchers = Watchers(stack)
    try:
        status, _, body = stack.request("POST", f"/v1/models/{bundled}/activate",
                                        token=stack.token)
        assert status == 200, body
        assert body["active"] == bundled and body["previous"] == STATE["retrained"]
        time.sleep(SWAP_BOUND + 0.5)
    finally:
        readings = watchers.stop()
    lags = _assert_all_switched(stack, readings, bundled)
    print(f"rollback: replicas switched {lags} s after CURRENT changed (bound {SWAP_BOUND} s)")


# --- nothing behind the proxy (last: stops the replicas) ------------------------------------------


def test_no_replica_ready_is_a_503_in_the_services_shapes(stack: Stack) -> None:
    stack.compose_run("stop", "--timeout", "10", "api")
    stack.wait_replicas_up(0, timeout=15)
    status, headers, body = stack.request("POST", "/v1/predict", {"a": 1, "b": 2})
    assert status == 503, body
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == "urn:rnnadd:problem:service-unavailable" and body["status"] == 503
    assert body["request_id"] == headers["x-request-id"]
    assert headers.get("retry-after") == "1"
    status, headers, body = stack.request("POST", "/v2/models/rnnadd/infer", {"inputs": []})
    assert status == 503, body
    assert headers["content-type"] == "application/json"
    assert set(body) == {"error"}, body
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    stack.wait_replicas_up(0, timeout=15, backend="grpc")
    client = grpcclient.InferenceServerClient(stack.grpc)
    with pytest.raises(InferenceServerException) as info:
        client.infer("rnnadd", _pair_inputs([1], [2]), client_timeout=10)
    client.close()
    assert info.value.status() == "StatusCode.UNAVAILABLE", info.value.message()
