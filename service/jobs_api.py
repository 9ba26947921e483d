"""POST /v1/retrain, GET /v1/jobs and GET /v1/jobs/<id>: thin routes over JobManager."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request, url_for

from service.auth import require_admin
from service.errors import BadRequest
from service.inputs import read_json
from service.jobs import JobManager

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def parse_limit(raw: str | None) -> int:
    """The ?limit= query parameter, bounded so a listing stays cheap."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.", field="limit")
    return int(raw)


def create_blueprint(jobs: JobManager) -> Blueprint:
    """Retrain job routes; the work happens in separate processes that JobManager starts."""
    bp = Blueprint("jobs", __name__)

    @bp.post("/v1/retrain")
    @require_admin
    def retrain() -> Response:
        params = read_json(request, allow_empty=True)
        job = jobs.submit(params)
        location = url_for("jobs.job", job_id=job["id"])
        return Response(
            json.dumps({"job_id": job["id"], "status": job["status"]}),
            status=202, mimetype="application/json", headers={"Location": location},
        )

    @bp.get("/v1/jobs")
    def job_list() -> dict[str, Any]:
        return {"jobs": jobs.list(limit=parse_limit(request.args.get("limit")))}

    @bp.get("/v1/jobs/<job_id>")
    def job(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id)

    return bp

