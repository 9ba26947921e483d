"""The /v1/retrain and /v1/jobs routes: thin wrappers over JobManager, checked over HTTP."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from service import jobs
from service.app import create_app
from service.jobs import ACTIVE, JobFiles
from tests.conftest import STORAGE_ERRORS, Contract
from tests.test_jobs import (
    BAD_PARAMS,
    hold_train_lock,
    job_id_at,
    long_job,
    process_gone,
    record_of,
    tmp_leftovers,
)
from tests.test_metrics import samples
from training.store import is_version

PROBLEM = "application/problem+json"


def wait_job(client, job_id: str, timeout: float = 120.0) -> dict:
    """Poll the job over HTTP until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/v1/jobs/{job_id}").get_json()
        if record["status"] not in ACTIVE:
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


def wait_running(client, job_id: str, timeout: float = 60.0) -> dict:
    """Poll until the trainer has reported progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/v1/jobs/{job_id}").get_json()
        if record["status"] == "running" and record["progress"]["step"] > 0:
            return record
        assert record["status"] in ACTIVE, record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start within {timeout} s")


def is_problem(response, status: int) -> dict:
    """The response is an RFC 9457 problem of this status; its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["detail"] and body["type"].startswith("urn:")
    return body


def versions(model_dir: Path) -> list[str]:
    """Stored version directories."""
    return sorted(p.name for p in model_dir.iterdir() if is_version(p.name))


def test_retrain_is_accepted_with_a_location_and_can_be_followed(
    client, auth, contract: Contract, store
) -> None:
    before = store.current()
    response = client.post("/v1/retrain", json={"max_steps": 2, "activate": False}, headers=auth)
    contract.check(response, "/v1/retrain", "POST")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"/v1/jobs/{body['job_id']}"
    record = wait_job(client, body["job_id"])
    assert record["id"] == body["job_id"] and record["params"]["max_steps"] == 2
    assert record["status"] == "succeeded", record
    contract.check(client.get(response.headers["Location"]), "/v1/jobs/{job_id}")
    listing = client.get("/v1/jobs")
    contract.check(listing, "/v1/jobs")
    assert [j["id"] for j in listing.get_json()["jobs"]] == [body["job_id"]]
    assert store.current() == before  # activate: false


def test_retrain_without_a_body_is_not_a_bad_request(client, auth, model_dir: Path) -> None:
    lock = hold_train_lock(model_dir)  # keep it from training
    try:
        response = client.post("/v1/retrain", headers=auth)
        is_problem(response, 409)  # the body was accepted; the lock was not free
    finally:
        os.close(lock)


def test_a_second_retrain_while_one_runs_is_409(client, auth, model_dir: Path, contract) -> None:
    lock = hold_train_lock(model_dir)
    try:
        response = client.post("/v1/retrain", json={}, headers=auth)
        contract.check(response, "/v1/retrain", "POST")
        is_problem(response, 409)
    finally:
        os.close(lock)
    assert not JobFiles(model_dir).ids()


@pytest.mark.parametrize(("body", "field"), BAD_PARAMS)
def test_bad_retrain_params_are_400(client, auth, body: dict, field: str) -> None:
    """Finding 4: e.g. learning_rate a 400-digit integer was a 500 (OverflowError)."""
    data = json.dumps(body)  # NaN and Infinity as Python's json writes them, which Flask reads
    response = client.post("/v1/retrain", data=data, content_type="application/json",
                           headers=auth)
    assert is_problem(response, 400)["field"] == field


def test_a_400_digit_learning_rate_is_a_400(client, auth, contract) -> None:
    data = '{"learning_rate": 1' + "0" * 399 + "}"
    response = client.post("/v1/retrain", data=data, content_type="application/json",
                           headers=auth)
    body = is_problem(response, 400)
    assert body["field"] == "learning_rate" and "learning_rate" in body["detail"]
    contract.check(response, "/v1/retrain", "POST")


def test_a_job_of_unbounded_work_is_refused(client, auth, model_dir: Path) -> None:
    """Finding 8: hidden 256 x batch 4096 x 100,000 steps (about 20 hours of a core)."""
    lock = hold_train_lock(model_dir)  # never start it, whatever the answer
    try:
        response = client.post("/v1/retrain", headers=auth, json={
            "hidden_size": 256, "batch_size": 4096, "max_steps": 100_000})
    finally:
        os.close(lock)
    assert is_problem(response, 400)["field"]


@pytest.mark.parametrize(("data", "content_type", "status"), [
    ("[1, 2]", "application/json", 400), ("{", "application/json", 400),
    ("max_steps=3", "application/x-www-form-urlencoded", 415),
])
def test_retrain_body_must_be_a_json_object(client, auth, data, content_type, status) -> None:
    response = client.post("/v1/retrain", data=data, content_type=content_type, headers=auth)
    is_problem(response, status)


def test_retrain_and_cancel_need_the_admin_token(client, model_dir: Path) -> None:
    files = JobFiles(model_dir)
    files.dir.mkdir()
    job_id = job_id_at(1)
    files.write(record_of(job_id, "running"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        assert client.post("/v1/retrain", json={}, headers=headers).status_code == 401
        response = client.delete(f"/v1/jobs/{job_id}", headers=headers)
        is_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not files.path(job_id, ".cancel").exists()


def test_admin_routes_are_403_when_no_token_is_configured(model_dir: Path) -> None:
    client = create_app({"MODEL_DIR": str(model_dir), "TESTING": True}).test_client()
    auth = {"Authorization": "Bearer anything"}
    is_problem(client.post("/v1/retrain", json={}, headers=auth), 403)
    is_problem(client.delete(f"/v1/jobs/{job_id_at(1)}", headers=auth), 403)


def test_cancel_unknown_or_finished_jobs(client, auth, model_dir: Path) -> None:
    for job_id in ("20261129T000000Z-000000", "nope", "..%2F..%2Fetc"):
        assert is_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 404)
    files = JobFiles(model_dir)
    files.dir.mkdir()
    for i, status in enumerate(("succeeded", "failed", "rejected", "cancelled")):
        files.write(record_of(job_id_at(i), status))
        body = is_problem(client.delete(f"/v1/jobs/{job_id_at(i)}", headers=auth), 409)
        assert status in body["detail"]
        assert files.read(job_id_at(i))["status"] == status
    assert client.put(f"/v1/jobs/{job_id_at(0)}", headers=auth).status_code == 405


def test_cancel_a_running_job_over_http(client, auth, model_dir: Path) -> None:
    """Finding 8: the process ends, the job reads cancelled, the lock is free, nothing stays."""
    before = versions(model_dir)
    accepted = client.post("/v1/retrain", json=long_job(), headers=auth)
    assert accepted.status_code == 202
    job_id = accepted.get_json()["job_id"]
    running = wait_running(client, job_id)
    response = client.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert response.status_code == 200, response.get_json()
    record = response.get_json()
    assert record["id"] == job_id and record["status"] == "cancelled"
    assert record["finished_at"] and record["model_version"] is None
    assert process_gone(running["pid"], timeout=0.5), "the trainer has exited"
    assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    assert versions(model_dir) == before, "no new version"
    assert tmp_leftovers(model_dir) == []
    assert is_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 409)
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert found[("rnnadd_retrain_jobs_total", (("outcome", "cancelled"),))] == 1
    assert found[("rnnadd_retrain_jobs_active", ())] == 0

    again = client.post("/v1/retrain", json={"max_steps": 2, "activate": False}, headers=auth)
    assert again.status_code == 202, "the training lock is free at once"
    assert wait_job(client, again.get_json()["job_id"])["status"] == "succeeded"


def test_cancel_still_stopping_is_202(client, auth, app, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")  # holds the locks, never reads the cancel
    fake.chmod(0o755)
    manager = app.extensions["rnnadd"].jobs
    monkeypatch.setattr(manager, "python", str(fake))
    monkeypatch.setattr(jobs, "CANCEL_WAIT", 0.2)
    job_id = client.post("/v1/retrain", json={}, headers=auth).get_json()["job_id"]
    proc = manager._children[job_id]
    try:
        response = client.delete(f"/v1/jobs/{job_id}", headers=auth)
        assert response.status_code == 202
        assert response.get_json()["status"] in ACTIVE
        assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    finally:
        proc.kill()
        proc.wait()
    assert wait_job(client, job_id)["status"] == "failed"  # died without finishing


def test_unknown_job_is_404(client, contract: Contract) -> None:
    for job_id in ("20261129T000000Z-000000", "nope", "..%2F..%2Fetc"):
        response = client.get(f"/v1/jobs/{job_id}")
        is_problem(response, 404)
    contract.check(response, "/v1/jobs/{job_id}")


@pytest.mark.parametrize("limit", ["0", "501", "-1", "x", "1.5", "\u0661"])
def test_job_list_limit_is_bounded(client, limit: str) -> None:
    response = client.get(f"/v1/jobs?limit={limit}")
    assert is_problem(response, 400)["field"] == "limit"


def test_job_list_limit(client, model_dir: Path) -> None:
    files = JobFiles(model_dir)
    files.dir.mkdir()
    for i in range(3):
        files.write(record_of(job_id_at(i), "failed"))
    body = client.get("/v1/jobs?limit=2").get_json()
    assert [j["id"] for j in body["jobs"]] == [job_id_at(2), job_id_at(1)]
    assert "unreadable" not in body


@pytest.mark.parametrize("damage", [
    {"status": "failed"},                                     # valid JSON without an id
    {"id": "20261129T000000Z-ffffff", "status": "failed"},    # another job's id
    {"id": None, "status": "nonsense"},                       # id fixed below, bad status
    "{not json",
])
def test_a_damaged_record_does_not_break_the_job_routes(
    client, auth, model_dir: Path, damage: Any
) -> None:
    """Finding 6: one bad record made /v1/jobs and /v1/jobs/<id> 500 and emptied /metrics."""
    files = JobFiles(model_dir)
    files.dir.mkdir()
    good = record_of(job_id_at(1), "succeeded")
    files.write(good)
    files.count_outcome("succeeded")
    bad = job_id_at(2)
    if isinstance(damage, dict) and damage.get("id", "") is None:
        damage = {**damage, "id": bad}
    files.path(bad, ".json").write_text(damage if isinstance(damage, str) else json.dumps(damage))

    listing = client.get("/v1/jobs")
    assert listing.status_code == 200
    body = listing.get_json()
    assert [j["id"] for j in body["jobs"]] == [good["id"]]
    assert [u["id"] for u in body["unreadable"]] == [bad] and body["unreadable"][0]["error"]

    body = is_problem(client.get(f"/v1/jobs/{bad}"), 409)
    assert bad in body["detail"]
    assert client.get(f"/v1/jobs/{good['id']}").get_json() == good
    is_problem(client.delete(f"/v1/jobs/{bad}", headers=auth), 409)

    found = samples(client.get("/metrics").get_data(as_text=True))
    assert found[("rnnadd_retrain_jobs_total", (("outcome", "succeeded"),))] == 1
    assert found[("rnnadd_retrain_jobs_total", (("outcome", "failed"),))] == 0
    assert found[("rnnadd_retrain_jobs_active", ())] == 0


@pytest.mark.parametrize(("code", "status", "cause"), STORAGE_ERRORS)
def test_retrain_on_a_read_only_or_full_model_directory(
    client, auth, model_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int, status: int,
    cause: str,
) -> None:
    """Finding 7: 503 (read-only) or 507 (full) naming the cause; serving goes on."""
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(model_dir)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def refusing_write(path: Any, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    for patch in ((os, "open", refusing_open), (jobs, "atomic_write", refusing_write)):
        with monkeypatch.context() as m:
            m.setattr(*patch)
            response = client.post("/v1/retrain", json={"max_steps": 2}, headers=auth)
            body = is_problem(response, status)
            assert cause in body["detail"] and os.strerror(code) in body["detail"]
            assert str(model_dir) not in body["detail"], "no server paths in answers"
            predicted = client.post("/v1/predict", json={"a": 2, "b": 3})
            assert predicted.status_code == 200 and predicted.get_json()["decimal"] == 5
            assert client.get("/v1/jobs").status_code == 200
            assert client.get("/metrics").status_code == 200
    assert JobFiles(model_dir).ids() == []
    assert [n for n in os.listdir(model_dir / "jobs") if n.endswith(".lock")] == []
    os.close(hold_train_lock(model_dir))  # and the training lock is free again
