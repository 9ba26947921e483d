"""Retrain jobs as separate OS processes, coordinated through files in the model directory.

Why it is race-free across workers and replicas: submit takes the exclusive training lock
itself (non-blocking; held means 409) and hands that very lock to the training process through an
inherited file descriptor (flock locks belong to the open file, not to a process). The lock is
never free between the check and the training, and it is released only when the training process
exits, however it exits. Each job also holds its own jobs/<id>.lock for its whole life, so a
reader can tell a dead job from a live one without touching the training lock.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from service import errors, jobfiles, jobparams
from service.retrain import effective_params
from training.rnn import OPTIMIZERS


class JobManager:
    """Starts, reports and lists retrain jobs; any worker can serve any job."""

    def __init__(
        self,
        store_root: Path | str,
        min_accuracy: float = 1.0,
        python: str = sys.executable,
    ) -> None:
        self.root = Path(store_root)
        self.min_accuracy = float(min_accuracy)
        self.python = python
        self._children: list[subprocess.Popen] = []

    def validate(self, params: Any) -> dict[str, Any]:
        """Checked request parameters (raises errors.BadRequest naming the field)."""
        return jobparams.validate(params, tuple(OPTIMIZERS))

    def submit(self, params: Any) -> dict:
        """Validate, take the training lock, record the job and start its process."""
        checked = self.validate(params)
        self._reap()
        jobfiles.jobs_dir(self.root).mkdir(parents=True, exist_ok=True)
        train_fd = jobfiles.try_lock(jobfiles.train_lock_path(self.root))
        if train_fd is None:
            raise errors.Conflict("a retrain job is already running; try again when it ends")
        job_fd: int | None = None
        try:
            job_id = jobfiles.new_job_id()
            job_fd = jobfiles.try_lock(jobfiles.job_lock_path(self.root, job_id))
            if job_fd is None:  # an id collision: practically impossible, never silent
                raise errors.Conflict("job id collision; try again")
            record = self._new_record(job_id, effective_params(checked))
            jobfiles.write_record(self.root, record)
            self._spawn(record, train_fd, job_fd)
            return record
        finally:
            os.close(train_fd)  # the child keeps the lock through its inherited descriptor
            if job_fd is not None:
                os.close(job_fd)

    def _new_record(self, job_id: str, params: dict[str, Any]) -> dict:
        """The queued record, with every field a reader expects."""
        return {
            "id": job_id, "status": "queued", "params": params,
            "progress": {"step": 0, "max_steps": params.get("max_steps"),
                         "loss": None, "accuracy": None},
            "model_version": None, "metrics": None, "error": None,
            "created_at": jobfiles.utc_now(), "started_at": None, "finished_at": None,
            "pid": None, "min_accuracy": self.min_accuracy,
        }

    def _spawn(self, record: dict, train_fd: int, job_fd: int) -> None:
        """Start `python -m service.retrain` in its own session, immune to worker restarts."""
        job_id = record["id"]
        cmd = [self.python, "-m", "service.retrain", job_id, "--model-dir", str(self.root),
               "--min-accuracy", repr(self.min_accuracy),
               "--lock-fd", str(train_fd), "--job-lock-fd", str(job_fd)]
        project = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH")) if p)
        try:
            with open(jobfiles.log_path(self.root, job_id), "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(train_fd, job_fd), start_new_session=True, cwd=project, env=env,
                )
        except OSError as exc:
            record.update(status="failed", error=f"could not start the training process: {exc}",
                          finished_at=jobfiles.utc_now())
            jobfiles.write_record(self.root, record)
            raise errors.ServiceUnavailable(record["error"]) from exc
        record["pid"] = proc.pid  # the returned copy only; the child writes its own pid
        self._children.append(proc)

    def get(self, job_id: Any) -> dict:
        """A job's record; one whose process died is reported (and stored) as failed."""
        if not isinstance(job_id, str) or not jobfiles.JOB_ID_RE.match(job_id):
            raise errors.NotFound(f"no such job: {job_id!r}")
        self._reap()
        record = jobfiles.read_record(self.root, job_id)
        if record is None:
            raise errors.NotFound(f"no such job: {job_id}")
        return self._settle(record)

    def list(self, limit: int | None = 50) -> list[dict]:
        """Most recent jobs first; limit=None lists them all (the metrics count outcomes so)."""
        self._reap()
        ids = sorted(jobfiles.job_ids(self.root), reverse=True)
        if limit is not None:
            ids = ids[: max(0, limit) * 2]  # ids sort by second; created_at breaks the ties
        records = []
        for job_id in ids:
            record = jobfiles.read_record(self.root, job_id)
            if record is not None:
                records.append(self._settle(record))
        records.sort(key=lambda r: (str(r.get("created_at")), str(r.get("id"))), reverse=True)
        return records if limit is None else records[: max(0, limit)]

    def _settle(self, record: dict) -> dict:
        """Mark a queued/running job failed when nobody holds its lock any more."""
        if record.get("status") not in jobfiles.ACTIVE:
            return record
        job_id = record["id"]
        fd = jobfiles.try_lock(jobfiles.job_lock_path(self.root, job_id), create=False)
        if fd is None and jobfiles.job_lock_path(self.root, job_id).exists():
            return record  # alive: its process holds the lock
        try:
            # The process is gone. Re-read: it may have finished between our two looks.
            latest = jobfiles.read_record(self.root, job_id) or record
            if latest.get("status") not in jobfiles.ACTIVE:
                return latest
            latest.update(status="failed", error=jobfiles.DIED, finished_at=jobfiles.utc_now())
            jobfiles.write_record(self.root, latest)
            with contextlib.suppress(OSError):
                jobfiles.job_lock_path(self.root, job_id).unlink()
            return latest
        finally:
            if fd is not None:
                os.close(fd)

    def _reap(self) -> None:
        """Collect finished children so they do not linger as zombies."""
        self._children = [p for p in self._children if p.poll() is None]
