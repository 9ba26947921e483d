"""GET /healthz (the process lives) and GET /readyz (a valid model is loaded, and which)."""

from __future__ import annotations

import socket
from typing import Any

from flask import Blueprint

from service.model import serving_state
from service.runtime import Runtime


def create_blueprint(runtime: Runtime) -> Blueprint:
    """Probes for orchestrators: liveness never touches the model, readiness does."""
    bp = Blueprint("health", __name__)
    replica = socket.gethostname()

    @bp.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @bp.get("/readyz")
    def readyz() -> dict[str, Any]:
        model = runtime.model()  # 503 while no model is loaded
        state = serving_state(runtime.holder, model, runtime.max_bits)
        status = "degraded" if state["degraded"] else "ready"
        return {"status": status, "model_version": model.version, "replica": replica, **state}

    return bp
