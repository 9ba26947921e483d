"""Retrain jobs: records and locks in the model directory, and the manager that starts them.

Layout under the model directory (shared by every worker and replica):
  .train.lock          exclusive flock held by the one running training
  jobs/<id>.json       the job record, always replaced atomically
  jobs/<id>.lock       exclusive flock held for the job's whole life, so a dead job is detectable
  jobs/<id>.log        the training process's stdout and stderr
  jobs/<id>.cancel     asks the training process to stop (any replica can write it)
  jobs/<id>.final      space for the terminal record, taken at submit: on a disk out of space
                       or inodes the job's end (and its cause) is still recorded
  jobs/outcomes.json   finished jobs by outcome, so a metrics scrape reads one small file

Why submitting is race-free: submit takes the training lock itself (non-blocking; held means
409) and hands that very lock to the training process through an inherited descriptor (flock
locks belong to the open file, not to a process). It is released only when that process exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import errors
from training.files import atomic_write, read_regular
from training.ids import new_version_id
from training.train import ConfigError, config_from_request

JOB_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6,8}$")
ACTIVE = ("queued", "running")
OUTCOMES = ("succeeded", "failed", "rejected", "cancelled")
DIED = "training process exited unexpectedly"
CANCEL_WAIT = 5.0  # seconds DELETE waits for the trainer to stop before answering 202
MAX_JOB_RECORD = 4 << 20  # a record holds params, progress, metrics and the gate's checks
RESERVED_BYTES = 64 * 1024  # the terminal record's room, taken when the job is submitted
SUFFIXES = (".log", ".cancel", ".final", ".lock", ".json")  # removal order: record last
PATH_RE = re.compile(r"(?<![\w.])/(?:[^\s'\"():,/]+/)+([^\s'\"():,/]+)")


def public_error(exc: BaseException, root: Path | str) -> str:
    """An exception as a job record shows it: its cause, and file names relative to root.

    Records are readable by anyone, so no server path appears in them; an OSError keeps its
    strerror (e.g. "No space left on device"), which is the part an operator acts on.
    """
    prefixes = {f"{Path(root)}/", f"{Path(root).resolve()}/"}
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text += f" ({exc.filename})"
    else:
        text = str(exc)
    for prefix in sorted(prefixes, key=len, reverse=True):
        text = text.replace(prefix, "")
    text = PATH_RE.sub(lambda m: m.group(1), text)  # any other absolute path: its name only
    return f"{type(exc).__name__}: {text}"


def utc_now() -> str:
    """ISO 8601 UTC with a Z, the timestamp style of the model records."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JobFiles:
    """Paths, locks and atomic records of jobs under one model directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.dir = self.root / "jobs"
        self.train_lock = self.root / ".train.lock"
        self.outcomes = self.dir / "outcomes.json"

    def path(self, job_id: str, suffix: str) -> Path:
        """jobs/<id><suffix>: .json, .lock, .log or .cancel."""
        return self.dir / f"{job_id}{suffix}"

    def write(self, record: dict) -> None:
        """Replace a record atomically, so readers never see half a file."""
        data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(self.path(record["id"], ".json"), data)

    def reserve(self, job_id: str) -> None:
        """Take the room of the job's terminal record now, while the disk has it."""
        with open(self.path(job_id, ".final"), "xb") as handle:
            handle.write(b" " * RESERVED_BYTES)
            handle.flush()
            os.fsync(handle.fileno())

    def write_reserved(self, record: dict) -> None:
        """Write a record into its reserved room (no new block or inode), then rename it in.

        JSON allows trailing spaces, so the record is padded to the room's size; a record too
        large for it keeps its status, error and times and drops the rest.
        """
        reserve = self.path(record["id"], ".final")
        data = json.dumps(record, sort_keys=True).encode()
        if len(data) > RESERVED_BYTES - 1:
            kept = ("id", "status", "error", "model_version", "params", "created_at",
                    "started_at", "finished_at", "max_bits", "pid")
            data = json.dumps({k: record.get(k) for k in kept}, sort_keys=True).encode()
        fd = os.open(reserve, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data.ljust(RESERVED_BYTES - 1) + b"\n", 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(reserve, self.path(record["id"], ".json"))

    def read(self, job_id: str) -> dict | None:
        """The stored record; None when there is none; JobRecordError when it is damaged."""
        try:
            data = read_regular(self.path(job_id, ".json"), MAX_JOB_RECORD)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JobRecordError(job_id, f"cannot be read ({exc.strerror})") from exc
        if len(data) > MAX_JOB_RECORD:
            raise JobRecordError(job_id, f"is larger than {MAX_JOB_RECORD:,} bytes")
        try:
            record = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise JobRecordError(job_id, "is not valid JSON") from exc
        if not isinstance(record, dict) or record.get("id") != job_id:
            raise JobRecordError(job_id, "is not a job record (its id is missing or differs)")
        if record.get("status") not in (*ACTIVE, *OUTCOMES):
            raise JobRecordError(job_id, f"has an unknown status {record.get('status')!r}")
        return record

    def ids(self) -> list[str]:
        """Ids of every stored record, newest first (ids sort by creation time)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        ids = [n[:-5] for n in names if n.endswith(".json") and JOB_ID_RE.match(n[:-5])]
        return sorted(ids, reverse=True)

    def live_count(self) -> int:
        """Jobs whose process holds their lock: one directory listing and a probe per lock.

        Only jobs with a record are probed (the record is written after its lock is taken), so
        a probe never races a submit for a new lock. Reads and writes no file.
        """
        try:
            names = set(os.listdir(self.dir))
        except FileNotFoundError:
            return 0
        return sum(1 for name in names
                   if name.endswith(".lock") and JOB_ID_RE.match(name[:-5])
                   and f"{name[:-5]}.json" in names and self.alive(name[:-5]))

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` finished jobs; a job whose process lives is kept.

        A queued or running record whose process is gone counts as finished (it is a dead job),
        and so does a damaged one. Returns the ids removed.
        """
        found: list[tuple[str, dict | None]] = []
        for job_id in self.ids():
            try:
                found.append((job_id, self.read(job_id)))
            except JobRecordError:
                found.append((job_id, None))
        found.sort(key=lambda item: age(item[1] or {"id": item[0]}), reverse=True)
        finished, removed = 0, []
        for job_id, record in found:
            if record is not None and record["status"] in ACTIVE and self.alive(job_id):
                continue
            finished += 1
            if finished > keep:
                self.remove(job_id)
                removed.append(job_id)
        return removed

    def count_outcome(self, status: str) -> None:
        """Add one finished job to the outcome counts (under a lock: several writers)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".outcomes.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            counts = self.read_outcomes()
            counts[status] = counts.get(status, 0) + 1
            atomic_write(self.outcomes, json.dumps(counts).encode() + b"\n")
        finally:
            os.close(fd)

    def read_outcomes(self) -> dict[str, int]:
        """Finished jobs by outcome; a damaged file counts as none rather than break a scrape."""
        try:
            counts = json.loads(read_regular(self.outcomes, 1 << 16))
        except (OSError, ValueError):
            return {}
        if not isinstance(counts, dict):
            return {}
        return {k: v for k, v in counts.items() if k in OUTCOMES and type(v) is int}

    def finish(self, record: dict, status: str, **changes: Any) -> dict:
        """Write a terminal record and count its outcome.

        When the record cannot be written (a full disk, no inodes left), it goes into the room
        reserved at submit, so the end of the job and its cause survive; a count that cannot be
        written is lost rather than the record.
        """
        record.update(status=status, finished_at=utc_now(), **changes)
        try:
            self.write(record)
        except OSError:
            if not self.path(record["id"], ".final").exists():
                raise
            self.write_reserved(record)
        with contextlib.suppress(FileNotFoundError):
            self.path(record["id"], ".final").unlink()
        try:
            self.count_outcome(status)
        except OSError as exc:
            if exc.errno not in FULL:
                raise
        return record

    def alive(self, job_id: str) -> bool:
        """Whether a process holds the job's lock (probing with a shared lock, changing nothing)."""
        try:
            fd = os.open(self.path(job_id, ".lock"), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            return not lock_free(fd)
        finally:
            os.close(fd)

    def remove(self, job_id: str) -> None:
        """Delete everything a job left (record last, so a reader never sees a partial job)."""
        for suffix in SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                self.path(job_id, suffix).unlink()


def age(record: dict) -> tuple[str, str]:
    """Sort key of a job's creation: the id's second, then created_at within that second."""
    created = record.get("created_at")
    return record["id"][:16], created if isinstance(created, str) else ""


class JobRecordError(Exception):
    """A job record that exists but cannot be used."""

    def __init__(self, job_id: str, problem: str) -> None:
        super().__init__(f"job record {job_id}.json {problem}")
        self.job_id = job_id


def try_lock(path: Path, *, create: bool = True) -> int | None:
    """Open and flock path without blocking; the fd when acquired, None when someone holds it."""
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


def lock_free(fd: int) -> bool:
    """Whether nobody holds an exclusive flock on fd's file (a shared probe, released at once)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def holds_lock(fd: int) -> bool:
    """Whether this process's fd carries the exclusive lock (re-locking our own lock succeeds)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(exc: OSError, action: str) -> errors.APIError:
    """A failed write to the model directory, as 503 (read-only) or 507 (full)."""
    if exc.errno in FULL:
        return errors.InsufficientStorage(
            f"Cannot {action}: the model directory is full ({os.strerror(exc.errno)})."
        )
    if exc.errno in NOT_WRITABLE:
        return errors.ServiceUnavailable(
            f"Cannot {action}: the model directory is not writable ({os.strerror(exc.errno)})."
        )
    return errors.ServiceUnavailable(f"Cannot {action}: {os.strerror(exc.errno or 0)}.")


class JobManager:
    """Starts, reports, lists, cancels and prunes retrain jobs; any worker serves any job."""

    def __init__(self, store_root: Path | str, max_bits: int, keep: int = 100,
                 python: str = sys.executable, keep_models: int | None = None) -> None:
        if type(keep) is not int or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        if keep_models is not None and (type(keep_models) is not int or keep_models < 1):
            raise ValueError(f"keep_models must be a positive integer, got {keep_models!r}")
        self.keep_models = keep_models
        self.files = JobFiles(store_root)
        self.root = self.files.root
        self.max_bits = max_bits
        self.keep = keep
        self.python = python
        self._children: dict[str, subprocess.Popen] = {}

    def submit(self, params: Any) -> dict:
        """Validate, take the training lock, record the job and start its process."""
        if not isinstance(params, dict):
            raise errors.BadRequest("The body must be a JSON object of training settings.")
        activate = params.get("activate", True)
        if type(activate) is not bool:
            raise errors.BadRequest("activate must be true or false.", field="activate")
        try:
            config = config_from_request({k: v for k, v in params.items() if k != "activate"})
        except ConfigError as exc:
            raise errors.BadRequest(str(exc), field=exc.field) from exc
        self._reap()
        try:
            return self._start(config_fields(config), activate)
        except OSError as exc:
            raise storage_error(exc, "start a retrain job") from exc

    def _start(self, params: dict[str, Any], activate: bool) -> dict:
        """Take the lock, prune, write the queued record, spawn the trainer."""
        self.files.dir.mkdir(parents=True, exist_ok=True)
        train_fd = try_lock(self.files.train_lock)
        if train_fd is None:
            raise errors.Conflict("A retrain job is already running; try again when it ends.")
        job_fd: int | None = None
        job_id: str | None = None
        recorded = False
        try:
            self.prune()
            job_id = new_version_id()
            job_fd = try_lock(self.files.path(job_id, ".lock"))
            if job_fd is None:  # an id collision: practically impossible, never silent
                raise errors.Conflict("Job id collision; try again.")
            self.files.reserve(job_id)
            record = {
                "id": job_id, "status": "queued", "params": {**params, "activate": activate},
                "progress": {"step": 0, "max_steps": params.get("max_steps"),
                             "loss": None, "accuracy": None},
                "model_version": None, "metrics": None, "gate": None, "error": None,
                "created_at": utc_now(), "started_at": None, "finished_at": None,
                "max_bits": self.max_bits,
            }
            self.files.write(record)
            recorded = True
            self._spawn(record, train_fd, job_fd)
            return record
        except BaseException:
            if job_id is not None and not recorded:  # no record: leave no stray files
                for suffix in (".final", ".lock"):
                    with contextlib.suppress(OSError):
                        self.files.path(job_id, suffix).unlink()
            raise
        finally:
            os.close(train_fd)  # the child keeps the lock through its inherited descriptor
            if job_fd is not None:
                os.close(job_fd)

    def _spawn(self, record: dict, train_fd: int, job_fd: int) -> None:
        """Start `python -m service.retrain` in its own session, immune to worker restarts."""
        job_id = record["id"]
        cmd = [self.python, "-m", "service.retrain", job_id, "--model-dir", str(self.root),
               "--lock-fd", str(train_fd), "--job-lock-fd", str(job_fd),
               "--keep", str(self.keep)]
        if self.keep_models is not None:
            cmd += ["--keep-models", str(self.keep_models)]
        project = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH")) if p)
        try:
            with open(self.files.path(job_id, ".log"), "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(train_fd, job_fd), start_new_session=True, cwd=project, env=env,
                )
        except OSError as exc:
            reason = f"could not start the training process: {exc.strerror or exc}"
            with contextlib.suppress(OSError):  # a full or read-only disk: settled as dead later
                self.files.finish(record, "failed", error=reason)
            if exc.errno in FULL or exc.errno in NOT_WRITABLE:
                raise storage_error(exc, "start a retrain job") from exc
            raise errors.ServiceUnavailable(reason[0].upper() + reason[1:] + ".") from exc
        self._children[job_id] = proc

    def get(self, job_id: Any) -> dict:
        """A job's record; one whose process died is reported (and stored) as failed."""
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise errors.NotFound(f"No such job: {job_id!r}.", field="job_id")
        self._reap()
        try:
            record = self.files.read(job_id)
        except JobRecordError as exc:
            raise errors.Conflict(f"The record of job {job_id} is damaged: {exc}.",
                                  field="job_id") from exc
        if record is None:
            raise errors.NotFound(f"No such job: {job_id}.", field="job_id")
        return self._settle(record)

    def list(self, limit: int = 50) -> tuple[list[dict], list[dict]]:
        """Newest jobs first, and the damaged records skipped on the way (id and problem).

        Ids order by second; jobs of the same second are ordered by their created_at.
        """
        self._reap()
        records, problems = [], []
        for job_id in self.files.ids():
            if len(records) >= limit and job_id[:16] != records[-1]["id"][:16]:
                break
            try:
                record = self.files.read(job_id)
            except JobRecordError as exc:
                problems.append({"id": job_id, "error": str(exc)})
                continue
            if record is not None:
                records.append(self._settle(record))
        records.sort(key=age, reverse=True)
        return records[:limit], problems

    def cancel(self, job_id: Any, wait: float | None = None) -> tuple[dict, bool]:
        """Ask a queued or running job to stop and wait briefly for its process to exit.

        Returns (record, ended): ended means the process is gone (its job lock is free) and
        the record is final, so the training lock is free too.
        """
        record = self.get(job_id)
        if record["status"] not in ACTIVE:
            raise errors.Conflict(f"Job {job_id} has already ended ({record['status']}).",
                                  field="job_id")
        try:  # opened before asking, so the end of the process is seen even once it unlinks it
            lock: int | None = os.open(self.files.path(job_id, ".lock"), os.O_RDONLY)
        except FileNotFoundError:
            lock = None
        try:
            try:
                atomic_write(self.files.path(job_id, ".cancel"), b"cancel\n")
            except OSError as exc:
                raise storage_error(exc, "cancel the job") from exc
            deadline = time.monotonic() + (CANCEL_WAIT if wait is None else wait)
            while True:
                if lock is None or lock_free(lock):
                    proc = self._children.get(job_id)  # our own child: reap it, no zombie
                    if proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(max(0.0, deadline - time.monotonic()))
                    record = self.get(job_id)  # settles a job whose process died
                    if record["status"] not in ACTIVE:
                        return record, True
                if time.monotonic() >= deadline:
                    return self.get(job_id), False
                time.sleep(0.05)
        finally:
            if lock is not None:
                os.close(lock)

    def prune(self) -> list[str]:
        """Keep the newest `keep` finished jobs; older records, logs and locks go."""
        return self.files.prune(self.keep)

    def outcomes(self) -> dict[str, int]:
        """Finished jobs by outcome, for metrics: one small file, read only."""
        return self.files.read_outcomes()

    def active(self) -> int:
        """Jobs queued or running (whose process holds its lock), for metrics: read only."""
        return self.files.live_count()

    def _settle(self, record: dict) -> dict:
        """Mark a queued/running job failed when nobody holds its lock any more."""
        if record.get("status") not in ACTIVE or self.files.alive(record["id"]):
            return record
        try:
            latest = self.files.read(record["id"]) or record
        except JobRecordError:
            return record
        if latest["status"] not in ACTIVE or self.files.alive(record["id"]):
            return latest
        lock = try_lock(self.files.path(record["id"], ".lock"), create=False)
        if lock is None and self.files.path(record["id"], ".lock").exists():
            return latest  # it took its lock between our two looks
        try:
            try:
                latest = self.files.read(record["id"]) or latest  # under its lock: final
            except JobRecordError:
                return latest
            if latest["status"] not in ACTIVE:
                return latest
            return self.files.finish(latest, "failed", error=DIED)
        except OSError:
            return latest  # read-only directory: report what we know, change nothing
        finally:
            if lock is not None:
                os.close(lock)

    def _reap(self) -> None:
        """Collect finished children so they do not linger as zombies."""
        self._children = {k: p for k, p in self._children.items() if p.poll() is None}


def config_fields(config: Any) -> dict[str, Any]:
    """Every setting a job trains with, so its record shows the defaults it got too."""
    return dataclasses.asdict(config)
