"""rnnadd_client (the installed distribution): retry policy, typed errors and the CLI's parsing,
then the client and the `rnnadd` command against a real gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from rnnadd_client import (
    Client,
    ClientError,
    JobTimeout,
    RequestError,
    ServerError,
    TransportError,
)
from rnnadd_client.cli import build_parser

from tests import servers
from tests.conftest import clone_version
from training.store import ModelStore

RNNADD = Path(sys.executable).with_name("rnnadd")  # the console script installed beside python


class FakeResponse:
    """Just enough of requests.Response for the client."""

    def __init__(self, status: int, body: object, reason: str = "") -> None:
        self.status_code, self._body, self.reason = status, body, reason
        self.text = body if isinstance(body, str) else json.dumps(body)

    def json(self) -> object:
        if isinstance(self._body, str):
            raise ValueError("not JSON")
        return self._body


def scripted(client: Client, outcomes: list[object]) -> list[str]:
    """Make the client's session answer from a script; returns the calls made."""
    calls: list[str] = []

    def request(method: str, url: str, **kwargs: object) -> object:
        calls.append(f"{method} {url}")
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    client.session.request = request  # type: ignore[method-assign]
    return calls


def test_idempotent_calls_retry_connection_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    client = Client("http://127.0.0.1:9", retries=3)
    refused = requests.ConnectionError("refused")
    calls = scripted(client, [refused, refused, FakeResponse(200, {"decimal": 8})])
    assert client.predict(3, 5) == {"decimal": 8}
    assert len(calls) == 3
    calls = scripted(client, [refused] * 4)
    with pytest.raises(TransportError) as info:
        client.model()
    assert len(calls) == 4 and info.value.status is None


@pytest.mark.parametrize("call", [lambda c: c.retrain(), lambda c: c.activate("v")])
def test_state_changing_calls_never_retry(monkeypatch: pytest.MonkeyPatch, call) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    client = Client("http://127.0.0.1:9", retries=3)
    calls = scripted(client, [requests.ConnectionError("reset"), FakeResponse(202, {})])
    with pytest.raises(TransportError):
        call(client)
    assert len(calls) == 1


def test_read_timeouts_are_not_retried() -> None:
    client = Client("http://127.0.0.1:9", retries=3)
    calls = scripted(client, [requests.ReadTimeout("slow"), FakeResponse(200, {})])
    with pytest.raises(TransportError, match="timed out"):
        client.models()
    assert len(calls) == 1


def test_problem_details_become_typed_errors() -> None:
    client = Client("http://127.0.0.1:9/")
    problem = {"type": "urn:rnnadd:problem:bad-request", "title": "Bad Request", "status": 400,
               "detail": "a must be non-negative", "field": "a"}
    scripted(client, [FakeResponse(400, problem), FakeResponse(503, "<html>down</html>", "Gone"),
                      FakeResponse(200, "not json")])
    with pytest.raises(RequestError) as info:
        client.predict(-1, 2)
    error = info.value
    assert (error.status, error.title, error.field) == (400, "Bad Request", "a")
    assert error.detail == "a must be non-negative" and error.type.endswith("bad-request")
    assert str(error) == "400 Bad Request: a must be non-negative (field: a)"
    with pytest.raises(ServerError) as info:
        client.ready()
    assert info.value.status == 503 and "down" in info.value.detail
    with pytest.raises(ServerError, match="invalid JSON"):
        client.health()


def test_retrain_wait_polls_until_terminal_or_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    client = Client("http://x")
    accepted = FakeResponse(202, {"job_id": "j1", "status": "queued"})
    running = FakeResponse(200, {"id": "j1", "status": "running"})
    calls = scripted(client, [accepted, running, running,
                              FakeResponse(200, {"id": "j1", "status": "rejected"})])
    assert client.retrain(wait=True, max_steps=5)["status"] == "rejected"
    assert calls == ["POST http://x/v1/retrain"] + ["GET http://x/v1/jobs/j1"] * 3
    scripted(client, [accepted] + [running] * 3)
    with pytest.raises(JobTimeout) as info:
        client.retrain(wait=True, timeout=0.0)
    assert info.value.body["status"] == "running"


def test_cancel_activate_and_trace_send_what_the_server_expects() -> None:
    client = Client("http://x", token="t")
    sent: list[tuple[str, str, object]] = []

    def request(method: str, url: str, **kwargs: object) -> FakeResponse:
        sent.append((method, url, kwargs["json"]))
        assert kwargs["headers"]["Authorization"] == "Bearer t"  # type: ignore[index]
        return FakeResponse(200, {})

    client.session.request = request  # type: ignore[method-assign]
    client.cancel("j/1")
    client.activate("v1", force=True)
    client.activate("v1")
    client.predict("12345678901234567890", 1, trace=True)
    assert sent == [
        ("DELETE", "http://x/v1/jobs/j%2F1", None),
        ("POST", "http://x/v1/models/v1/activate", {"force": True}),
        ("POST", "http://x/v1/models/v1/activate", {}),
        ("POST", "http://x/v1/predict", {"a": "12345678901234567890", "b": 1, "trace": True}),
    ]


def test_cli_passes_retrain_parameters_through_without_bounds() -> None:
    from rnnadd_client.cli import retrain_params

    args = build_parser().parse_args(
        ["retrain", "--hidden-size", "100000", "--seed", "3", "--no-activate",
         "--param", "learning_rate=0.5", "--param", "optimizer=adam", "--param", "new-knob=true"])
    assert retrain_params(args) == {"hidden_size": 100000, "seed": 3, "activate": False,
                                    "learning_rate": 0.5, "optimizer": "adam", "new_knob": True}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["retrain", "--param", "no-equals-sign"])


def test_every_subcommand_and_flag_has_help() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    assert set(commands.choices) >= {"predict", "batch", "model", "models", "retrain", "activate",
                                     "jobs", "job", "cancel", "health", "ready"}
    listed = {choice.dest for choice in commands._choices_actions}
    assert listed == set(commands.choices), "a subcommand without a help line"
    for name, sub in commands.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_the_package_stands_alone(tmp_path: Path) -> None:
    """Imported from outside the checkout, it needs neither service nor training."""
    code = ("import sys, rnnadd_client; "
            "assert not {'service', 'training', 'flask', 'numpy'} & set(sys.modules), "
            "sorted(sys.modules); print(rnnadd_client.__version__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    helped = subprocess.run([str(RNNADD), "cancel", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "stop a queued or running retrain job" in helped.stdout


# --- against a real gunicorn with 2 workers ---------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """One server for this module; tests leave no job running behind them."""
    with servers.running_server(tmp_path_factory.mktemp("client")) as running:
        yield running


@pytest.fixture
def admin(server: servers.Server) -> Iterator[Client]:
    """A client with the admin token."""
    with Client(server.url, token=server.token, timeout=10) as client:
        yield client


def cli(server: servers.Server, *args: str, token: bool = True) -> subprocess.CompletedProcess:
    """Run the installed `rnnadd` command against the server, from outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("RNNADD_ADMIN_TOKEN", "RNNADD_URL")}
    if token:
        env["RNNADD_ADMIN_TOKEN"] = server.token
    cmd = [str(RNNADD), "--url", server.url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=server.model_dir.parent)


def serve_everywhere(server: servers.Server, client: Client, version: str) -> None:
    """Every answer names version, and both workers are seen serving it (bounded requests)."""
    time.sleep(0.5)  # past RNNADD_RELOAD_INTERVAL, so each worker re-reads CURRENT first
    for _ in range(200):
        assert client.predict(3, 5)["model_version"] == version
        if len(servers.worker_pids_serving(server, version)) >= 2:
            return
    raise AssertionError(f"not every worker reported serving {version}")


@pytest.mark.integration
def test_predict_and_batch(server: servers.Server) -> None:
    with Client(server.url) as client:
        answer = client.predict(3, 5)
        assert answer["decimal"] == 8 and answer["correct"] is True
        assert client.predict(3, 5, bits=12)["binary"] == "000000001000"
        big = client.predict(str(2**100), "1")
        assert big["decimal"] == 2**100 + 1
        batch = client.predict_batch([(3, 5), (100, 27)])
        assert [r["decimal"] for r in batch["results"]] == [8, 127]


@pytest.mark.integration
def test_reads(server: servers.Server) -> None:
    with Client(server.url) as client:
        model = client.model()
        assert model["version"] in json.dumps(client.models())
        assert client.health() is not None
        assert client.ready() is not None
        assert isinstance(client.jobs(), dict | list)


@pytest.mark.integration
def test_typed_errors_from_the_server(server: servers.Server) -> None:
    with Client(server.url) as anonymous, Client(server.url, token="wrong") as wrong:
        with pytest.raises(RequestError) as info:
            anonymous.predict(-1, 5)
        assert info.value.status == 400 and info.value.field == "a"
        assert info.value.title and info.value.type
        for call in (anonymous.retrain, wrong.retrain):
            with pytest.raises(RequestError) as info:
                call()
            assert info.value.status == 401
        with pytest.raises(RequestError) as info:
            anonymous.job("20260101T000000Z-00000000")
        assert info.value.status == 404
    with Client(server.url, token=server.token) as admin_client:
        with pytest.raises(RequestError) as info:
            admin_client.activate("20260101T000000Z-abcdef")
        assert info.value.status == 404
        with pytest.raises(RequestError) as info:
            admin_client.retrain(hidden_size=1000)
        assert (info.value.status, info.value.field) == (400, "hidden_size")
    with Client(f"http://127.0.0.1:{servers.free_port()}", retries=1) as nowhere:
        with pytest.raises(TransportError) as transport:
            nowhere.model()
        assert isinstance(transport.value, ClientError)


@pytest.mark.integration
def test_retrain_reaches_every_worker_and_rollback_too(
    server: servers.Server, admin: Client
) -> None:
    old = admin.model()["version"]
    job = admin.retrain(wait=True, timeout=120, poll_interval=0.1, seed=11)
    assert job["status"] == "succeeded", job
    new = job["model_version"]
    assert new != old
    serve_everywhere(server, admin, new)
    assert admin.model()["version"] == new
    admin.activate(old)
    serve_everywhere(server, admin, old)


@pytest.mark.integration
def test_cancel_stops_a_running_job(server: servers.Server, admin: Client) -> None:
    live = admin.model()["version"]
    slow = {"optimizer": "sgd", "learning_rate": 1e-6, "batch_size": 1, "max_steps": 100_000,
            "check_every": 100}
    job_id = admin.retrain(**slow)["job_id"]
    try:
        answer = admin.cancel(job_id)
        assert answer["id"] == job_id
    finally:
        done = servers.wait_job(server, job_id)
    assert done["status"] == "cancelled", done
    with pytest.raises(RequestError) as info:
        admin.cancel(job_id)
    assert info.value.status == 409, "a job that has ended cannot be cancelled"
    with Client(server.url) as anonymous, pytest.raises(RequestError) as info:
        anonymous.cancel(job_id)
    assert info.value.status == 401
    assert admin.model()["version"] == live


@pytest.mark.integration
def test_second_retrain_during_the_first_is_409(server: servers.Server, admin: Client) -> None:
    live = admin.model()["version"]
    slow = {"optimizer": "sgd", "learning_rate": 1e-6, "batch_size": 1, "max_steps": 3000}
    first = admin.retrain(**slow)
    assert first["status"] == "queued"
    try:
        for _ in range(3):
            with pytest.raises(RequestError) as info:
                admin.retrain(max_steps=5)
            assert info.value.status == 409
        with Client(server.url) as other:  # whichever worker answers, the lock is shared
            statuses = {other.job(first["job_id"])["status"] for _ in range(6)}
        assert statuses <= {"queued", "running", "rejected"}
    finally:
        done = servers.wait_job(server, first["job_id"])
    assert done["status"] == "rejected", done  # the gate: far below 100% accuracy
    assert done["metrics"]["accuracy_8bit"] < 1.0
    assert admin.model()["version"] == live
    assert admin.retrain(wait=True, timeout=120, poll_interval=0.1, activate=False)[
        "status"] == "succeeded", "the lock is free once the job has ended"


@pytest.mark.integration
def test_a_reader_that_leaves_early_gets_no_traceback(server: servers.Server) -> None:
    """`rnnadd models | head`: the write to a closed pipe ends the command quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([str(RNNADD), "--url", server.url, "models"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr
    assert done.returncode == 1


@pytest.mark.integration
def test_cli(server: servers.Server) -> None:
    done = cli(server, "predict", "3", "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["decimal"] == 8
    done = cli(server, "batch", "3,5", "100,27")
    assert [r["decimal"] for r in json.loads(done.stdout)["results"]] == [8, 127]
    model = json.loads(cli(server, "model").stdout)
    assert model["version"] in cli(server, "models").stdout

    bad = cli(server, "predict", "3", "5", "--bits", "1")
    assert bad.returncode == 1 and bad.stderr.startswith("error: 400")
    denied = cli(server, "retrain", token=False)
    assert denied.returncode == 1 and "401" in denied.stderr
    assert cli(server, "batch", "3;5").returncode == 2  # usage error, caught locally

    trained = cli(server, "retrain", "--wait", "--poll-interval", "0.1", "--no-activate",
                  "--max-steps", "200", "--seed", "5")
    assert trained.returncode == 0, trained.stderr
    job = json.loads(trained.stdout)
    assert job["status"] == "succeeded" and job["params"]["activate"] is False
    assert json.loads(cli(server, "job", job["id"]).stdout)["model_version"] == job["model_version"]
    assert job["id"] in cli(server, "jobs").stdout
    assert json.loads(cli(server, "jobs", "--limit", "1").stdout)["jobs"][0]["id"] == job["id"]
    activated = cli(server, "activate", job["model_version"])
    assert activated.returncode == 0, activated.stderr
    serve_everywhere(server, Client(server.url), job["model_version"])
    assert cli(server, "activate", model["version"]).returncode == 0
    missing = cli(server, "job", "20260101T000000Z-00000000")
    assert missing.returncode == 1 and "404" in missing.stderr
    ended = cli(server, "cancel", job["id"])
    assert ended.returncode == 1 and ended.stderr.startswith("error: 409"), ended.stderr


@pytest.mark.integration
def test_models_pages_through_every_stored_version(tmp_path: Path) -> None:
    """limit/after reach every version, and all_models() follows next_after to the end."""
    with servers.running_server(tmp_path) as running, Client(running.url) as client:
        store = ModelStore(running.model_dir)
        for _ in range(4):
            clone_version(store)
        versions = [r["version"] for r in store.versions()]  # oldest first, as listed
        assert len(versions) == 5
        first = client.models(limit=2)
        assert [m["version"] for m in first["models"]] == versions[:2]
        second = client.models(limit=2, after=first["next_after"])
        assert [m["version"] for m in second["models"]] == versions[2:4]
        assert [m["version"] for m in client.all_models()] == versions
