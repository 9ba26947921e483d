"""The training process of one retrain job: `python -m service.retrain JOB_ID --model-dir DIR`.

It runs outside the web workers so serving latency holds and a worker timeout or restart does not
kill it. It holds the exclusive training lock for its whole life (inherited from the submitting
worker, or taken here when run by hand), so the lock dies with it and a crash never blocks the
next job. Its job record is rewritten atomically with progress, at most a few times a second.
A cancel is a file any replica can write (a process in another container cannot be signalled);
it is honoured at every stage up to activation: at every progress report, just before the
version is saved (nothing is saved), and after the save up to the moment CURRENT would be
replaced (the version stays saved, is not activated, and the record says so).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.jobs import (
    ACTIVE,
    JOB_ID_RE,
    JobFiles,
    JobRecordError,
    holds_lock,
    public_error,
    try_lock,
    utc_now,
)
from service.model import certificate_summary
from training.store import CurrentChanged, GateFailed, ModelStore, NotCertified
from training.train import TrainConfig, make_config, train_and_save

PROGRESS_INTERVAL = 0.25  # seconds between progress writes
CANCELLED = "cancelled on request"


class Stopped(Exception):
    """The job was cancelled or the process was told to end; the record says which."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into an exception so the record says what happened."""
    raise Stopped("failed", f"training process received signal {signum}")


def _lock(fd: int | None, path: Path) -> int | None:
    """Use the inherited, already locked fd; otherwise try to take the lock here."""
    if fd is not None and holds_lock(fd):
        return fd
    return try_lock(path)


class Job:
    """One job record, kept in memory and written whole on every change."""

    def __init__(self, files: JobFiles, record: dict) -> None:
        self.files = files
        self.record = record
        self.cancel_file = files.path(record["id"], ".cancel")
        self._last_write = 0.0

    def save(self, **changes: Any) -> None:
        """Apply changes and replace the record on disk."""
        self.record.update(changes)
        self.files.write(self.record)
        self._last_write = time.monotonic()

    def check_cancelled(self) -> None:
        """Stop at the next step once any replica has asked to cancel."""
        if self.cancel_file.exists():
            raise Stopped("cancelled", CANCELLED)

    def progress(self, step: int, max_steps: int, loss: float, accuracy: float) -> None:
        """Training callback: stop if cancelled; throttled progress writes."""
        self.check_cancelled()
        self.record["progress"] = {"step": int(step), "max_steps": int(max_steps),
                                   "loss": float(loss), "accuracy": float(accuracy)}
        if time.monotonic() - self._last_write >= PROGRESS_INTERVAL:
            self.save()

    def finish(self, status: str, **changes: Any) -> None:
        """Write the terminal record and count its outcome."""
        self.files.finish(self.record, status, **changes)


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The configuration a job recorded (every setting, defaults included), checked again.

    The record holds the whole configuration, not only what the request named, so a job trains
    with exactly what its record shows. Its work was bounded when it was submitted.
    """
    return make_config(params, bound_work=False)


class JobStore(ModelStore):
    """The job's model store: a cancel that arrived by the time of the save stops it unsaved."""

    def __init__(self, job: Job, history: int | None) -> None:
        super().__init__(job.files.root, history=history)
        self.job = job

    def save(self, *args: Any, **kwargs: Any) -> str:
        """Save, unless the job was cancelled (during the final gate, say) before this."""
        self.job.check_cancelled()
        return super().save(*args, **kwargs)


def run(job: Job, keep_models: int | None = None) -> tuple[str, dict[str, Any]]:
    """Train, save, gate promotion; return the terminal status and the fields to record."""
    params = dict(job.record.get("params") or {})
    activate = bool(params.pop("activate", True))
    max_bits = int(job.record.get("max_bits") or 4096)
    job.check_cancelled()
    job.save(status="running", pid=os.getpid(), started_at=utc_now())
    config = train_config(params)
    store = JobStore(job, keep_models)
    started_from = store.current()  # activation is a compare-and-set against this
    version, record = train_and_save(config, store, on_progress=job.progress, max_bits=max_bits)[:2]
    done = {"model_version": version, "metrics": record.get("metrics"), "gate": record.get("gate")}
    not_activated = f"{CANCELLED}: version {version} was saved but not activated"
    try:
        job.check_cancelled()
        if not activate:
            return "succeeded", done
        promotion = store.activate(version, max_bits=max_bits, expect_current=started_from,
                                   before_switch=job.check_cancelled)
    except Stopped as exc:
        if exc.status != "cancelled":
            raise Stopped(exc.status, f"{exc}; version {version} was saved, not activated") \
                from exc
        return "cancelled", {**done, "error": not_activated}
    except GateFailed as exc:
        return "rejected", {**done, "gate": exc.gate,
                            "error": f"version {version} was saved but not activated: "
                                     f"it fails the promotion gate ({exc.check})"}
    except NotCertified as exc:
        return "rejected", {**done, "certificate": record.get("certificate"),
                            "error": f"version {version} was saved but not activated: "
                                     f"it is not certified ({exc.reason})"}
    except CurrentChanged as exc:
        return "rejected", {**done, "error": f"version {version} was saved but not activated: "
                                             f"the active version changed to {exc.found} while "
                                             f"the job ran (it started from {started_from})"}
    return "succeeded", {**done, "gate": promotion.gate,
                         "certificate": certificate_summary(record, promotion.proof)}


def _parser() -> argparse.ArgumentParser:
    """Arguments JobManager passes; usable by hand for an existing queued job too."""
    parser = argparse.ArgumentParser(prog="python -m service.retrain", description=__doc__)
    parser.add_argument("job_id", help="id of a queued job record under MODEL_DIR/jobs")
    parser.add_argument("--model-dir", required=True, type=Path, help="the model directory")
    parser.add_argument("--lock-fd", type=int, help="inherited fd holding .train.lock")
    parser.add_argument("--job-lock-fd", type=int, help="inherited fd holding jobs/<id>.lock")
    parser.add_argument("--keep", type=int, help="prune to the newest KEEP finished jobs after")
    parser.add_argument("--keep-models", type=int,
                        help="after saving, prune to the newest KEEP_MODELS versions (plus "
                             "CURRENT, LAST_GOOD and pinned ones)")
    return parser


def _read(files: JobFiles, job_id: str) -> dict | None:
    """The job's record, or None when it is missing or damaged."""
    try:
        return files.read(job_id)
    except JobRecordError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job end to end; exit 2 when there is no such job or it is already taken."""
    args = _parser().parse_args(argv)
    files = JobFiles(args.model_dir)
    if not JOB_ID_RE.match(args.job_id) or _read(files, args.job_id) is None:
        print(f"no such job: {args.job_id!r}", file=sys.stderr)
        return 2
    job_fd = _lock(args.job_lock_fd, files.path(args.job_id, ".lock"))
    record = _read(files, args.job_id)  # again, now that nobody else can run it
    if job_fd is None or record is None or record.get("status") not in ACTIVE:
        print(f"job {args.job_id} has ended or another process runs it", file=sys.stderr)
        return 2
    job = Job(files, record)
    train_fd: int | None = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        train_fd = _lock(args.lock_fd, files.train_lock)
        if train_fd is None:
            status, changes = "failed", {
                "error": "another training is running; only one runs at a time"}
        else:
            with contextlib.suppress(OSError):
                os.nice(5)  # the web workers on the same cores come first
            try:
                status, changes = run(job, args.keep_models)
            except Stopped:
                raise
            except Exception as exc:
                status, changes = "failed", {"error": public_error(exc, files.root)}
    except Stopped as exc:
        status, changes = exc.status, {"error": str(exc)}
    # Nothing may interrupt the last record; a second SIGTERM now would leave it half-counted.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        # Free the training lock before the record says "done", so a client that saw the end
        # of this job can start the next one at once; the job lock still marks us alive.
        if train_fd is not None:
            os.close(train_fd)
        print(f"job {args.job_id} {status}: {changes.get('error') or 'ok'}", flush=True)  # log
        job.finish(status, **changes)
        if args.keep is not None:
            with contextlib.suppress(OSError):
                files.prune(args.keep)
    finally:
        for suffix in (".lock", ".cancel", ".final"):
            with contextlib.suppress(OSError):
                files.path(args.job_id, suffix).unlink()
    return 0 if status in ("succeeded", "rejected", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
