"""The training process of one retrain job: `python -m service.retrain JOB_ID --model-dir DIR`.

It runs outside the web workers so serving latency holds and a worker timeout or restart does not
kill it. It holds the exclusive training lock for its whole life (inherited from the submitting
worker, or taken here when run by hand), so the lock dies with it and a crash never blocks the
next job. Its job record is rewritten atomically with progress, at most a few times a second.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service import jobfiles
from training.store import ModelStore
from training.train import TrainConfig, preset, train_and_save

PROGRESS_INTERVAL = 0.25  # seconds between progress writes


class Terminated(Exception):
    """SIGTERM arrived: end the job as failed rather than vanish."""


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into an exception so the record says what happened."""
    raise Terminated(f"training process received signal {signum}")


def _lock(fd: int | None, path: Path) -> int | None:
    """Use the inherited, already locked fd; otherwise try to take the lock here."""
    if fd is not None and jobfiles.holds_lock(fd):
        return fd
    return jobfiles.try_lock(path)


class Job:
    """One job record, kept in memory and written whole on every change."""

    def __init__(self, root: Path, record: dict) -> None:
        self.root = root
        self.record = record
        self._last_write = 0.0

    def save(self, **changes: Any) -> None:
        """Apply changes and replace the record on disk."""
        self.record.update(changes)
        jobfiles.write_record(self.root, self.record)
        self._last_write = time.monotonic()

    def progress(self, step: int, max_steps: int, loss: float, accuracy: float) -> None:
        """Training callback; throttled so a fast run does not spend its time writing JSON."""
        self.record["progress"] = {"step": int(step), "max_steps": int(max_steps),
                                   "loss": float(loss), "accuracy": float(accuracy)}
        if time.monotonic() - self._last_write >= PROGRESS_INTERVAL:
            self.save()

    def finish(self, status: str, **changes: Any) -> None:
        """Write the terminal record (the metrics layer counts outcomes from the records)."""
        self.save(status=status, finished_at=jobfiles.utc_now(), **changes)


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The default preset, overridden by the job's parameters."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"preset"}
    return preset("default", **{k: v for k, v in params.items() if k in fields})


def effective_params(params: dict[str, Any]) -> dict[str, Any]:
    """Everything the job will train with, so its record shows the defaults it got too."""
    return {**dataclasses.asdict(train_config(params)),
            "activate": bool(params.get("activate", True))}


def run(job: Job, min_accuracy: float) -> tuple[str, dict[str, Any]]:
    """Train, save, gate promotion; return the terminal status and the fields to record."""
    params = job.record.get("params") or {}
    activate = bool(params.get("activate", True))
    try:
        config = train_config(params)
        job.save(status="running", pid=os.getpid(), started_at=jobfiles.utc_now(),
                 params=effective_params(params))
        version, record, promoted = train_and_save(
            config, ModelStore(job.root), activate=activate, min_accuracy=min_accuracy,
            on_progress=job.progress,
        )
    except Exception as exc:
        return "failed", {"error": f"{type(exc).__name__}: {exc}"}
    metrics = record.get("metrics")
    done = {"model_version": version, "metrics": metrics}
    if activate and not promoted:
        accuracy = (metrics or {}).get("accuracy_8bit")
        return "rejected", {**done, "error": f"8-bit accuracy {accuracy} is below the required "
                                             f"{min_accuracy}; version {version} was saved but "
                                             "not activated"}
    return "succeeded", done


def _parser() -> argparse.ArgumentParser:
    """Arguments JobManager passes; usable by hand for an existing queued job too."""
    parser = argparse.ArgumentParser(prog="python -m service.retrain", description=__doc__)
    parser.add_argument("job_id")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--min-accuracy", type=float,
                        default=float(os.environ.get("RNNADD_MIN_ACCURACY", "1.0")))
    parser.add_argument("--lock-fd", type=int, help="inherited fd holding .train.lock")
    parser.add_argument("--job-lock-fd", type=int, help="inherited fd holding jobs/<id>.lock")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job end to end; exit 2 when there is no such job or it is already taken."""
    args = _parser().parse_args(argv)
    root: Path = args.model_dir
    if not jobfiles.JOB_ID_RE.match(args.job_id) or jobfiles.read_record(root, args.job_id) is None:
        print(f"no such job: {args.job_id!r} in {root}", file=sys.stderr)
        return 2
    job_fd = _lock(args.job_lock_fd, jobfiles.job_lock_path(root, args.job_id))
    record = jobfiles.read_record(root, args.job_id)  # again, now that nobody else can run it
    if job_fd is None or record is None or record.get("status") not in jobfiles.ACTIVE:
        print(f"job {args.job_id} has ended or another process runs it", file=sys.stderr)
        return 2
    job = Job(root, record)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        train_fd = _lock(args.lock_fd, jobfiles.train_lock_path(root))
        if train_fd is None:
            job.finish("failed", error="another training is running; only one runs at a time")
            return 1
        with contextlib.suppress(OSError):
            os.nice(5)  # the web workers on the same cores come first
        status, changes = run(job, args.min_accuracy)
        # Free the training lock before the record says "done", so a client that saw the end
        # of this job can start the next one at once; the job lock still marks us alive.
        os.close(train_fd)
        job.finish(status, **changes)
        return 1 if status == "failed" else 0
    except Terminated as exc:
        job.finish("failed", error=str(exc))
        return 1
    finally:
        with contextlib.suppress(OSError):
            jobfiles.job_lock_path(root, args.job_id).unlink()


if __name__ == "__main__":
    sys.exit(main())
