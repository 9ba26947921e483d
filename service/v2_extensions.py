"""The /v2 extensions tools walk: the model repository, Triton's model config and statistics.

Load activates a version through service.activation, exactly as POST /v1/models/<v>/activate
does (the gate, the admin token, compare-and-set on CURRENT); unload is refused because this
server always serves one model. Statistics are read from the Prometheus metrics, so they add up
every worker's requests, REST and gRPC alike.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from service import activation, oip
from service.auth import require_admin
from service.context import services
from service.errors import Conflict, V2Error
from service.inputs import read_body

# Every route that answers inferences of the model: /v1, /v2 REST and gRPC.
INFERENCE_ENDPOINTS = frozenset({
    "/v1/predict", "/v1/predict/batch", "/v2/models/<model_name>/infer",
    "/v2/models/<model_name>/versions/<version>/infer",
    "/inference.GRPCInferenceService/ModelInfer",
})
TRITON_TYPES = {"INT64": "TYPE_INT64", "BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}
LOAD_PARAMETERS = frozenset({"version", "force"})


def _check_name(model_name: str) -> None:
    """This server holds one model; any other name is unknown."""
    if model_name != oip.MODEL_NAME:
        raise V2Error(f"unknown model {model_name!r}; this server serves {oip.MODEL_NAME!r}", 404)


def _options(allowed: frozenset[str], where: str) -> dict[str, Any]:
    """The optional JSON body's object at `where` (top level when empty), unknown keys refused."""
    data = read_body(request.environ, services().settings.max_body)
    try:  # like /v2 infer, whatever the Content-Type (tritonclient sends none)
        body = json.loads(data) if data.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise V2Error(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise V2Error("the request body must be a JSON object")
    options = body.get(where, {}) if where else body
    if not isinstance(options, dict):
        raise V2Error(f"{where} must be a JSON object")
    unknown = sorted(set(options) - allowed)
    if unknown or (where and set(body) - {where}):
        name = unknown[0] if unknown else sorted(set(body) - {where})[0]
        raise V2Error(f"unknown field {name!r}; this request takes "
                      f"{', '.join(f'{where}.{k}' if where else k for k in sorted(allowed))}")
    return options


def repository_index() -> list[dict[str, Any]]:
    """Every stored version: READY for the one served, UNAVAILABLE with the reason otherwise."""
    only_ready = _options(frozenset({"ready"}), "").get("ready", False)
    if not isinstance(only_ready, bool):
        raise V2Error("ready must be true or false")
    found = services()
    served = found.holder.current()
    entries = []
    listed, _ = found.store.page(len(found.store.version_ids()) or 1)  # cached summaries
    for record in listed:
        version = record.get("version")
        if served is not None and version == served.version:
            state, reason = "READY", ""
        elif "error" in record:
            state, reason = "UNAVAILABLE", f"does not load: {record['error']}"
        else:
            state, reason = "UNAVAILABLE", "stored, not active (load activates it)"
        if state == "READY" or not only_ready:
            entries.append({"name": oip.MODEL_NAME, "version": version, "state": state,
                            "reason": reason})
    return entries


def load(model_name: str) -> dict[str, Any]:
    """Activate parameters.version through the gate (parameters.force to override)."""
    _check_name(model_name)
    options = _options(LOAD_PARAMETERS, "parameters")
    force = options.get("force", False)
    if type(force) is not bool:
        raise V2Error("parameters.force must be true or false")
    version = options.get("version")
    if version is None:
        raise V2Error("parameters.version is required: the stored version to activate "
                      "(POST /v2/repository/index lists them)")
    if not isinstance(version, str):
        raise V2Error("parameters.version must be a version id (a string)")
    found = services()
    return activation.activate(found.store, found.holder, version, force=force,
                               max_bits=found.settings.max_bits)


def model_config() -> dict[str, Any]:
    """The model as Triton describes a model's configuration."""
    runtime = services().runtime
    served = runtime.model()

    def tensor(name: str, datatype: str) -> dict[str, Any]:
        return {"name": name, "data_type": TRITON_TYPES[datatype], "dims": [-1]}

    return {
        "name": oip.MODEL_NAME, "platform": "numpy", "backend": "rnnadd", "max_batch_size": 0,
        "input": [tensor(name, oip.INPUT_DATATYPE) for name in oip.INPUT_NAMES],
        "output": [tensor(name, datatype) for name, datatype in oip.OUTPUT_TYPES.items()],
        "parameters": {key: {"string_value": str(value)} for key, value in (
            ("version", served.version), ("bits", served.bits),
            ("max_bits", runtime.max_bits), ("max_batch", runtime.max_batch))},
    }


def _ok(labels: dict[str, str]) -> bool:
    """Whether a request sample counts as a success (HTTP below 400, gRPC OK)."""
    status = labels.get("status", "")
    return status == "OK" if labels.get("protocol") == "grpc" else status.isdigit() and \
        int(status) < 400


def model_stats(version: str | None) -> dict[str, Any]:
    """Triton's statistics shape, from the request counters, latency histogram and pairs."""
    found = services()
    served = found.runtime.model(version)
    counts = {"ok": 0.0, "error": 0.0}
    seconds = {"ok": 0.0, "error": 0.0}
    pairs = 0.0
    for family in found.metrics.families():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "rnnadd_pairs_predicted_total":
                pairs += sample.value
            elif labels.get("endpoint") not in INFERENCE_ENDPOINTS:
                continue
            elif sample.name == "rnnadd_http_requests_total":
                counts["ok" if _ok(labels) else "error"] += sample.value
            elif sample.name == "rnnadd_http_request_duration_seconds_sum":
                seconds[labels.get("outcome", "error")] += sample.value

    def stat(outcome: str) -> dict[str, int]:
        return {"count": int(counts[outcome]), "ns": int(seconds[outcome] * 1e9)}

    return {"model_stats": [{
        "name": oip.MODEL_NAME, "version": served.version, "last_inference": 0,
        "inference_count": int(pairs), "execution_count": int(counts["ok"]),
        "inference_stats": {"success": stat("ok"), "fail": stat("error")},
        "batch_stats": [],
    }]}


def register(bp: Blueprint, answer: Any) -> None:
    """Add the extensions' routes to the /v2 blueprint; `answer` writes a JSON body."""

    @bp.post("/repository/index")
    def index() -> Response:
        return answer(repository_index())

    @bp.post("/repository/models/<model_name>/load")
    @require_admin
    def load_model(model_name: str) -> Response:
        return answer(load(model_name))

    @bp.post("/repository/models/<model_name>/unload")
    @require_admin
    def unload_model(model_name: str) -> Response:
        _check_name(model_name)
        raise Conflict(f"{oip.MODEL_NAME} cannot be unloaded: this server always serves exactly "
                       "one model. To serve another version, load it: POST "
                       f"/v2/repository/models/{oip.MODEL_NAME}/load with "
                       '{"parameters": {"version": "<id>"}}.')

    @bp.get("/models/<model_name>/config")
    def config(model_name: str) -> Response:
        _check_name(model_name)
        return answer(model_config())

    @bp.get("/models/stats")
    def all_stats() -> Response:
        return answer(model_stats(None))

    @bp.get("/models/<model_name>/stats")
    @bp.get("/models/<model_name>/versions/<version>/stats")
    def stats(model_name: str, version: str | None = None) -> Response:
        _check_name(model_name)
        return answer(model_stats(version))
