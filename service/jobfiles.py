"""Retrain job records and locks on disk, shared by the web workers and the training process.

Layout under the model directory:
  .train.lock        exclusive flock held by the one running training (across workers and replicas)
  jobs/<id>.json     the job record, always replaced atomically
  jobs/<id>.lock     exclusive flock held for the job's whole life, so a dead job is detectable
  jobs/<id>.log      the training process's stdout and stderr
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

JOB_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "rejected")
DIED = "training process exited unexpectedly"


def utc_now() -> str:
    """ISO 8601 UTC with a Z, the timestamp style of the model records."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_job_id() -> str:
    """Sortable by creation time and unguessable enough to avoid collisions between workers."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def jobs_dir(root: Path) -> Path:
    """Where job records live, beside the model versions so every replica sees them."""
    return Path(root) / "jobs"


def record_path(root: Path, job_id: str) -> Path:
    """Path of a job's JSON record."""
    return jobs_dir(root) / f"{job_id}.json"


def job_lock_path(root: Path, job_id: str) -> Path:
    """Path of the lock the job's process holds while it lives."""
    return jobs_dir(root) / f"{job_id}.lock"


def log_path(root: Path, job_id: str) -> Path:
    """Path of the training process's output, kept for post-mortems."""
    return jobs_dir(root) / f"{job_id}.log"


def train_lock_path(root: Path) -> Path:
    """The one lock that makes training exclusive across workers and replicas."""
    return Path(root) / ".train.lock"


def try_lock(path: Path, *, create: bool = True) -> int | None:
    """Open and flock path without blocking; the fd when acquired, None when someone holds it.

    flock (not POSIX lockf) because its lock belongs to the open file description: it is handed
    to the training process through an inherited fd and released only when that process exits.
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def holds_lock(fd: int) -> bool:
    """Whether this process's fd carries the exclusive lock (re-locking our own lock succeeds)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def write_record(root: Path, record: dict) -> None:
    """Replace the record atomically (tmp + fsync + rename) so readers never see half a file."""
    path = record_path(root, record["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make the rename durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_record(root: Path, job_id: str) -> dict | None:
    """The stored record, or None when there is no such job (or its file is unreadable)."""
    try:
        with open(record_path(root, job_id), encoding="utf-8") as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def job_ids(root: Path) -> list[str]:
    """Ids of all stored job records (tmp files, locks and logs are skipped)."""
    try:
        names = os.listdir(jobs_dir(root))
    except FileNotFoundError:
        return []
    return [n[:-5] for n in names if n.endswith(".json") and JOB_ID_RE.match(n[:-5])]
