"""GET /v1/model, GET /v1/models (paginated) and the admin POST /v1/models/<version>/activate."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from service import activation
from service.auth import require_admin
from service.errors import BadRequest
from service.inputs import read_json
from service.model import assess, serving_state
from service.runtime import Runtime
from training.ids import is_version
from training.store import ModelError, ModelStore

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
JSON = "application/json"


def _json(body: Any) -> Response:
    """A JSON answer with a trailing newline."""
    return Response(json.dumps(body) + "\n", mimetype=JSON)


def _limit(raw: str | None) -> int:
    """The ?limit= query parameter, bounded so one page stays cheap."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.", field="limit")
    return int(raw)


def create_blueprint(store: ModelStore, runtime: Runtime, max_body: int) -> Blueprint:
    """Model inspection and activation routes bound to this app's store and inference core."""
    bp = Blueprint("models", __name__)
    holder, max_bits = runtime.holder, runtime.max_bits

    @bp.get("/v1/model")
    def model() -> Response:
        served = runtime.model()
        state = serving_state(holder, served, max_bits)
        recorded = served.record.get("gate")
        if isinstance(recorded, dict):  # the checks stay; the summary says what they mean here
            state["gate"] = {**recorded, **state["gate"]}
        return _json({**served.record, "active": True, **state})

    @bp.get("/v1/models")
    def models() -> Response:
        limit = _limit(request.args.get("limit"))
        after = request.args.get("after")
        if after is not None and not is_version(after):
            raise BadRequest(f"after must be a version id (as next_after gives), got {after!r}.",
                             field="after")
        body: dict[str, Any] = {"active": None}
        try:
            body["active"] = store.current()
        except ModelError as exc:  # shown without the server's own paths
            body["current_error"] = str(exc).replace(f"{store.root}/", "").replace(
                str(store.root), "the model directory")
        served = holder.current()
        body["serving"] = served.version if served else None
        items = []
        page, next_after = store.page(limit, after)
        for record in page:
            item = dict(record)
            item["active"] = record.get("version") == body["active"]
            if "error" not in record:
                item["gate"] = assess(record, max_bits).gate
                item["pinned"] = store.pinned(record["version"])
            items.append(item)
        body["models"] = items
        body["next_after"] = next_after
        return _json(body)

    @bp.post("/v1/models/<version>/activate")
    @require_admin
    def activate(version: str) -> Response:
        options = read_json(request.environ, max_body, allow_empty=True)
        unknown = sorted(set(options) - {"force"})
        if unknown:
            raise BadRequest(f"Unknown field {unknown[0]!r}; allowed fields: force.",
                             field=unknown[0])
        force = options.get("force", False)
        if type(force) is not bool:
            raise BadRequest("force must be true or false.", field="force")
        return _json(activation.activate(store, holder, version, force=force,
                                         max_bits=max_bits))

    return bp
