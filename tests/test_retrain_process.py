"""The training process outlives the web server that started it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rnnadd_client import Client

from service.jobs import JobManager
from tests import servers


@pytest.mark.integration
def test_training_survives_the_server_stopping(tmp_path: Path) -> None:
    server = servers.start_server(tmp_path)
    try:
        with Client(server.url, token=server.token) as client:
            live = client.model()["version"]
            slow = {"optimizer": "sgd", "learning_rate": 1e-6, "batch_size": 1,
                    "max_steps": 2000}
            job_id = client.retrain(**slow)["job_id"]
            deadline = time.monotonic() + 30
            while client.job(job_id)["status"] != "running" and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        servers.stop_server(server)  # graceful stop of master and workers, by PID
    assert server.proc.returncode is not None
    jobs = JobManager(server.model_dir)
    assert jobs.get(job_id)["status"] == "running", "still training without any web worker"
    deadline = time.monotonic() + 60
    while jobs.get(job_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    done = jobs.get(job_id)
    assert done["status"] == "rejected", done  # trained to the end, then held by the gate
    assert (server.model_dir / done["model_version"]).is_dir()
    assert (server.model_dir / "CURRENT").read_text().strip() == live
