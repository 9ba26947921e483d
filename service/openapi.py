"""GET /openapi.json: the API contract, with this server's limits and the trainer's bounds.

The stored document holds the defaults; the served one says what this configuration accepts
(RNNADD_MAX_BITS, RNNADD_MAX_BATCH) and takes the retrain fields from training.train, so the
document, the server and the trainer cannot disagree.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response

from service.settings import Settings
from training.train import request_schema

SPEC_PATH = Path(__file__).with_name("openapi.json")


def document(settings: Settings, path: Path = SPEC_PATH) -> dict[str, Any]:
    """The stored document with the configured limits and the retrain schema filled in."""
    doc = json.loads(path.read_bytes())
    schemas = doc["components"]["schemas"]
    for name in ("PredictRequest", "BatchRequest"):
        schemas[name]["properties"]["bits"]["maximum"] = settings.max_bits
    schemas["BatchRequest"]["properties"]["pairs"]["maxItems"] = settings.max_batch
    schemas["NonNegativeInteger"]["oneOf"][1]["maxLength"] = settings.max_digits
    retrain = copy.deepcopy(request_schema())
    retrain.setdefault("properties", {})["activate"] = schemas["RetrainRequest"]["properties"][
        "activate"
    ]
    schemas["RetrainRequest"] = retrain
    return doc


def create_blueprint(settings: Settings) -> Blueprint:
    """Serve the document built once at startup."""
    bp = Blueprint("openapi", __name__)
    body = json.dumps(document(settings), indent=1).encode() + b"\n"

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return Response(body, mimetype="application/json")

    return bp
