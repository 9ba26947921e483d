"""GET /v1/model, GET /v1/models and the admin POST /v1/models/<version>/activate."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from service import activation
from service.auth import require_admin
from service.errors import BadRequest
from service.inputs import read_json
from service.model import LoadedModel, ModelHolder, gate_summary
from service.runtime import Runtime
from training.store import ModelError, ModelStore

SUMMARY_OMITS = frozenset({"history"})
JSON = "application/json"



def _json(body: Any) -> Response:
    """A JSON answer with a trailing newline."""
    return Response(json.dumps(body) + "\n", mimetype=JSON)


def serving_state(holder: ModelHolder, model: LoadedModel, max_bits: int) -> dict[str, Any]:
    """What an operator needs to trust the served version: its gate, forced, degraded."""
    gate = gate_summary(model.record, max_bits)
    return {"gate": gate, "forced": not gate["passed"], "degraded": holder.degraded}


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
        body: dict[str, Any] = {"active": None}
        try:
            body["active"] = store.current()
        except ModelError as exc:  # shown without the server's own paths
            body["current_error"] = str(exc).replace(f"{store.root}/", "").replace(
                str(store.root), "the model directory")
        served = holder.current()
        body["serving"] = served.version if served else None
        items = []
        for record in store.versions():
            item = {k: v for k, v in record.items() if k not in SUMMARY_OMITS}
            item["active"] = record.get("version") == body["active"]
            if "error" not in record:
                item["gate"] = gate_summary(record, max_bits)
            items.append(item)
        body["models"] = items
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
