"""GET /v1/model, GET /v1/models and the admin rollback POST /v1/models/<version>/activate."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.auth import require_admin
from service.errors import Conflict, NotFound
from service.model import ModelHolder
from training.store import ModelError, ModelStore, VersionNotFound, is_version

SUMMARY_OMITS = frozenset({"history"})


def summary(record: dict[str, Any], active: str | None) -> dict[str, Any]:
    """A stored version for the listing: its record without the long training history."""
    item = {k: v for k, v in record.items() if k not in SUMMARY_OMITS}
    item["active"] = record.get("version") == active
    return item


def relative(exc: ModelError, store: ModelStore) -> str:
    """The store's message without the server's absolute paths."""
    return str(exc).replace(f"{store.root}/", "")


def create_blueprint(store: ModelStore, holder: ModelHolder) -> Blueprint:
    """Model inspection and rollback routes bound to this app's store and holder."""
    bp = Blueprint("models", __name__)

    @bp.get("/v1/model")
    def model() -> dict[str, Any]:
        served = holder.get()
        return {**served.record, "active": True}

    @bp.get("/v1/models")
    def models() -> dict[str, Any]:
        active = store.current()
        served = holder.current()
        return {
            "active": active,
            "serving": served.version if served else None,
            "models": [summary(record, active) for record in store.versions()],
        }

    @bp.post("/v1/models/<version>/activate")
    @require_admin
    def activate(version: str) -> dict[str, Any]:
        if not is_version(version):
            raise NotFound(f"{version!r} is not a version id.", field="version")
        previous = store.current()
        try:
            store.activate(version)
        except VersionNotFound as exc:
            raise NotFound(f"No stored version {version}.", field="version") from exc
        except ModelError as exc:
            raise Conflict(
                f"Version {version} cannot be activated, it fails validation: "
                f"{relative(exc, store)}",
                field="version",
            ) from exc
        holder.refresh(force=True)
        served = holder.current()
        return {
            "active": version,
            "previous": previous,
            "model_version": served.version if served else None,
        }

    return bp
