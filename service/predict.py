"""POST /v1/predict and /v1/predict/batch: thin routes over small, testable handlers."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from service.inputs import Limits, parse_bits, parse_pair_body, parse_pairs, read_json
from service.metrics import Metrics
from service.model import LoadedModel, ModelHolder

JSON = "application/json"


def predict_one(model: LoadedModel, a: int, b: int, bits: int) -> dict[str, Any]:
    """One prediction, in the documented response shape."""
    (total,) = model.predictor.add([a], [b], bits)
    return {
        "a": a,
        "b": b,
        "bits": bits,
        "binary": format(total, f"0{bits}b"),
        "decimal": total,
        "correct": total == a + b,
        "model_version": model.version,
    }


def predict_many(model: LoadedModel, a: list[int], b: list[int], bits: int) -> str:
    """A batch in one vectorized call, serialized straight to JSON text.

    Every value is an int, a bool or a string of binary digits or a version id, so the
    items are formatted without an encoder; this is several times faster for 10,000 pairs.
    """
    totals = model.predictor.add(a, b, bits)
    width = f"0{bits}b"
    version = json.dumps(model.version)
    item = '{"a": %d, "b": %d, "bits": ' + str(bits) + ', "binary": "%s", "decimal": %d, '
    tail = ', "model_version": ' + version + "}"
    parts = []
    correct = 0
    for x, y, total in zip(a, b, totals, strict=True):
        ok = total == x + y
        correct += ok
        parts.append(item % (x, y, format(total, width), total) + '"correct": '
                     + ("true" if ok else "false") + tail)
    accuracy = json.dumps(correct / len(parts))
    return ('{"model_version": ' + version + ', "accuracy": ' + accuracy + ', "results": ['
            + ", ".join(parts) + "]}")


def create_blueprint(holder: ModelHolder, metrics: Metrics, limits: Limits) -> Blueprint:
    """Prediction routes bound to this app's model holder, metrics and limits."""
    bp = Blueprint("predict", __name__)

    @bp.post("/v1/predict")
    def predict() -> Response:
        body = read_json(request)
        a, b = parse_pair_body(body, limits)
        model = holder.get()
        bits = parse_bits(body, max(a, b).bit_length(), model.bits, limits)
        result = predict_one(model, a, b, bits)
        metrics.add_pairs(1)
        return Response(json.dumps(result), mimetype=JSON)

    @bp.post("/v1/predict/batch")
    def predict_batch() -> Response:
        body = read_json(request)
        a, b, longest = parse_pairs(body, limits)
        model = holder.get()
        bits = parse_bits(body, longest, model.bits, limits)
        text = predict_many(model, a, b, bits)
        metrics.add_pairs(len(a))
        return Response(text, mimetype=JSON)

    return bp
