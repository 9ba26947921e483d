"""GET /openapi.json: the API contract, read once from the file tests validate against."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

SPEC_PATH = Path(__file__).with_name("openapi.json")


def create_blueprint(path: Path = SPEC_PATH) -> Blueprint:
    """Serve the OpenAPI document as stored, so what clients read is what tests check."""
    bp = Blueprint("openapi", __name__)
    document = path.read_bytes()

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return Response(document, mimetype="application/json")

    return bp
