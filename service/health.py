"""GET /healthz (the process lives) and GET /readyz (a valid model is loaded)."""

from __future__ import annotations

from flask import Blueprint

from service.errors import ServiceUnavailable
from service.model import ModelHolder


def create_blueprint(holder: ModelHolder) -> Blueprint:
    """Probes for orchestrators: liveness never touches the model, readiness does."""
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @bp.get("/readyz")
    def readyz() -> dict[str, str]:
        model = holder.current()
        if model is None:
            raise ServiceUnavailable(f"No valid model is loaded: {holder.reason}")
        return {"status": "ready", "model_version": model.version}

    return bp
