"""Open Inference Protocol (KServe V2) REST endpoints: a codec over the inference core.

Errors under /v2 are the protocol's {"error": "..."} objects; service.errors renders them.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from flask import Blueprint, Response, current_app, request

from service import oip, v2_extensions
from service.auth import caller_is_admin
from service.context import services
from service.errors import APIError, V2Error
from service.inputs import read_body
from service.model import LoadedModel, assess
from service.openapi import SPEC_PATH
from service.runtime import AUTO

JSON = "application/json"
BINARY = "application/octet-stream"
PREFIX = "/v2"
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics")
DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _health(ok: bool) -> Response:
    """Health answers are the status alone: 200 for true, 400 for false, an empty body."""
    return Response(b"", status=200 if ok else 400, mimetype="text/plain")


def _json(body: Any) -> Response:
    """A JSON body with keys in the order the protocol lists them."""
    return Response(json.dumps(body) + "\n", mimetype=JSON)


def _check_name(model_name: str) -> None:
    """This server holds one model; any other name is unknown."""
    if model_name != oip.MODEL_NAME:
        raise V2Error(f"unknown model {model_name!r}; this server serves {oip.MODEL_NAME!r}", 404)


def _model(version: str | None, *, admin: bool = False) -> LoadedModel:
    """The active model, or the stored version the URL names (untrusted: admins only)."""
    return services().runtime.model(version, admin=admin)


def _body() -> bytes:
    """The request body, inflated when the client compressed it (tritonclient can)."""
    limit = int(current_app.config["MAX_BODY"])
    data = read_body(request.environ, limit)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in DECOMPRESSORS:
        raise V2Error(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)", 415)
    inflater = zlib.decompressobj(DECOMPRESSORS[encoding])
    try:
        plain = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise V2Error(f"the body is not valid {encoding} data: {exc}") from exc
    if len(plain) > limit:
        raise V2Error(f"the decompressed body exceeds the limit of {limit} bytes", 413)
    if not inflater.eof:
        raise V2Error(f"the {encoding} body is truncated")
    return plain


def model_metadata(model: LoadedModel, versions: list[str]) -> dict[str, Any]:
    """Name, versions, platform and tensors; `parameters` says which version and widths apply."""
    runtime = services().runtime
    return {
        **oip.model_metadata(versions),
        "parameters": {"max_bits": runtime.max_bits, "max_batch": runtime.max_batch,
                       "version": model.version, "bits": model.bits,
                       "gate": assess(model.record, runtime.max_bits).gate},
    }


def infer(model_name: str, version: str | None = None) -> Response:
    """Decode, predict through the inference core, encode."""
    _check_name(model_name)
    runtime = services().runtime
    admin = False
    if version is not None:
        admin = caller_is_admin()
        runtime.model(version, admin=admin)  # unknown: 404, untrusted: 403, whatever the body
    req = oip.parse_infer_request(_body(), request.headers.get(oip.HEADER_LENGTH),
                                  runtime.max_batch, runtime.max_digits)
    prediction = runtime.predict(req.a, req.b, req.parameters.get("bits", AUTO), version,
                                 name=lambda i, j: f"input {oip.INPUT_NAMES[j]!r}[{i}]",
                                 admin=admin)
    header: dict[str, Any] = {"model_name": oip.MODEL_NAME, "model_version": prediction.version}
    if req.id is not None:
        header["id"] = req.id
    header["parameters"] = {"bits": prediction.bits}
    if not prediction.trusted:  # the marker every codec carries (runtime.Prediction)
        header["parameters"].update(trusted=False, forced=prediction.forced)
    body, header_length = oip.encode_infer_response(
        header, oip.outputs(req, prediction.sums, prediction.bits)
    )
    if header_length is None:
        return Response(body + b"\n", mimetype=JSON)
    response = Response(body, mimetype=BINARY)
    response.headers[oip.HEADER_LENGTH] = str(header_length)
    return response


def _routes(bp: Blueprint) -> None:
    """Every path of the protocol's REST API, with and without a version."""
    version = json.loads(SPEC_PATH.read_bytes())["info"]["version"]
    server = {"name": oip.MODEL_NAME, "version": version, "extensions": list(EXTENSIONS)}

    @bp.get("")
    @bp.get("/")
    def server_metadata() -> Response:
        return _json(server)

    @bp.get("/health/live")
    def live() -> Response:
        return _health(True)

    @bp.get("/health/ready")
    def ready() -> Response:
        return _health(services().holder.current() is not None)

    @bp.get("/models/<model_name>")
    @bp.get("/models/<model_name>/versions/<version>")
    def metadata(model_name: str, version: str | None = None) -> Response:
        _check_name(model_name)
        model = _model(version)
        store = services().store
        listed, _ = store.page(len(store.version_ids()) or 1)  # cached summaries, no reads
        versions = [r["version"] for r in listed if "error" not in r]
        return _json(model_metadata(model, versions))

    @bp.get("/models/<model_name>/ready")
    @bp.get("/models/<model_name>/versions/<version>/ready")
    def model_ready(model_name: str, version: str | None = None) -> Response:
        _check_name(model_name)
        if version is None:
            return _health(services().holder.current() is not None)
        try:
            _model(version, admin=caller_is_admin())
        except APIError as exc:
            if exc.status == 404:
                raise
            return _health(False)
        return _health(True)

    v2_extensions.register(bp, _json)
    bp.add_url_rule("/models/<model_name>/infer", view_func=infer, methods=["POST"])
    bp.add_url_rule("/models/<model_name>/versions/<version>/infer", view_func=infer,
                    methods=["POST"])


def create_blueprint() -> Blueprint:
    """The /v2 blueprint; the app factory registers it beside /v1."""
    bp = Blueprint("v2", __name__, url_prefix=PREFIX)
    _routes(bp)
    return bp
