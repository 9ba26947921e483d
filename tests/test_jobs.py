"""JobManager: parameter bounds, one training at a time, dead jobs, atomic records, real runs,
cancelling, pruning and read-only metrics."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service import errors, jobs, retrain
from service.jobs import ACTIVE, DIED, JobFiles, JobManager, try_lock
from tests.conftest import clone_version
from training import train as train_module
from training.evaluate import exhaustive_accuracy
from training.ids import new_version_id
from training.store import GateFailed, ModelStore, Promotion, is_version
from training.train import request_schema

MAX_BITS = 4096


def schema_fields() -> dict[str, dict[str, Any]]:
    """The retrain request's fields as the training code publishes them (bounds change there)."""
    return request_schema()["properties"]


def bad_values(spec: dict[str, Any]) -> list[Any]:
    """Values a field of this schema must refuse: out of range, wrong type, huge, not finite."""
    wrong_types = [True, False, None, "1", [1], {"n": 1}]
    if "enum" in spec:
        return ["no-such-choice", "", 1, [spec["enum"][0]], None, True]
    if spec["type"] == "boolean":
        return [1, 0, "true", None, [True]]
    if spec["type"] not in ("integer", "number"):
        return wrong_types
    values = [*wrong_types, 10**400, -(10**400), math.inf, -math.inf, math.nan, 1e300, -1e300]
    if "minimum" in spec:
        values.append(spec["minimum"] - 1)
    if "exclusiveMinimum" in spec:
        values += [spec["exclusiveMinimum"], spec["exclusiveMinimum"] - 1]
    if "maximum" in spec:
        values += [spec["maximum"] + 1, spec["maximum"] * 2 + 1]
    if "exclusiveMaximum" in spec:
        values.append(spec["exclusiveMaximum"])
    if spec["type"] == "integer":
        values += [1.5, 0.5]
    return values


BAD_PARAMS = [
    pytest.param({name: value}, name, id=f"{name}={value!r}"[:60])
    for name, spec in schema_fields().items()
    for value in bad_values(spec)
] + [
    pytest.param({"activate": value}, "activate", id=f"activate={value!r}")
    for value in (1, 0, "true", None, [True])
] + [
    pytest.param({"epochs": 3}, "epochs", id="unknown"),
    pytest.param({"max_steps": 10, "oops": 1}, "oops", id="unknown-beside-a-good-one"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty model directory per test."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def spawned():
    """PIDs of training processes a test starts, killed by PID afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each job runs in its own session/group


def manager(root: Path, **kwargs: Any) -> JobManager:
    """A JobManager over root, as the app builds it."""
    return JobManager(root, MAX_BITS, **kwargs)


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable standing in for the interpreter: it inherits the lock fds like the real one."""
    path = tmp_path / "fake-python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def wait_terminal(jm: JobManager, job_id: str, timeout: float = 120.0) -> dict:
    """Poll like a client would until the job ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = jm.get(job_id)
        if record["status"] not in ACTIVE:
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {jm.get(job_id)}")


def hold_train_lock(root: Path) -> int:
    """Take the training lock the way a running training does."""
    fd = try_lock(JobFiles(root).train_lock)
    assert fd is not None
    return fd


def record_of(job_id: str, status: str, **fields: Any) -> dict:
    """A stored job record as JobManager writes it."""
    return {"id": job_id, "status": status, "params": {}, "progress": {}, "model_version": None,
            "metrics": None, "error": None, "created_at": "2026-11-29T00:00:00.000000Z",
            "started_at": None, "finished_at": None, **fields}


def job_id_at(second: int, tag: int = 0) -> str:
    """A job id that sorts by `second` (ids order by creation time)."""
    return f"20261129T{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}Z-{tag:06x}"


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether pid has exited (gone or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def tmp_leftovers(root: Path) -> list[str]:
    """Half-written files or directories anywhere under the model directory."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp*"))


# --- parameters (finding 4: every numeric field range-checked, never converted blindly) ---

@pytest.mark.parametrize(("params", "field"), BAD_PARAMS)
def test_bad_params_are_400_naming_the_field(root: Path, params: dict, field: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        manager(root).submit(params)
    assert info.value.status == 400
    assert info.value.field == field
    assert field in info.value.detail
    assert not JobFiles(root).ids(), "no job may be recorded for a rejected request"


def test_every_numeric_field_has_bad_values_in_the_table() -> None:
    numeric = {n for n, s in schema_fields().items() if s.get("type") in ("integer", "number")}
    assert numeric >= {"learning_rate", "max_steps"}
    covered = {p.values[1] for p in BAD_PARAMS}
    assert numeric <= covered


@pytest.mark.parametrize("body", [[], "x", 3, None, [["hidden_size", 4]]])
def test_body_must_be_an_object(root: Path, body: object) -> None:
    with pytest.raises(errors.BadRequest):
        manager(root).submit(body)


def lowest(spec: dict[str, Any]) -> Any:
    """The smallest value a numeric field accepts."""
    if "minimum" in spec:
        return spec["minimum"]
    return spec["exclusiveMinimum"] + 1e-9


@pytest.mark.parametrize("name", [n for n, s in schema_fields().items() if "maximum" in s])
def test_bounds_are_inclusive_and_defaults_recorded(root: Path, tmp_path: Path,
                                                    name: str) -> None:
    jm = manager(root, python=fake_python(tmp_path, "exit 0"))
    fields = schema_fields()
    low = {n: lowest(s) for n, s in fields.items() if "minimum" in s or "exclusiveMinimum" in s}
    high = {name: fields[name]["maximum"]}  # one at a time, with few steps: the work bound
    if name != "max_steps":
        high["max_steps"] = 1
    if name == "max_steps":
        high["check_every"] = 1000  # every check may cost a gate: few of them
    if name == "hidden_size":
        high["certify"] = False  # the gate of 256 units is slow: no room for fine-tune rounds
    if name == "bits" and "long_bits" in fields:
        high["long_bits"] = fields["long_bits"]["maximum"]  # long_bits may not be below bits
    for params in (low, high):
        job = jm.submit(params)
        for key, value in params.items():
            assert job["params"][key] == value
        assert job["params"]["activate"] is True
        assert set(fields) <= set(job["params"]), "defaults are recorded too"
        wait_terminal(jm, job["id"], timeout=10)


def test_integers_written_as_floats_are_integers(root: Path, tmp_path: Path) -> None:
    jm = manager(root, python=fake_python(tmp_path, "exit 0"))
    job = jm.submit({"hidden_size": 8.0, "max_steps": 5.0})
    assert job["params"]["hidden_size"] == 8 and type(job["params"]["hidden_size"]) is int


def test_one_job_of_unbounded_work_is_refused(root: Path) -> None:
    """Finding 8: hidden 256 x batch 4096 x 100,000 steps is about 20 hours of one core."""
    fd = hold_train_lock(root)  # were it accepted, nothing may start: a 409 fails the test too
    try:
        with pytest.raises(errors.BadRequest) as info:
            manager(root).submit({"hidden_size": 256, "batch_size": 4096, "max_steps": 100_000})
    finally:
        os.close(fd)
    assert info.value.status == 400
    assert not JobFiles(root).ids()


# --- one training at a time, dead jobs ---

def test_conflict_while_a_training_holds_the_lock(root: Path) -> None:
    fd = hold_train_lock(root)
    try:
        with pytest.raises(errors.Conflict):
            manager(root).submit({"max_steps": 5})
    finally:
        os.close(fd)
    assert not JobFiles(root).ids()


def test_unknown_and_malformed_job_ids_are_404(root: Path) -> None:
    jm = manager(root)
    for job_id in ["20260101T000000Z-000000", "../CURRENT", "", "x" * 500, None, 3]:
        with pytest.raises(errors.NotFound):
            jm.get(job_id)
        with pytest.raises(errors.NotFound):
            jm.cancel(job_id)
    assert jm.list() == ([], [])


def test_dead_process_is_failed_and_does_not_block_the_next(
    root: Path, tmp_path: Path, spawned: list[int]
) -> None:
    jm = manager(root, python=fake_python(tmp_path, "echo $$ > \"$0.pid\"; exec sleep 60"))
    job = jm.submit({"max_steps": 5})
    pid_file = Path(jm.python + ".pid")
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    spawned.append(pid)
    assert jm.get(job["id"])["status"] == "queued"  # alive: its lock is held
    assert jm.active() == 1
    with pytest.raises(errors.Conflict):
        jm.submit({})
    os.kill(pid, signal.SIGKILL)
    assert process_gone(pid)
    deadline = time.monotonic() + 10
    while jm.get(job["id"])["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = jm.get(job["id"])
    assert dead["status"] == "failed"
    assert dead["error"] == DIED
    assert dead["finished_at"]
    assert JobFiles(root).read(job["id"])["status"] == "failed", "must be persisted"
    assert manager(root).get(job["id"]) == dead, "another worker sees the same"
    assert jm.outcomes() == {"failed": 1}, "settled once, counted once"
    assert jm.active() == 0

    pid_file.unlink()
    second = jm.submit({"max_steps": 5})
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    spawned.append(int(pid_file.read_text()))
    assert second["status"] == "queued"
    records, problems = jm.list()
    assert [j["id"] for j in records] == [second["id"], job["id"]] and problems == []


def test_process_that_never_starts_training_is_failed(root: Path, tmp_path: Path) -> None:
    jm = manager(root, python=fake_python(tmp_path, "exit 3"))
    job = jm.submit({})
    assert wait_terminal(jm, job["id"], timeout=10)["error"] == DIED


def test_missing_interpreter_fails_the_job_and_frees_the_lock(root: Path, tmp_path: Path) -> None:
    jm = manager(root, python=str(tmp_path / "no-such-python"))
    with pytest.raises(errors.ServiceUnavailable) as info:
        jm.submit({})
    assert "could not start the training process" in info.value.detail.lower()
    (job,), _ = jm.list()
    assert job["status"] == "failed"
    assert "could not start" in job["error"]
    os.close(hold_train_lock(root))  # free again


def test_concurrent_submits_start_exactly_one(
    root: Path, tmp_path: Path, spawned: list[int]
) -> None:
    python = fake_python(tmp_path, "exec sleep 60")
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    def submit() -> None:
        jm = manager(root, python=python)  # one manager per "worker"
        barrier.wait()
        try:
            outcomes.append((jm.submit({"max_steps": 5}), jm))
        except errors.Conflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    started = [o for o in outcomes if isinstance(o, tuple)]
    for _job, jm in started:
        spawned.extend(p.pid for p in jm._children.values())
    assert len(outcomes) == 8
    assert len(started) == 1, outcomes
    assert len(JobFiles(root).ids()) == 1


CROSS_PROCESS_SUBMIT = """
import sys, time
from service import errors
from service.jobs import JobManager
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
try:
    jm = JobManager(sys.argv[1], 4096, python=sys.argv[2])
    jm.submit({})
    print(next(iter(jm._children.values())).pid)
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
    files = JobFiles(root)
    files.dir.mkdir()
    record = record_of(new_version_id(), "running", pad="x" * 200_000)
    files.write(record)
    stop = threading.Event()
    seen: list[str] = []

    def writer() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            files.write({**record, "progress": {"step": step}})

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            text = files.path(record["id"], ".json").read_text()
            seen.append(json.loads(text)["status"])  # never a torn or empty file
    finally:
        stop.set()
        thread.join()
    assert set(seen) == {"running"}
    assert tmp_leftovers(root) == []


# --- damaged records (finding 6) ---

@pytest.mark.parametrize("content", [
    {"status": "failed", "created_at": "x"},             # valid JSON, no id
    {"id": "20261129T000000Z-ffffff", "status": "failed"},  # someone else's id
    {"status": "exploded"},                              # id added below, unknown status
    ["not", "an", "object"],
    "not json at all {",
])
def test_a_damaged_record_is_skipped_and_reported(root: Path, content: Any) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    good = record_of(job_id_at(1), "succeeded")
    files.write(good)
    bad_id = job_id_at(2)
    if isinstance(content, dict) and content.get("status") == "exploded":
        content = {**content, "id": bad_id}
    text = content if isinstance(content, str) else json.dumps(content)
    files.path(bad_id, ".json").write_text(text)
    jm = manager(root)
    records, problems = jm.list()
    assert [r["id"] for r in records] == [good["id"]]
    assert [p["id"] for p in problems] == [bad_id] and problems[0]["error"]
    with pytest.raises(errors.Conflict) as info:
        jm.get(bad_id)
    assert bad_id in info.value.detail
    assert jm.get(good["id"]) == good
    jm.prune()  # counting damaged records as finished, with room for them: nothing goes
    assert len(files.ids()) == 2


# --- storage errors (finding 7) ---

@pytest.mark.parametrize(("code", "status"), [(errno.EROFS, 503), (errno.EACCES, 503),
                                               (errno.ENOSPC, 507), (errno.EDQUOT, 507)])
@pytest.mark.parametrize("step", ["lock", "record"])
def test_storage_errors_are_503_or_507_naming_the_cause(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, status: int,
    step: str,
) -> None:
    real_open, real_write = os.open, jobs.atomic_write

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(root)) and flags & (os.O_CREAT | os.O_RDWR | os.O_WRONLY):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def refusing_write(path: Any, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    (root / "jobs").mkdir()
    if step == "lock":
        monkeypatch.setattr(os, "open", refusing_open)
    else:
        monkeypatch.setattr(jobs, "atomic_write", refusing_write)
    jm = manager(root, python=fake_python(tmp_path, "exit 0"))
    with pytest.raises(errors.APIError) as info:
        jm.submit({"max_steps": 5})
    assert info.value.status == status
    cause = "full" if status == 507 else "not writable"
    assert cause in info.value.detail and os.strerror(code) in info.value.detail
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(jobs, "atomic_write", real_write)
    assert JobFiles(root).ids() == [], "no record"
    assert [n for n in os.listdir(root / "jobs") if n.endswith(".lock")] == [], "no stray lock"
    assert tmp_leftovers(root) == []
    os.close(hold_train_lock(root))  # the training lock is free again


def test_storage_error_mapping() -> None:
    assert jobs.storage_error(OSError(errno.EROFS, "x"), "do it").status == 503
    assert jobs.storage_error(OSError(errno.ENOSPC, "x"), "do it").status == 507
    assert "Cannot do it" in jobs.storage_error(OSError(errno.EIO, "x"), "do it").detail


# --- pruning and read-only metrics (finding 12) ---

def test_prune_keeps_the_newest_finished_and_every_live_job(root: Path) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    live = job_id_at(0)  # the oldest record, but its process holds its lock
    files.write(record_of(live, "running"))
    live_fd = try_lock(files.path(live, ".lock"))
    finished = [job_id_at(10 + i) for i in range(6)]
    for i, job_id in enumerate(finished):
        files.write(record_of(job_id, ("succeeded", "failed", "rejected", "cancelled")[i % 4]))
        files.path(job_id, ".log").write_text("log\n")
    try:
        removed = manager(root, keep=3).prune()
        assert sorted(removed) == finished[:3]
        assert files.ids() == [*reversed(finished[3:]), live]
        for job_id in finished[:3]:
            assert not any(p.name.startswith(job_id) for p in files.dir.iterdir())
        assert sorted(manager(root, keep=1).prune()) == finished[3:5]
        assert files.ids() == [finished[5], live]
    finally:
        os.close(live_fd)


def test_prune_counts_a_dead_active_record_as_finished(root: Path) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    dead = job_id_at(0)
    files.write(record_of(dead, "running"))  # nobody holds its lock: its process is gone
    files.write(record_of(job_id_at(1), "succeeded"))
    assert manager(root, keep=1).prune() == [dead]


def test_submit_prunes_to_keep(root: Path, tmp_path: Path, spawned: list[int]) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    for i in range(5):
        files.write(record_of(job_id_at(i), "succeeded"))
    jm = manager(root, keep=2, python=fake_python(tmp_path, "exec sleep 60"))
    job = jm.submit({"max_steps": 5})
    spawned.extend(p.pid for p in jm._children.values())
    assert files.ids() == [job["id"], job_id_at(4), job_id_at(3)]


def test_keep_must_be_positive(root: Path) -> None:
    for keep in (0, -1, 1.5, None):
        with pytest.raises(ValueError):
            manager(root, keep=keep)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under root with its mtime and size."""
    found = {".": (root.stat().st_mtime_ns, 0)}
    for path in root.rglob("*"):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return found


def test_metrics_reads_are_read_only_and_cheap(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    dead = job_id_at(1)
    files.write(record_of(dead, "running"))  # its process died: only a GET settles it
    files.path(dead, ".lock").touch()
    live = job_id_at(2)
    files.write(record_of(live, "running"))
    live_fd = try_lock(files.path(live, ".lock"))
    files.count_outcome("succeeded")
    files.count_outcome("succeeded")
    files.count_outcome("cancelled")
    before = snapshot(root)
    time.sleep(0.01)

    def no_record_reads(*args: Any) -> None:
        raise AssertionError("a metrics read must not read job records")

    monkeypatch.setattr(JobFiles, "read", no_record_reads)
    jm = manager(root)
    try:
        assert jm.outcomes() == {"succeeded": 2, "cancelled": 1}
        assert jm.active() == 1
    finally:
        os.close(live_fd)
    assert jm.active() == 0
    assert snapshot(root) == before, "a metrics read wrote or removed a file"
    monkeypatch.undo()
    assert files.read(dead)["status"] == "running", "not settled by a metrics read"


def test_outcomes_survive_a_damaged_counts_file(root: Path) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    files.outcomes.write_text("[1, 2")
    assert manager(root).outcomes() == {}
    files.outcomes.write_text('{"succeeded": 2, "bogus": 3, "failed": "x"}')
    assert manager(root).outcomes() == {"succeeded": 2}


# --- cancelling (finding 8) ---

def test_cancel_a_finished_job_is_409(root: Path) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    for status in ("succeeded", "failed", "rejected", "cancelled"):
        job_id = new_version_id()
        files.write(record_of(job_id, status))
        with pytest.raises(errors.Conflict):
            manager(root).cancel(job_id)
        assert not files.path(job_id, ".cancel").exists()


def test_cancel_that_the_process_ignores_is_reported_as_still_stopping(
    root: Path, tmp_path: Path, spawned: list[int]
) -> None:
    jm = manager(root, python=fake_python(tmp_path, "exec sleep 60"))
    job = jm.submit({"max_steps": 5})
    spawned.extend(p.pid for p in jm._children.values())
    record, ended = jm.cancel(job["id"], wait=0.3)
    assert not ended and record["status"] == "queued"
    assert JobFiles(root).path(job["id"], ".cancel").exists()
    with pytest.raises(errors.Conflict):
        jm.submit({})  # still holds the training lock


# --- real runs of the real trainer process ---

def long_job() -> dict[str, Any]:
    """A job that keeps training for a long time (it never converges), within every bound."""
    fields = schema_fields()
    return {"optimizer": "sgd", "learning_rate": 1e-6, "hidden_size": 8, "batch_size": 8,
            "max_steps": fields["max_steps"]["maximum"], "check_every": 100, "activate": False}


def wait_running(jm: JobManager, job_id: str, timeout: float = 60.0) -> dict:
    """Until the trainer has reported progress at least once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = jm.get(job_id)
        if record["status"] == "running" and record["progress"]["step"] > 0:
            return record
        assert record["status"] in ACTIVE, record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start: {jm.get(job_id)}")


def test_cancel_a_running_job(root: Path, spawned: list[int]) -> None:
    jm = manager(root)
    job = jm.submit(long_job())
    running = wait_running(jm, job["id"])
    spawned.append(running["pid"])
    record, ended = jm.cancel(job["id"])
    assert ended, record
    assert record["status"] == "cancelled" and record["finished_at"]
    assert record["model_version"] is None
    assert process_gone(running["pid"], timeout=0.5)
    assert [p.name for p in root.iterdir() if is_version(p.name)] == [], "no version saved"
    assert tmp_leftovers(root) == []
    files = JobFiles(root)
    assert not files.path(job["id"], ".cancel").exists()
    assert not files.path(job["id"], ".lock").exists()
    assert jm.outcomes() == {"cancelled": 1}
    assert jm.active() == 0
    os.close(hold_train_lock(root))  # the training lock is free at once


def test_cancel_a_queued_job(root: Path) -> None:
    jm = manager(root)
    job = jm.submit(long_job())
    record, ended = jm.cancel(job["id"])  # most likely before the trainer even imported numpy
    assert ended and record["status"] == "cancelled"
    assert tmp_leftovers(root) == []


def test_real_retrain_end_to_end(root: Path) -> None:
    jm = manager(root)
    job = jm.submit({"hidden_size": 8, "max_steps": 30, "batch_size": 16, "seed": 3})
    assert job["status"] == "queued"
    assert job["params"]["activate"] is True
    assert JobFiles(root).read(job["id"])["params"] == job["params"]
    done = wait_terminal(jm, job["id"])
    assert done["status"] in ("succeeded", "rejected"), done
    version = done["model_version"]
    assert (root / version / "model.json").is_file()
    if done["status"] == "succeeded":
        assert (root / "CURRENT").read_text().strip() == version
    stored = ModelStore(root).load(version)
    assert done["metrics"]["accuracy_8bit"] == exhaustive_accuracy(stored.params)
    assert done["params"]["hidden_size"] == 8
    assert done["params"]["max_steps"] == 30
    assert done["progress"]["step"] >= 1
    assert done["pid"] and done["started_at"] and done["finished_at"]
    assert not JobFiles(root).path(job["id"], ".lock").exists()
    assert jm.list()[0][0]["id"] == job["id"]
    assert jm.outcomes() == {done["status"]: 1}
    assert tmp_leftovers(root) == []


def test_activate_false_trains_without_promoting(root: Path) -> None:
    jm = manager(root)
    done = wait_terminal(jm, jm.submit({"max_steps": 5, "activate": False})["id"])
    assert done["status"] == "succeeded", done
    assert not (root / "CURRENT").exists()
    assert done["params"]["activate"] is False


def test_a_version_that_fails_the_gate_is_rejected(root: Path, monkeypatch) -> None:
    """In-process run of the trainer's job logic with a gate that refuses the version."""
    files = JobFiles(root)
    files.dir.mkdir()
    job_id = queued_by_hand(root, {"max_steps": 3, "hidden_size": 4}, activate=True)
    gate = {"passed": False, "failed": "accuracy_8bit"}

    def refuse(self: ModelStore, version: str, **kwargs: Any) -> dict:
        promotion = Promotion(version, gate, {"certified": False, "problem": "x", "summary": None})
        raise GateFailed(self.root / version / "model.json", promotion, self.root)

    monkeypatch.setattr(ModelStore, "activate", refuse)
    job = retrain.Job(files, files.read(job_id))
    status, changes = retrain.run(job)
    assert status == "rejected"
    assert "not activated" in changes["error"] and "accuracy_8bit" in changes["error"]
    assert changes["gate"] == gate
    assert (root / changes["model_version"] / "model.json").is_file(), "saved, not activated"
    assert not (root / "CURRENT").exists()


def test_a_rollback_during_the_job_is_not_undone(model_dir: Path, monkeypatch) -> None:
    """The job activates only if CURRENT still names the version it started from."""
    store = ModelStore(model_dir)
    rolled_back_to = clone_version(store)  # certified: the same weights and proof
    real = retrain.train_and_save

    def train_then_rollback(*args: Any, **kwargs: Any) -> tuple[str, dict]:
        result = real(*args, **kwargs)
        store.activate(rolled_back_to)  # an operator's rollback while the job ran
        return result

    monkeypatch.setattr(retrain, "train_and_save", train_then_rollback)
    files = JobFiles(model_dir)
    files.dir.mkdir(exist_ok=True)
    job_id = queued_by_hand(model_dir, {"seed": 1}, activate=True)
    status, changes = retrain.run(retrain.Job(files, files.read(job_id)))
    assert status == "rejected", changes
    assert "saved but not activated" in changes["error"] and rolled_back_to in changes["error"]
    assert store.current() == rolled_back_to
    assert store.record(changes["model_version"])  # the job's version is kept


def test_a_job_whose_version_is_not_certified_saves_it_without_activating(
        model_dir: Path) -> None:
    """A model that adds (the gate passes) but carries no proof never goes live from a job."""
    store = ModelStore(model_dir)
    before = store.current()
    files = JobFiles(model_dir)
    files.dir.mkdir(exist_ok=True)
    job_id = queued_by_hand(model_dir, {"seed": 1, "certify": False}, activate=True)
    status, changes = retrain.run(retrain.Job(files, files.read(job_id)))
    assert status == "rejected", changes
    assert "not certified" in changes["error"] and "no certificate" in changes["error"]
    assert changes["gate"]["passed"] is True
    assert store.current() == before and store.last_good() != changes["model_version"]
    assert store.record(changes["model_version"])["certificate"]["certified"] is False


def queued_by_hand(root: Path, params: dict, activate: bool = False) -> str:
    """A queued record as submit writes it, for running service.retrain directly."""
    files = JobFiles(root)
    files.dir.mkdir(exist_ok=True)
    job_id = new_version_id()
    files.write(record_of(job_id, "queued", params={**params, "activate": activate},
                          created_at=jobs.utc_now()))
    return job_id


def retrain_by_hand(root: Path, job_id: str, *extra: str) -> int:
    """Run the training process the way an operator could."""
    cmd = [sys.executable, "-m", "service.retrain", job_id, "--model-dir", str(root), *extra]
    return subprocess.run(cmd, capture_output=True, timeout=120).returncode


def test_training_error_fails_the_job(root: Path) -> None:
    job_id = queued_by_hand(root, {"hidden_size": "not a number", "max_steps": 5})
    assert retrain_by_hand(root, job_id) == 1
    record = manager(root).get(job_id)
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
    record = manager(root).get(job_id)
    assert record["status"] == "failed"
    assert "another training is running" in record["error"]
    assert retrain_by_hand(root, job_id) == 2, "an ended job is never run again"
    assert retrain_by_hand(root, "20260101T000000Z-000000") == 2


def test_the_trainer_prunes_when_it_ends(root: Path) -> None:
    files = JobFiles(root)
    files.dir.mkdir()
    for i in range(4):
        files.write(record_of(job_id_at(i), "failed"))
    job_id = queued_by_hand(root, {"max_steps": 2})
    assert retrain_by_hand(root, job_id, "--keep", "2") == 0
    assert files.ids() == [job_id, job_id_at(3)]


def test_sigterm_ends_the_job_as_failed(root: Path, spawned: list[int]) -> None:
    jm = manager(root)
    job = jm.submit(long_job())
    running = wait_running(jm, job["id"])
    spawned.append(running["pid"])
    os.kill(running["pid"], signal.SIGTERM)
    done = wait_terminal(jm, job["id"], timeout=30)
    assert done["status"] == "failed"
    assert "signal" in done["error"]
    assert jm.list()[0][0]["status"] == "failed"
    assert jm.outcomes() == {"failed": 1}
    assert tmp_leftovers(root) == []


# --- a cancel is honoured at every stage up to activation ------------------------------------

def cancel_when(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, cancel: Path) -> None:
    """Let `owner.name` write the cancel file as it runs: a DELETE arriving at that stage."""
    real = getattr(owner, name)

    def cancelling(*args: Any, **kwargs: Any) -> Any:
        cancel.write_text("cancel\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, cancelling)


def test_a_cancel_during_the_final_gate_saves_nothing(model_dir: Path, monkeypatch) -> None:
    """Once answered 202 and ignored (the job ended succeeded, and went live)."""
    files = JobFiles(model_dir)
    job_id = queued_by_hand(model_dir, {"seed": 1}, activate=True)
    before = sorted(p.name for p in model_dir.iterdir() if is_version(p.name))
    cancel_when(monkeypatch, train_module, "evaluate", files.path(job_id, ".cancel"))
    with pytest.raises(retrain.Stopped) as stopped:
        retrain.run(retrain.Job(files, files.read(job_id)))
    assert stopped.value.status == "cancelled"
    assert sorted(p.name for p in model_dir.iterdir() if is_version(p.name)) == before


def test_a_cancel_during_activation_keeps_the_version_saved_not_live(model_dir: Path,
                                                                     monkeypatch) -> None:
    files = JobFiles(model_dir)
    store = ModelStore(model_dir)
    live = store.current()
    job_id = queued_by_hand(model_dir, {"seed": 1}, activate=True)
    cancel_when(monkeypatch, ModelStore, "promotion", files.path(job_id, ".cancel"))
    status, changes = retrain.run(retrain.Job(files, files.read(job_id)))
    assert status == "cancelled", changes
    assert "saved but not activated" in changes["error"]
    assert store.record(changes["model_version"])  # saved
    assert store.current() == live  # not activated


def test_a_job_prunes_the_store_after_its_save(model_dir: Path) -> None:
    store = ModelStore(model_dir)
    live = store.current()
    old = [clone_version(store) for _ in range(3)]
    files = JobFiles(model_dir)
    job_id = queued_by_hand(model_dir, {"seed": 1}, activate=False)
    status, changes = retrain.run(retrain.Job(files, files.read(job_id)), keep_models=2)
    assert status == "succeeded", changes
    assert store.version_ids() == [live, old[-1], changes["model_version"]]


# --- storage failures: the cause survives, and no server path is shown -----------------------

@contextlib.contextmanager
def tiny_filesystem(tmp_path: Path, inodes: int) -> Iterator[Path]:
    """A tmpfs of `inodes` inodes (root only): the real thing an inode-starved disk does."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=16m,nr_inodes={inodes}",
                           "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_inodes(directory: Path) -> int:
    """Create empty files until the file system has no inode left; how many it took."""
    count = 0
    while True:
        try:
            (directory / f"filler-{count}").touch()
        except OSError as exc:
            assert exc.errno in (errno.ENOSPC, errno.EDQUOT), exc
            return count
        count += 1


def test_a_job_that_runs_out_of_inodes_records_why_without_paths(tmp_path: Path) -> None:
    """With no inode left the record read "training process exited unexpectedly" (and a path
    when it said more): the room reserved at submit keeps the cause."""
    with tiny_filesystem(tmp_path, 64) as mount:
        root = mount / "models"
        root.mkdir()
        jm = manager(root, python=fake_python(tmp_path, "exit 0"))  # submit, not the run
        job_id = jm.submit({"max_steps": 5, "activate": False})["id"]
        (root / "filler").mkdir()
        assert fill_inodes(root / "filler") > 0
        assert retrain_by_hand(root, job_id) == 1
        record = jm.get(job_id)
    assert record["status"] == "failed", record
    assert "No space left on device" in record["error"], record["error"]
    assert "/" not in record["error"].replace("jobs/", ""), record["error"]
    assert str(mount) not in json.dumps(record)


def test_public_errors_name_files_relative_to_the_model_directory(root: Path) -> None:
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / "jobs" / "x.json"))
    assert jobs.public_error(exc, root) == "OSError: No space left on device (jobs/x.json)"
    other = RuntimeError(f"cannot open /srv/secret/place/file.bin or {root}/CURRENT")
    assert jobs.public_error(other, root) == "RuntimeError: cannot open file.bin or CURRENT"
