"""Open Inference Protocol (KServe V2) REST endpoints, beside /v1 on the same model holder.

Errors under /v2 are the protocol's {"error": "..."} objects, not /v1's problem documents:
this blueprint's handlers are the one place that maps exceptions to them.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from service import oip
from service.context import services
from service.errors import APIError, render_errors_under
from service.inputs import check_work, parse_bits
from service.model import LoadedModel
from service.openapi import SPEC_PATH
from training.store import ModelError, VersionNotFound

JSON = "application/json"
BINARY = "application/octet-stream"
PREFIX = "/v2"
DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}

log = logging.getLogger("rnnadd.v2")


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """The protocol's error object."""
    response = Response(json.dumps({"error": message}), status=status, mimetype=JSON)
    response.headers.update(headers or {})
    return response


def _health(ok: bool) -> Response:
    """Health answers are the status alone: 200 for true, 400 for false, an empty body."""
    return Response(b"", status=200 if ok else 400, mimetype="text/plain")


def _json(body: dict[str, Any]) -> Response:
    """A JSON body with keys in the order the protocol lists them."""
    return Response(json.dumps(body), mimetype=JSON)


def _check_name(model_name: str) -> None:
    """This server holds one model; any other name is unknown."""
    if model_name != oip.MODEL_NAME:
        raise oip.V2Error(
            f"unknown model {model_name!r}; this server serves {oip.MODEL_NAME!r}", 404
        )


def _model(version: str | None) -> LoadedModel:
    """The active model, or the stored version the URL names (loaded through the cache)."""
    holder = services().holder
    if version is None:
        return holder.get()  # ServiceUnavailable (503) while no model is loaded
    try:
        return holder.get_version(version)
    except VersionNotFound as exc:
        raise oip.V2Error(f"unknown version {version!r} of model {oip.MODEL_NAME}", 404) from exc
    except ModelError as exc:
        log.error("version %s requested over /v2 does not load: %s", version, exc)
        raise oip.V2Error(
            f"version {version} of model {oip.MODEL_NAME} is not ready: it fails validation"
        ) from exc


def _body() -> bytes:
    """The request body, inflated when the client compressed it (tritonclient can)."""
    data = request.get_data(cache=False)  # 413 beyond MAX_CONTENT_LENGTH
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in DECOMPRESSORS:
        raise oip.V2Error(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)", 415)
    limit = int(current_app.config["MAX_BODY"])
    inflater = zlib.decompressobj(DECOMPRESSORS[encoding])
    try:
        plain = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise oip.V2Error(f"the body is not valid {encoding} data: {exc}") from exc
    if len(plain) > limit:
        raise oip.V2Error(f"the decompressed body exceeds the limit of {limit} bytes", 413)
    if not inflater.eof:
        raise oip.V2Error(f"the {encoding} body is truncated")
    return plain


def model_metadata(model: LoadedModel, versions: list[str]) -> dict[str, Any]:
    """Name, versions, platform and tensors; `parameters` says which version and widths apply."""
    tensor = oip.metadata_tensor
    limits = services().limits
    return {
        "name": oip.MODEL_NAME,
        "versions": versions,
        "platform": "numpy",
        "inputs": [tensor("a", oip.INPUT_DATATYPE), tensor("b", oip.INPUT_DATATYPE)],
        "outputs": [tensor(name, datatype) for name, datatype in oip.OUTPUT_TYPES.items()],
        "parameters": {"max_bits": limits.max_bits, "max_batch": limits.max_batch,
                       "version": model.version, "bits": model.bits},
    }


def infer(model_name: str, version: str | None = None) -> Response:
    """Decode, predict with the model that answers, encode; one vectorized pass."""
    _check_name(model_name)
    model = _model(version)
    limits = services().limits
    req = oip.parse_infer_request(_body(), request.headers.get(oip.HEADER_LENGTH), limits)
    bits = parse_bits(req.parameters, req.longest, model.bits, limits)
    check_work(len(req.a), bits, limits)
    sums = model.predictor.add(req.a, req.b, bits)
    services().metrics.add_pairs(len(sums))
    header: dict[str, Any] = {"model_name": oip.MODEL_NAME, "model_version": model.version}
    if req.id is not None:
        header["id"] = req.id
    header["parameters"] = {"bits": bits}
    body, header_length = oip.encode_infer_response(header, oip.outputs(req, sums, bits))
    if header_length is None:
        return Response(body, mimetype=JSON)
    response = Response(body, mimetype=BINARY)
    response.headers[oip.HEADER_LENGTH] = str(header_length)
    return response


def _routes(bp: Blueprint) -> None:
    """Every path of the protocol's REST API, with and without a version."""
    version = json.loads(SPEC_PATH.read_bytes())["info"]["version"]
    server = {"name": oip.MODEL_NAME, "version": version, "extensions": ["binary_tensor_data"]}

    @bp.get("")
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
        versions = [r["version"] for r in services().store.versions() if "error" not in r]
        return _json(model_metadata(model, versions))

    @bp.get("/models/<model_name>/ready")
    @bp.get("/models/<model_name>/versions/<version>/ready")
    def model_ready(model_name: str, version: str | None = None) -> Response:
        _check_name(model_name)
        if version is None:
            return _health(services().holder.current() is not None)
        try:
            _model(version)
        except oip.V2Error as exc:
            if exc.status == 404:
                raise
            return _health(False)
        return _health(True)

    bp.add_url_rule("/models/<model_name>/infer", view_func=infer, methods=["POST"])
    bp.add_url_rule("/models/<model_name>/versions/<version>/infer", view_func=infer,
                    methods=["POST"])


def _error_handlers(bp: Blueprint) -> None:
    """Map every exception raised under /v2 to the protocol's error object, statuses kept."""

    @bp.errorhandler(oip.V2Error)
    def _v2_error(exc: oip.V2Error) -> Response:
        return error_response(exc.message, exc.status)

    @bp.errorhandler(APIError)
    def _api_error(exc: APIError) -> Response:
        return error_response(exc.detail, exc.status, exc.headers)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _from_http(exc)

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        request_id = request.environ.get("rnnadd.request_id")
        log.exception("unhandled error on %s %s (request_id=%s)", request.method, request.path,
                      request_id)
        return error_response(f"internal error (request id {request_id})", 500)

    # 404 and 405 are decided before any blueprint is chosen: the app's handler defers to us
    bp.record_once(lambda state: render_errors_under(state.app, PREFIX, _from_http))


def _from_http(exc: HTTPException) -> Response:
    """werkzeug's routing and body errors, in the protocol's words."""
    messages = {
        404: f"no such endpoint: {request.path}",
        405: f"{request.method} is not allowed on {request.path}",
        413: f"the request body exceeds the limit of {current_app.config['MAX_BODY']} bytes",
    }
    code = exc.code or 500
    allow = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    return error_response(messages.get(code, exc.description or exc.name), code, allow)


def create_blueprint() -> Blueprint:
    """The /v2 blueprint; the app factory registers it beside /v1."""
    bp = Blueprint("v2", __name__, url_prefix=PREFIX)
    _routes(bp)
    _error_handlers(bp)
    return bp
