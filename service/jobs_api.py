"""POST /v1/retrain and /v1/jobs: thin routes over JobManager."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request, url_for

from service.auth import require_admin
from service.errors import BadRequest
from service.inputs import read_json
from service.jobs import JobManager

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
JSON = "application/json"


def parse_limit(raw: str | None) -> int:
    """The ?limit= query parameter, bounded so a listing stays cheap."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.", field="limit")
    return int(raw)


def _json(body: Any, status: int = 200, **headers: str) -> Response:
    """A JSON answer with a trailing newline, as every JSON answer has."""
    return Response(json.dumps(body) + "\n", status=status, mimetype=JSON, headers=headers)


def create_blueprint(jobs: JobManager, max_body: int) -> Blueprint:
    """Retrain job routes; the work happens in separate processes that JobManager starts."""
    bp = Blueprint("jobs", __name__)

    @bp.post("/v1/retrain")
    @require_admin
    def retrain() -> Response:
        params = read_json(request.environ, max_body, allow_empty=True)
        job = jobs.submit(params)
        location = url_for("jobs.job", job_id=job["id"])
        return _json({"job_id": job["id"], "status": job["status"]}, 202, Location=location)

    @bp.get("/v1/jobs")
    def job_list() -> Response:
        records, problems = jobs.list(limit=parse_limit(request.args.get("limit")))
        body: dict[str, Any] = {"jobs": records}
        if problems:
            body["unreadable"] = problems
        return _json(body)

    @bp.get("/v1/jobs/<job_id>")
    def job(job_id: str) -> Response:
        return _json(jobs.get(job_id))

    @bp.delete("/v1/jobs/<job_id>")
    @require_admin
    def cancel(job_id: str) -> Response:
        record, ended = jobs.cancel(job_id)
        if ended:
            return _json(record)
        return _json(record, 202, Location=url_for("jobs.job", job_id=record["id"]))

    return bp
