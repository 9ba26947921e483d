"""GET /v1/model, GET /v1/models and the admin POST /v1/models/<version>/activate."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, request

from service.auth import require_admin
from service.errors import BadRequest, Conflict, GateFailed, NotFound
from service.inputs import read_json
from service.jobs import storage_error
from service.model import LoadedModel, ModelHolder, gate_summary
from service.runtime import Runtime
from training import store as model_store
from training.store import ModelError, ModelStore, VersionNotFound

SUMMARY_OMITS = frozenset({"history"})
JSON = "application/json"

log = logging.getLogger("rnnadd.models")


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
        if not model_store.is_version(version):
            raise NotFound(f"{version!r} is not a version id.", field="version")
        try:
            previous = store.current()
        except ModelError:
            previous = None
        try:
            gate = store.activate(version, force=force, max_bits=max_bits)
        except VersionNotFound as exc:
            raise NotFound(f"No stored version {version}.", field="version") from exc
        except model_store.GateFailed as exc:
            raise GateFailed(
                f"Version {version} fails the promotion gate ({exc.check}); send "
                '{"force": true} to activate it anyway.',
                field="version", extra={"check": exc.check, "gate": exc.gate},
            ) from exc
        except ModelError as exc:
            raise Conflict(f"Version {version} cannot be activated, it fails validation: {exc}",
                           field="version") from exc
        except OSError as exc:
            raise storage_error(exc, f"activate version {version}") from exc
        if not gate.get("passed"):
            log.warning("version %s activated by force although it fails the gate (%s)",
                        version, gate.get("failed"))
        holder.refresh(force=True)
        served = holder.current()
        return _json({"active": version, "previous": previous,
                      "model_version": served.version if served else None,
                      "forced": not gate.get("passed"), "gate": gate})

    return bp
