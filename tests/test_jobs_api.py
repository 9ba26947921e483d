"""The /v1/retrain and /v1/jobs routes: thin wrappers over JobManager, checked over HTTP."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service import jobfiles
from tests.conftest import Contract

TERMINAL = ("succeeded", "failed", "rejected")


def wait_job(client, job_id: str, timeout: float = 60.0) -> dict:
    """Poll the job over HTTP until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/v1/jobs/{job_id}").get_json()
        if record["status"] in TERMINAL:
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


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
    contract.check(client.get(response.headers["Location"]), "/v1/jobs/{job_id}")
    listing = client.get("/v1/jobs")
    contract.check(listing, "/v1/jobs")
    assert [j["id"] for j in listing.get_json()["jobs"]] == [body["job_id"]]
    assert store.current() == before  # activate: false


def test_retrain_without_a_body_is_not_a_bad_request(client, auth, model_dir: Path) -> None:
    lock = jobfiles.try_lock(jobfiles.train_lock_path(model_dir))  # keep it from training
    try:
        response = client.post("/v1/retrain", headers=auth)
        assert response.status_code == 409  # the body was accepted; the lock was not free
    finally:
        os.close(lock)


def test_a_second_retrain_while_one_runs_is_409(client, auth, model_dir: Path, contract) -> None:
    lock = jobfiles.try_lock(jobfiles.train_lock_path(model_dir))
    try:
        response = client.post("/v1/retrain", json={}, headers=auth)
        contract.check(response, "/v1/retrain", "POST")
        assert response.status_code == 409
        assert response.mimetype == "application/problem+json"
    finally:
        os.close(lock)


@pytest.mark.parametrize(("body", "field"), [
    ({"hidden_size": 0}, "hidden_size"), ({"max_steps": 100_001}, "max_steps"),
    ({"batch_size": 5000}, "batch_size"), ({"learning_rate": -1}, "learning_rate"),
    ({"optimizer": "magic"}, "optimizer"), ({"activate": "yes"}, "activate"),
    ({"epochs": 3}, "epochs"), ({"bits": 1.5}, "bits"),
])
def test_bad_retrain_params_are_400(client, auth, contract, body: dict, field: str) -> None:
    response = client.post("/v1/retrain", json=body, headers=auth)
    contract.check(response, "/v1/retrain", "POST")
    assert response.status_code == 400 and response.get_json()["field"] == field


@pytest.mark.parametrize(("data", "content_type", "status"), [
    ("[1, 2]", "application/json", 400), ("{", "application/json", 400),
    ("max_steps=3", "application/x-www-form-urlencoded", 415),
])
def test_retrain_body_must_be_a_json_object(client, auth, data, content_type, status) -> None:
    response = client.post("/v1/retrain", data=data, content_type=content_type, headers=auth)
    assert response.status_code == status


def test_unknown_job_is_404(client, contract: Contract) -> None:
    for job_id in ("20261129T000000Z-00000000", "nope", "..%2F..%2Fetc"):
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404 and response.mimetype == "application/problem+json"
    contract.check(response, "/v1/jobs/{job_id}")


@pytest.mark.parametrize("limit", ["0", "501", "-1", "x", "1.5", "\u0661"])
def test_job_list_limit_is_bounded(client, limit: str) -> None:
    response = client.get(f"/v1/jobs?limit={limit}")
    assert response.status_code == 400 and response.get_json()["field"] == "limit"


def test_job_list_limit(client, model_dir: Path) -> None:
    for i in range(3):
        jobfiles.write_record(model_dir, {"id": f"20261129T00000{i}Z-0000000{i}",
                                          "status": "failed", "created_at": f"2026-11-29T0{i}"})
    body = client.get("/v1/jobs?limit=2").get_json()
    assert [j["id"] for j in body["jobs"]] == ["20261129T000002Z-00000002",
                                               "20261129T000001Z-00000001"]
