"""GET /metrics: requests, latency, pairs, model version, load failures, retrain outcomes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.jobs import JobFiles, try_lock
from service.metrics import JobsCollector, Metrics
from tests.conftest import clone_version
from training.store import ModelStore

ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition: (sample name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def requests_key(endpoint: str, method: str, status: str) -> tuple:
    """The sample of rnnadd_http_requests_total for one HTTP endpoint, method and status."""
    labels = (("endpoint", endpoint), ("method", method), ("protocol", "http"),
              ("status", status))
    return ("rnnadd_http_requests_total", labels)


def scrape(client) -> dict:
    """The app's metrics, parsed."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_requests_latency_and_pairs(client) -> None:
    for _ in range(3):
        client.post("/v1/predict", json={"a": 1, "b": 2})
    client.post("/v1/predict", json={"a": -1, "b": 2})
    client.post("/v1/predict/batch", json={"pairs": [[1, 2]] * 7})
    client.get("/nowhere")
    client.open("/v1/predict", method="BREW")
    found = scrape(client)
    assert found[requests_key("/v1/predict", "POST", "200")] == 3
    assert found[requests_key("/v1/predict", "POST", "400")] == 1
    assert found[requests_key("unmatched", "GET", "404")] == 1
    assert found[requests_key("unmatched", "other", "405")] == 1
    latency = "rnnadd_http_request_duration_seconds_count"
    endpoint, http = ("endpoint", "/v1/predict"), ("protocol", "http")
    assert found[(latency, (endpoint, ("outcome", "ok"), http))] == 3
    assert found[(latency, (endpoint, ("outcome", "error"), http))] == 1
    assert found[("rnnadd_pairs_predicted_total", ())] == 3 + 7


def test_active_model_version_gauge_follows_swaps(store: ModelStore) -> None:
    client = create_app({"MODEL_DIR": str(store.root), "RELOAD_INTERVAL": 0.0}).test_client()
    old = store.current()
    assert scrape(client)[("rnnadd_model_active", (("version", old),))] == 1
    new = clone_version(store, activate=True)
    client.get("/readyz")
    found = scrape(client)
    assert found[("rnnadd_model_active", (("version", old),))] == 0
    assert found[("rnnadd_model_active", (("version", new),))] == 1
    assert found[("rnnadd_model_load_failures_total", ())] == 0


def job_id_at(second: int) -> str:
    """A job id that sorts by second."""
    return f"20261129T0000{second:02d}Z-{second:06x}"


def job_record(job_id: str, status: str) -> dict:
    """A stored job record."""
    return {"id": job_id, "status": status, "params": {}, "progress": {}, "error": None,
            "model_version": None, "created_at": "2026-11-29T00:00:00Z", "finished_at": None}


def test_retrain_outcomes_are_counted_from_the_outcome_file(client, model_dir: Path) -> None:
    files = JobFiles(model_dir)
    for status in ["succeeded", "succeeded", "rejected", "failed", "cancelled"]:
        files.count_outcome(status)
    found = scrape(client)
    outcome = "rnnadd_retrain_jobs_total"
    assert found[(outcome, (("outcome", "succeeded"),))] == 2
    assert found[(outcome, (("outcome", "rejected"),))] == 1
    assert found[(outcome, (("outcome", "failed"),))] == 1
    assert found[(outcome, (("outcome", "cancelled"),))] == 1
    assert found[("rnnadd_retrain_jobs_active", ())] == 0


def test_job_series_exist_before_any_job(client) -> None:
    found = scrape(client)
    assert found[("rnnadd_retrain_jobs_total", (("outcome", "succeeded"),))] == 0
    assert found[("rnnadd_retrain_jobs_active", ())] == 0


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (root too) with its mtime and size."""
    found = {".": (root.stat().st_mtime_ns, 0)}
    for path in root.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return found


def test_a_scrape_writes_nothing_and_settles_nothing(client, model_dir: Path) -> None:
    """Finding 12: scrapes read every record and settled dead jobs, writing during a GET."""
    files = JobFiles(model_dir)
    files.dir.mkdir()
    for i in range(30):
        files.write(job_record(job_id_at(i), "succeeded"))
        files.count_outcome("succeeded")
    dead = job_id_at(40)
    files.write(job_record(dead, "running"))  # its process is gone: nobody holds its lock
    files.path(dead, ".lock").touch()
    live = job_id_at(41)
    files.write(job_record(live, "queued"))
    lock = try_lock(files.path(live, ".lock"))
    scrape(client)  # anything the app creates once, before the comparison
    before = tree(model_dir)
    try:
        found = scrape(client)
    finally:
        os.close(lock)
    assert tree(model_dir) == before, "a scrape created, changed or removed a file"
    assert found[("rnnadd_retrain_jobs_total", (("outcome", "succeeded"),))] == 30
    assert found[("rnnadd_retrain_jobs_active", ())] == 1
    assert files.read(dead)["status"] == "running", "a scrape must not settle a dead job"
    assert client.get(f"/v1/jobs/{dead}").get_json()["status"] == "failed", "a GET of it does"


def test_a_scrape_reads_no_job_record(client, model_dir: Path, monkeypatch) -> None:
    files = JobFiles(model_dir)
    files.dir.mkdir()
    files.write(job_record(job_id_at(1), "failed"))

    def forbidden(*args: object) -> None:
        raise AssertionError("a scrape read a job record")

    monkeypatch.setattr(JobFiles, "read", forbidden)
    found = scrape(client)
    assert ("rnnadd_retrain_jobs_active", ()) in found


def test_job_history_setting_reaches_the_job_manager(model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("RNNADD_JOB_HISTORY", "7")
    app = create_app({"MODEL_DIR": str(model_dir)})
    assert app.extensions["rnnadd"].jobs.keep == 7
    monkeypatch.delenv("RNNADD_JOB_HISTORY")
    assert create_app({"MODEL_DIR": str(model_dir)}).extensions["rnnadd"].jobs.keep == 100


def test_unreadable_job_counts_do_not_break_the_scrape() -> None:
    def broken() -> dict:
        raise OSError("disk gone")

    metrics = Metrics()
    metrics.add_jobs_collector(broken, lambda: 0)
    assert b"rnnadd_http_requests" in metrics.exposition()
    assert [f.name for f in JobsCollector(broken, lambda: 0).collect()] == [
        "rnnadd_retrain_jobs_active"]
    assert [f.name for f in JobsCollector(dict, broken).collect()] == ["rnnadd_retrain_jobs"]


def test_apps_do_not_share_metrics(model_dir: Path) -> None:
    first = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    second = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    first.get("/healthz")
    key = requests_key("/healthz", "GET", "200")
    assert scrape(first)[key] == 1 and key not in scrape(second)


WORKER = """
import sys
from service.app import create_app
client = create_app({"MODEL_DIR": sys.argv[1]}).test_client()
for _ in range(int(sys.argv[2])):
    assert client.post("/v1/predict", json={"a": 1, "b": 2}).status_code == 200
if len(sys.argv) > 3:
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
"""


def test_multiprocess_mode_adds_up_across_processes(model_dir: Path, tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared), "RNNADD_ACCESS_LOG": "0",
           "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-c", WORKER, str(model_dir)]
    subprocess.run([*run, "5"], env=env, check=True, timeout=60, cwd=ROOT)
    subprocess.run([*run, "7"], env=env, check=True, timeout=60, cwd=ROOT)
    text = subprocess.run([*run, "1", "scrape"], env=env, check=True, timeout=60, cwd=ROOT,
                          capture_output=True, text=True).stdout
    found = samples(text)
    key = requests_key("/v1/predict", "POST", "200")
    assert found[key] == 13
    assert found[("rnnadd_pairs_predicted_total", ())] == 13
    pids = {dict(labels)["pid"] for name, labels in found if name == "rnnadd_model_active"}
    assert len(pids) == 3  # liveall: one series per process (gunicorn drops dead ones)
