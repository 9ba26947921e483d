"""POST /v1/predict and /v1/predict/batch: the /v1 codec over the inference core."""

from __future__ import annotations

import functools
import json
import operator

from flask import Blueprint, Response, request

from service.inputs import pair_field, parse_flag, parse_pair_body, parse_pairs, read_json
from service.runtime import AUTO, Prediction, Runtime

JSON = "application/json"
TABLE_BITS = 12  # widths up to this get lookup tables of every value's text (4096 entries)
TRUE_FALSE = ("false", "true")


@functools.lru_cache(maxsize=16)
def digit_tables(bits: int) -> tuple[list[str], list[str]]:
    """Decimal and binary text of every value below 2**bits; formatting ints costs more."""
    return [str(i) for i in range(1 << bits)], [format(i, f"0{bits}b") for i in range(1 << bits)]


def trust_mark(p: Prediction) -> str:
    """JSON members after model_version: none for a trusted version, else trusted and forced."""
    return "" if p.trusted else f', "trusted": false, "forced": {TRUE_FALSE[p.forced]}'


def result_json(a: int, b: int, bits: int, total: int, version: str, mark: str = "") -> str:
    """One result object as JSON text; every value is a number, a bool or a safe token.

    The version is a store id (digits, letters, "T", "Z", "-": nothing to escape), so the
    text is formatted directly rather than through a JSON encoder.
    """
    return (f'{{"a": {a}, "b": {b}, "bits": {bits}, "binary": "{total:0{bits}b}", '
            f'"decimal": {total}, "correct": {TRUE_FALSE[total == a + b]}, '
            f'"model_version": "{version}"{mark}}}')


def format_one(p: Prediction) -> str:
    """A single prediction in the documented response shape."""
    return result_json(p.a[0], p.b[0], p.bits, p.sums[0], p.version, trust_mark(p)) + "\n"


def format_many(p: Prediction) -> str:
    """A batch as JSON text built without an encoder (narrow widths use lookup tables)."""
    a, b, totals, bits, version, mark = p.a, p.b, p.sums, p.bits, p.version, trust_mark(p)
    flags = list(map(operator.eq, totals, map(operator.add, a, b)))  # C-speed "correct" column
    if bits <= TABLE_BITS:
        dec, binary = digit_tables(bits)
        middle = f', "bits": {bits}, "binary": "'
        tail = f', "model_version": "{version}"{mark}}}'
        items = [f'{{"a": {dec[x]}, "b": {dec[y]}{middle}{binary[t]}", "decimal": {dec[t]}, '
                 f'"correct": {TRUE_FALSE[ok]}{tail}'
                 for x, y, t, ok in zip(a, b, totals, flags, strict=True)]
    else:
        items = [result_json(x, y, bits, t, version, mark)
                 for x, y, t in zip(a, b, totals, strict=True)]
    accuracy = json.dumps(sum(flags) / len(items))
    return (f'{{"model_version": "{version}"{mark}, "accuracy": {accuracy}, '
            f'"results": [{", ".join(items)}]}}\n')


def format_trace(p: Prediction, steps: list[dict]) -> str:
    """A single prediction with the network's step-by-step view (numbers, so json.dumps)."""
    body = json.loads(format_one(p))
    body["trace"] = steps
    return json.dumps(body) + "\n"


def create_blueprint(runtime: Runtime, max_body: int) -> Blueprint:
    """Prediction routes bound to this app's inference core."""
    bp = Blueprint("predict", __name__)

    @bp.post("/v1/predict")
    def predict() -> Response:
        body = read_json(request.environ, max_body)
        a, b = parse_pair_body(body, runtime.max_digits)
        bits = body.get("bits", AUTO)
        if parse_flag(body, "trace"):
            return Response(format_trace(*runtime.trace(a, b, bits)), mimetype=JSON)
        return Response(format_one(runtime.predict([a], [b], bits)), mimetype=JSON)

    @bp.post("/v1/predict/batch")
    def predict_batch() -> Response:
        body = read_json(request.environ, max_body)
        a, b = parse_pairs(body, runtime.max_digits)
        prediction = runtime.predict(a, b, body.get("bits", AUTO), name=pair_field)
        return Response(format_many(prediction), mimetype=JSON)

    return bp
