"""The training process outlives the web server that started it, and any worker can cancel it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests
from rnnadd_client import Client

from service.jobs import ACTIVE, JobFiles, JobManager, try_lock
from tests import servers
from tests.test_jobs import long_job, process_gone, tmp_leftovers
from training.store import is_version


def wait_status(get, job_id: str, wanted: str, timeout: float = 60.0) -> dict:
    """Poll until the job has this status (and, when running, has reported progress)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = get(job_id)
        progressed = wanted != "running" or record["progress"]["step"] > 0
        if record["status"] == wanted and progressed:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {wanted}: {get(job_id)}")


@pytest.mark.integration
def test_training_survives_the_server_stopping(tmp_path: Path) -> None:
    server = servers.start_server(tmp_path)
    try:
        with Client(server.url, token=server.token) as client:
            live = client.model()["version"]
            # long enough to be seen running and outlive the server, short enough to finish
            job_id = client.retrain(**{**long_job(), "max_steps": 60_000})["job_id"]
            wait_status(client.job, job_id, "running")
    finally:
        servers.stop_server(server)  # graceful stop of master and workers, by PID
    assert server.proc.returncode is not None
    jobs = JobManager(server.model_dir, 4096)
    assert jobs.get(job_id)["status"] == "running", "still training without any web worker"
    deadline = time.monotonic() + 120
    while jobs.get(job_id)["status"] in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.1)
    done = jobs.get(job_id)
    assert done["status"] == "succeeded", done  # trained to the end (activate: false)
    assert (server.model_dir / done["model_version"]).is_dir()
    assert (server.model_dir / "CURRENT").read_text().strip() == live


@pytest.mark.integration
def test_any_worker_cancels_a_running_job(tmp_path: Path) -> None:
    """Finding 8 against real gunicorn workers: whichever worker answers, the trainer ends."""
    with servers.running_server(tmp_path, workers=2) as server:
        auth = {"Authorization": f"Bearer {server.token}"}
        versions = sorted(p.name for p in server.model_dir.iterdir() if is_version(p.name))

        def job(job_id: str) -> dict:
            return requests.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()

        for _ in range(2):  # the second run proves the lock was freed by the first cancel
            accepted = requests.post(f"{server.url}/v1/retrain", json=long_job(), headers=auth,
                                     timeout=10)
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]
            running = wait_status(job, job_id, "running")
            response = requests.delete(f"{server.url}/v1/jobs/{job_id}", headers=auth,
                                       timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "cancelled"
            assert process_gone(running["pid"], timeout=2.0)
            assert job(job_id)["status"] == "cancelled"
        assert sorted(p.name for p in server.model_dir.iterdir()
                      if is_version(p.name)) == versions
        assert tmp_leftovers(server.model_dir) == []
        fd = try_lock(JobFiles(server.model_dir).train_lock)
        assert fd is not None, "the training lock is free"
        os.close(fd)
