"""JobManager: parameter bounds, one training at a time, dead jobs, atomic records, real runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service import errors, jobfiles
from service.jobs import JobManager

BAD_PARAMS = [
    ({"hidden_size": 0}, "hidden_size"),
    ({"hidden_size": 257}, "hidden_size"),
    ({"hidden_size": True}, "hidden_size"),
    ({"hidden_size": 16.0}, "hidden_size"),
    ({"hidden_size": "16"}, "hidden_size"),
    ({"hidden_size": None}, "hidden_size"),
    ({"optimizer": "rmsprop-ish"}, "optimizer"),
    ({"optimizer": 1}, "optimizer"),
    ({"optimizer": ["adam"]}, "optimizer"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"learning_rate": 10.5}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"learning_rate": "0.1"}, "learning_rate"),
    ({"learning_rate": False}, "learning_rate"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 4097}, "batch_size"),
    ({"max_steps": 0}, "max_steps"),
    ({"max_steps": 100_001}, "max_steps"),
    ({"max_steps": 10**100}, "max_steps"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"bits": 1}, "bits"),
    ({"bits": 65}, "bits"),
    ({"activate": 1}, "activate"),
    ({"activate": "true"}, "activate"),
    ({"activate": None}, "activate"),
    ({"epochs": 3}, "epochs"),
    ({"max_steps": 10, "oops": 1}, "oops"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty model directory per test."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def spawned():
    """PIDs of fake training processes a test starts, killed by PID afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each job runs in its own session/group


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable standing in for the interpreter: it inherits the lock fds like the real one."""
    path = tmp_path / "fake-python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def wait_terminal(manager: JobManager, job_id: str, timeout: float = 120.0) -> dict:
    """Poll like a client would until the job ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = manager.get(job_id)
        if record["status"] in jobfiles.TERMINAL:
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {manager.get(job_id)}")


def hold_train_lock(root: Path) -> int:
    """Take the training lock the way a running training does."""
    fd = jobfiles.try_lock(jobfiles.train_lock_path(root))
    assert fd is not None
    return fd


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS)
def test_bad_params_are_400_naming_the_field(root: Path, params: dict, field: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        JobManager(root).submit(params)
    assert info.value.field == field
    assert field in info.value.detail
    assert not jobfiles.job_ids(root), "no job may be recorded for a rejected request"


@pytest.mark.parametrize("body", [[], "x", 3, [["hidden_size", 4]]])
def test_body_must_be_an_object(root: Path, body: object) -> None:
    with pytest.raises(errors.BadRequest):
        JobManager(root).submit(body)


def test_bounds_are_inclusive(root: Path) -> None:
    manager = JobManager(root)
    low = {"hidden_size": 1, "learning_rate": 1e-9, "batch_size": 1, "max_steps": 1, "seed": 0,
           "bits": 2, "activate": False, "optimizer": "sgd"}
    high = {"hidden_size": 256, "learning_rate": 10, "batch_size": 4096, "max_steps": 100_000,
            "seed": 2**32 - 1, "bits": 64, "activate": True, "optimizer": "adam"}
    assert manager.validate(low) == {**low, "learning_rate": 1e-9}
    assert manager.validate(high)["learning_rate"] == 10.0
    assert manager.validate(None) == {}
    assert manager.validate({}) == {}


def test_conflict_while_a_training_holds_the_lock(root: Path) -> None:
    fd = hold_train_lock(root)
    try:
        with pytest.raises(errors.Conflict):
            JobManager(root).submit({"max_steps": 5})
    finally:
        os.close(fd)
    assert not jobfiles.job_ids(root)


def test_unknown_and_malformed_job_ids_are_404(root: Path) -> None:
    manager = JobManager(root)
    for job_id in ["20260101T000000Z-00000000", "../CURRENT", "", "x" * 500, None, 3]:
        with pytest.raises(errors.NotFound):
            manager.get(job_id)
    assert manager.list() == []


def test_dead_process_is_failed_and_does_not_block_the_next(
    root: Path, tmp_path: Path, spawned: list[int]
) -> None:
    manager = JobManager(root, python=fake_python(tmp_path, "exec sleep 60"))
    job = manager.submit({"max_steps": 5})
    spawned.append(job["pid"])
    assert manager.get(job["id"])["status"] == "queued"  # alive: its lock is held
    with pytest.raises(errors.Conflict):
        manager.submit({})
    os.kill(job["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while manager.get(job["id"])["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = manager.get(job["id"])
    assert dead["status"] == "failed"
    assert "exited unexpectedly" in dead["error"]
    assert dead["finished_at"]
    assert jobfiles.read_record(root, job["id"])["status"] == "failed", "must be persisted"
    assert JobManager(root).get(job["id"]) == dead, "another worker sees the same"

    second = manager.submit({"max_steps": 5})
    spawned.append(second["pid"])
    assert second["status"] == "queued"
    assert [j["id"] for j in manager.list()] == [second["id"], job["id"]]


def test_process_that_never_starts_training_is_failed(root: Path, tmp_path: Path) -> None:
    manager = JobManager(root, python=fake_python(tmp_path, "exit 3"))
    job = manager.submit({})
    assert wait_terminal(manager, job["id"], timeout=10)["error"] == jobfiles.DIED


def test_missing_interpreter_fails_the_job_and_frees_the_lock(root: Path, tmp_path: Path) -> None:
    manager = JobManager(root, python=str(tmp_path / "no-such-python"))
    with pytest.raises(errors.ServiceUnavailable):
        manager.submit({})
    (job,) = manager.list()
    assert job["status"] == "failed"
    assert "could not start" in job["error"]
    fd = hold_train_lock(root)  # free again
    os.close(fd)


def test_concurrent_submits_start_exactly_one(
    root: Path, tmp_path: Path, spawned: list[int]
) -> None:
    python = fake_python(tmp_path, "exec sleep 60")
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    def submit() -> None:
        manager = JobManager(root, python=python)  # one manager per "worker"
        barrier.wait()
        try:
            outcomes.append(manager.submit({"max_steps": 5}))
        except errors.Conflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    started = [o for o in outcomes if isinstance(o, dict)]
    spawned.extend(job["pid"] for job in started)
    assert len(outcomes) == 8
    assert len(started) == 1, outcomes
    assert len(jobfiles.job_ids(root)) == 1


CROSS_PROCESS_SUBMIT = """
import sys, time
from service import errors
from service.jobs import JobManager
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
try:
    print(JobManager(sys.argv[1], python=sys.argv[2]).submit({})["pid"])
except errors.Conflict:
    print("conflict")
"""


def test_concurrent_submits_from_separate_processes(
    root: Path, tmp_path: Path, spawned: list[int]
) -> None:
    python = fake_python(tmp_path, "exec sleep 60")
    start = str(time.time() + 1.5)
    procs = [
        subprocess.Popen([sys.executable, "-c", CROSS_PROCESS_SUBMIT, str(root), python, start],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    answers = [p.communicate(timeout=30)[0].strip() for p in procs]
    pids = [int(a) for a in answers if a != "conflict"]
    spawned.extend(pids)
    assert len(pids) == 1, answers
    assert answers.count("conflict") == 3


def test_records_are_replaced_atomically(root: Path) -> None:
    record = {"id": "20260101T000000Z-0000abcd", "status": "running", "pad": "x" * 200_000}
    jobfiles.write_record(root, record)
    stop = threading.Event()
    seen: list[str] = []

    def writer() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            jobfiles.write_record(root, {**record, "progress": {"step": step}})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            text = jobfiles.record_path(root, record["id"]).read_text()
            seen.append(json.loads(text)["status"])  # never a torn or empty file
    finally:
        stop.set()
        thread.join()
    assert set(seen) == {"running"}
    leftovers = [p.name for p in jobfiles.jobs_dir(root).iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_real_retrain_end_to_end(root: Path) -> None:
    manager = JobManager(root, min_accuracy=0.0)
    job = manager.submit({"hidden_size": 8, "max_steps": 30, "batch_size": 16, "seed": 3})
    assert job["status"] == "queued"
    assert job["params"]["optimizer"] == "adam", "defaults are recorded too"
    assert job["params"]["activate"] is True
    assert jobfiles.read_record(root, job["id"])["params"] == job["params"]
    done = wait_terminal(manager, job["id"])
    assert done["status"] == "succeeded", done
    version = done["model_version"]
    assert (root / version / "model.json").is_file()
    assert (root / "CURRENT").read_text().strip() == version
    assert done["metrics"]["accuracy_8bit"] >= 0.0
    assert done["params"]["hidden_size"] == 8
    assert done["params"]["max_steps"] == 30
    assert done["progress"]["step"] >= 1
    assert done["pid"] and done["started_at"] and done["finished_at"]
    assert not jobfiles.job_lock_path(root, job["id"]).exists()
    assert manager.list()[0]["id"] == job["id"]


def test_promotion_gate_rejects_and_keeps_current(root: Path) -> None:
    manager = JobManager(root, min_accuracy=0.0)
    first = wait_terminal(manager, manager.submit({"hidden_size": 4, "max_steps": 10})["id"])
    live = (root / "CURRENT").read_text()
    strict = JobManager(root, min_accuracy=1.01)  # no model can reach it
    rejected = wait_terminal(strict, strict.submit({"hidden_size": 4, "max_steps": 10})["id"])
    assert rejected["status"] == "rejected", rejected
    assert rejected["metrics"]["accuracy_8bit"] < 1.01
    assert rejected["model_version"] not in (None, first["model_version"])
    assert (root / rejected["model_version"] / "model.json").is_file(), "saved, not activated"
    assert (root / "CURRENT").read_text() == live
    assert "below the required" in rejected["error"]


def test_activate_false_trains_without_promoting(root: Path) -> None:
    manager = JobManager(root, min_accuracy=0.0)
    done = wait_terminal(manager, manager.submit({"max_steps": 5, "activate": False})["id"])
    assert done["status"] == "succeeded"
    assert not (root / "CURRENT").exists()
    assert done["params"]["activate"] is False


def queued_by_hand(root: Path, params: dict) -> str:
    """A queued record as submit writes it, for running service.retrain directly."""
    job_id = jobfiles.new_job_id()
    jobfiles.write_record(root, {"id": job_id, "status": "queued", "params": params,
                                 "progress": {}, "created_at": jobfiles.utc_now()})
    return job_id


def retrain_by_hand(root: Path, job_id: str) -> int:
    """Run the training process the way an operator could."""
    cmd = [sys.executable, "-m", "service.retrain", job_id, "--model-dir", str(root),
           "--min-accuracy", "0"]
    return subprocess.run(cmd, capture_output=True, timeout=120).returncode


def test_training_error_fails_the_job(root: Path) -> None:
    job_id = queued_by_hand(root, {"hidden_size": "not a number", "max_steps": 5})
    assert retrain_by_hand(root, job_id) == 1
    record = JobManager(root).get(job_id)
    assert record["status"] == "failed"
    assert record["error"]
    assert record["finished_at"]


def test_retrain_by_hand_respects_the_training_lock(root: Path) -> None:
    job_id = queued_by_hand(root, {"max_steps": 5})
    fd = hold_train_lock(root)
    try:
        assert retrain_by_hand(root, job_id) == 1
    finally:
        os.close(fd)
    record = JobManager(root).get(job_id)
    assert record["status"] == "failed"
    assert "another training is running" in record["error"]
    assert retrain_by_hand(root, job_id) == 2, "an ended job is never run again"
    assert retrain_by_hand(root, "20260101T000000Z-00000000") == 2


def test_sigterm_ends_the_job_as_failed(root: Path) -> None:
    manager = JobManager(root, min_accuracy=0.0)
    job = manager.submit({"max_steps": 100_000, "batch_size": 256})
    try:
        deadline = time.monotonic() + 60
        while manager.get(job["id"])["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.get(job["id"])["status"] == "running"
    finally:
        os.kill(job["pid"], signal.SIGTERM)
    done = wait_terminal(manager, job["id"], timeout=30)
    assert done["status"] == "failed"
    assert "signal" in done["error"]
    assert manager.list()[0]["status"] == "failed"
