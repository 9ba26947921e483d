"""POST /v1/predict and /v1/predict/batch: thin routes over small, testable handlers."""

from __future__ import annotations

import functools
import json
import operator

from flask import Blueprint, Response, request

from service.inputs import (
    Limits,
    check_work,
    parse_bits,
    parse_pair_body,
    parse_pairs,
    read_json,
)
from service.metrics import Metrics
from service.model import LoadedModel, ModelHolder

JSON = "application/json"
TABLE_BITS = 12  # widths up to this get lookup tables of every value's text (4096 entries)
TRUE_FALSE = ("false", "true")


@functools.lru_cache(maxsize=16)
def digit_tables(bits: int) -> tuple[list[str], list[str]]:
    """Decimal and binary text of every value below 2**bits; formatting ints costs more."""
    return [str(i) for i in range(1 << bits)], [format(i, f"0{bits}b") for i in range(1 << bits)]


def result_json(a: int, b: int, bits: int, total: int, version: str) -> str:
    """One result object as JSON text; every value is a number, a bool or a safe token.

    The version is a store id (digits, letters, "T", "Z", "-": nothing to escape), so the
    text is formatted directly, which is cheaper than a JSON encoder on the hot path.
    """
    return (f'{{"a": {a}, "b": {b}, "bits": {bits}, "binary": "{total:0{bits}b}", '
            f'"decimal": {total}, "correct": {TRUE_FALSE[total == a + b]}, '
            f'"model_version": "{version}"}}')


def predict_one(model: LoadedModel, a: int, b: int, bits: int) -> str:
    """One prediction, in the documented response shape, as JSON text."""
    (total,) = model.predictor.add([a], [b], bits)
    return result_json(a, b, bits, total, model.version)


def predict_many(model: LoadedModel, a: list[int], b: list[int], bits: int) -> str:
    """A batch from one vectorized call, as JSON text built without an encoder.

    For 10,000 narrow pairs, table lookups instead of int formatting make serializing about
    three times faster (about 2.5 ms instead of 7.5 ms here), as much as the forward pass.
    """
    totals = model.predictor.add(a, b, bits)
    flags = list(map(operator.eq, totals, map(operator.add, a, b)))  # C-speed "correct" column
    version = model.version
    if bits <= TABLE_BITS:
        dec, binary = digit_tables(bits)
        middle = f', "bits": {bits}, "binary": "'
        tail = f', "model_version": "{version}"}}'
        items = [f'{{"a": {dec[x]}, "b": {dec[y]}{middle}{binary[t]}", "decimal": {dec[t]}, '
                 f'"correct": {TRUE_FALSE[ok]}{tail}'
                 for x, y, t, ok in zip(a, b, totals, flags, strict=True)]
    else:
        items = [result_json(x, y, bits, t, version) for x, y, t in zip(a, b, totals, strict=True)]
    accuracy = json.dumps(sum(flags) / len(items))
    return (f'{{"model_version": "{version}", "accuracy": {accuracy}, '
            f'"results": [{", ".join(items)}]}}')


def create_blueprint(
    holder: ModelHolder, metrics: Metrics, limits: Limits, max_body: int
) -> Blueprint:
    """Prediction routes bound to this app's model holder, metrics and limits."""
    bp = Blueprint("predict", __name__)

    @bp.post("/v1/predict")
    def predict() -> Response:
        body = read_json(request, max_body)
        a, b = parse_pair_body(body, limits)
        model = holder.get()
        bits = parse_bits(body, max(a, b).bit_length(), model.bits, limits)
        text = predict_one(model, a, b, bits)
        metrics.add_pairs(1)
        return Response(text, mimetype=JSON)

    @bp.post("/v1/predict/batch")
    def predict_batch() -> Response:
        body = read_json(request, max_body)
        a, b, longest = parse_pairs(body, limits)
        model = holder.get()
        bits = parse_bits(body, longest, model.bits, limits)
        check_work(len(a), bits, limits)
        text = predict_many(model, a, b, bits)
        metrics.add_pairs(len(a))
        return Response(text, mimetype=JSON)

    return bp
