"""Container tests: build the image and use the compose stack as an operator and a client would.

They need a Docker engine and Docker Compose (`docker compose` or `docker-compose`). Without them
they are skipped, except in CI (`CI=true`) or with `REQUIRE_DOCKER=1`, where they fail, so a broken
image can never pass unnoticed. The base image comes from `RNNADD_PYTHON_IMAGE` or `PYTHON_IMAGE`
when set (scripts/offline-base-image.sh builds one where no registry is reachable).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = "/var/lib/rnnadd/models"
IMAGE = "rnnadd:test"
BUILD_TIMEOUT = 1200.0
COMPOSE_TIMEOUT = 180.0
HEALTHY_TIMEOUT = 150.0
JOB_TIMEOUT = 600.0
HTTP_TIMEOUT = 15.0
TERMINAL = {"succeeded", "failed", "rejected"}


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


def _free_port() -> int:
    """A port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _compose_env(project: str, port: int, token: str) -> dict[str, str]:
    """The caller's environment without its rnnadd settings, plus this stack's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RNNADD_") and k not in {"WEB_CONCURRENCY", "PYTHON_IMAGE"}
    }
    env.update(
        COMPOSE_PROJECT_NAME=project,
        RNNADD_PORT=str(port),
        RNNADD_ADMIN_TOKEN=token,
        RNNADD_IMAGE=IMAGE,
        WEB_CONCURRENCY="2",
    )
    base = os.environ.get("RNNADD_PYTHON_IMAGE") or os.environ.get("PYTHON_IMAGE")
    if base:
        env["PYTHON_IMAGE"] = base
    return env


@dataclass
class Stack:
    """A compose project of the service, reached on 127.0.0.1:port."""

    compose: list[str]
    project: str
    port: int
    token: str
    env: dict[str, str] = field(repr=False)

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

    def container(self) -> str:
        """Id of the api service's container."""
        cid = self.compose_run("ps", "-q", "api").strip()
        if not cid:
            pytest.fail(f"the api container of {self.project} does not exist\n{self.logs()}")
        return cid.splitlines()[0]

    def logs(self) -> str:
        """Last lines of the service's log, for failure messages."""
        cmd = [*self.compose, "-p", self.project, "logs", "--no-color", "--tail", "60", "api"]
        try:
            result = _run(cmd, 60, self.env)
        except subprocess.TimeoutExpired:
            return "(compose logs timed out)"
        return result.stdout[-6000:] + result.stderr[-2000:]

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a docker command with a bound on its time."""
        return _run(["docker", *args], timeout)

    def wait_healthy(self) -> None:
        """Wait until Docker reports the container healthy; fail early if it stops."""
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        status = "unknown"
        while time.monotonic() < deadline:
            cid = self.container()
            inspect = self.docker(
                "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", cid
            )
            state, _, status = inspect.stdout.strip().partition(" ")
            if status == "healthy":
                return
            if state in {"exited", "dead"}:
                pytest.fail(f"the api container stopped ({state})\n{self.logs()}")
            time.sleep(1)
        pytest.fail(f"not healthy within {HEALTHY_TIMEOUT:.0f} s (health: {status})\n{self.logs()}")

    def request(
        self, method: str, path: str, body: object | None = None, token: str | None = None
    ) -> tuple[int, dict[str, str], object]:
        """Send one HTTP request to the published port; return status, headers and JSON body."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                status, headers, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, headers, raw = err.code, dict(err.headers), err.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return status, headers, payload


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Build the image and start a fresh compose project with an empty model volume."""
    problem = _docker_problem()
    if problem is not None:
        message = f"container tests need Docker: {problem}"
        if _docker_required():
            pytest.fail(f"{message} (required because CI=true or REQUIRE_DOCKER=1)")
        pytest.skip(f"{message}; set REQUIRE_DOCKER=1 to make this a failure")
    compose = _compose_command()
    assert compose is not None
    project = f"rnnaddtest{secrets.token_hex(4)}"
    port = _free_port()
    token = secrets.token_urlsafe(24)
    env = _compose_env(project, port, token)
    stack = Stack(compose, project, port, token, env)
    try:
        stack.compose_run("build", "api", timeout=BUILD_TIMEOUT)
        stack.compose_run("up", "-d", "api")
        stack.wait_healthy()
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


def test_runs_as_non_root(stack: Stack) -> None:
    result = stack.docker("exec", stack.container(), "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "0"


def test_empty_volume_was_seeded_with_the_bundled_model(stack: Stack) -> None:
    bundled = _bundled_version()
    cid = stack.container()
    current = stack.docker("exec", cid, "cat", f"{MODEL_DIR}/CURRENT")
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == bundled
    record = stack.docker("exec", cid, "test", "-f", f"{MODEL_DIR}/{bundled}/model.json")
    assert record.returncode == 0, f"{bundled} was not copied into the volume"
    assert "seeded" in stack.logs()
    status, _, body = stack.request("GET", "/v1/model")
    assert status == 200, body
    assert body["version"] == bundled


def test_readyz_names_the_served_model(stack: Stack) -> None:
    status, _, body = stack.request("GET", "/readyz")
    assert status == 200, body
    assert _bundled_version() in json.dumps(body)


def test_predict_single_and_batch(stack: Stack) -> None:
    status, _, body = stack.request("POST", "/v1/predict", {"a": 3, "b": 5})
    assert status == 200, body
    assert body["decimal"] == 8
    assert body["correct"] is True
    assert body["binary"] == "00001000"
    assert body["model_version"] == _bundled_version()

    status, _, body = stack.request("POST", "/v1/predict/batch", {"pairs": [[3, 5], [100, 27]]})
    assert status == 200, body
    assert [r["decimal"] for r in body["results"]] == [8, 127]
    assert body["accuracy"] == 1.0


def test_retrain_needs_the_token(stack: Stack) -> None:
    status, headers, body = stack.request("POST", "/v1/retrain", {"max_steps": 10})
    assert status == 401, body
    assert "bearer" in headers.get("WWW-Authenticate", "").lower()
    status, _, body = stack.request("POST", "/v1/retrain", {"max_steps": 10}, token="wrong")
    assert status == 401, body


def _wait_for_job(stack: Stack, job_id: str) -> dict:
    """Poll a retrain job until it ends, within JOB_TIMEOUT."""
    deadline = time.monotonic() + JOB_TIMEOUT
    job: dict = {}
    while time.monotonic() < deadline:
        status, _, job = stack.request("GET", f"/v1/jobs/{job_id}")
        assert status == 200, job
        if job["status"] in TERMINAL:
            return job
        time.sleep(1)
    pytest.fail(f"job {job_id} did not finish within {JOB_TIMEOUT:.0f} s: {job}\n{stack.logs()}")


def _wait_for_version(stack: Stack, version: str, timeout: float = 30.0) -> None:
    """Wait until GET /v1/model reports the version (hot swap takes up to a reload interval)."""
    deadline = time.monotonic() + timeout
    body: object = None
    while time.monotonic() < deadline:
        status, _, body = stack.request("GET", "/v1/model")
        if status == 200 and body["version"] == version:
            return
        time.sleep(0.5)
    pytest.fail(f"/v1/model did not report {version} within {timeout:.0f} s: {body}")


def test_retrained_model_is_served_and_survives_a_restart(stack: Stack) -> None:
    status, headers, body = stack.request(
        "POST", "/v1/retrain", {"max_steps": 2000, "seed": 1}, token=stack.token
    )
    assert status == 202, body
    job_id = body["job_id"]
    assert headers.get("Location", "").endswith(f"/v1/jobs/{job_id}")

    job = _wait_for_job(stack, job_id)
    assert job["status"] == "succeeded", f"{job}\n{stack.logs()}"
    version = job["model_version"]
    assert version and version != _bundled_version()
    _wait_for_version(stack, version)
    for _ in range(6):  # two workers: several requests reach both
        status, _, body = stack.request("POST", "/v1/predict", {"a": 3, "b": 5})
        assert status == 200, body
        assert body["model_version"] == version

    stack.compose_run("down", "--timeout", "20")
    stack.compose_run("up", "-d", "api")
    stack.wait_healthy()
    status, _, body = stack.request("GET", "/v1/model")
    assert status == 200, body
    assert body["version"] == version
    status, _, body = stack.request("GET", f"/v1/jobs/{job_id}")
    assert status == 200, body
    assert body["status"] == "succeeded"
