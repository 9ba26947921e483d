"""Every error the API returns, from one class hierarchy, rendered in one place.

/v1 answers RFC 9457 problem documents; /v2 answers the Open Inference Protocol's
{"error": "..."} objects. Which one is decided by the path (or by the error being a V2Error),
so the inference core can raise the same errors for both protocols.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:rnnadd:problem:"
V2_PREFIX = "/v2"
CLOSE_KEY = "rnnadd.close"  # environ flag: close the connection after this response

log = logging.getLogger("rnnadd.errors")


class APIError(Exception):
    """An error the client can act on; carries everything either error body needs."""

    status: int = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}
        if status is not None:
            self.status = status

    @property
    def type(self) -> str:
        """Problem type URI, stable per error class so clients can branch on it."""
        return PROBLEM_BASE + self.slug

    def to_dict(self) -> dict[str, Any]:
        """Problem document body; extension members never override the standard ones."""
        body: dict[str, Any] = dict(self.extra)
        body.update(type=self.type, title=self.title, status=self.status, detail=self.detail)
        if self.field is not None:
            body["field"] = self.field
        return body


class BadRequest(APIError):
    """A value in the request is invalid."""

    status, title, slug = 400, "Bad Request", "bad-request"


class MalformedBody(BadRequest):
    """The body's framing is broken or the client stopped sending it: the client's fault, and
    the connection cannot be reused (where the next request starts is unknown)."""

    slug = "malformed-body"


class Unauthorized(APIError):
    """Admin credentials are missing or wrong."""

    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(APIError):
    """The action is not allowed in this configuration."""

    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(APIError):
    """The addressed resource does not exist."""

    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(APIError):
    """The resource exists but not with this method."""

    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(APIError):
    """The request clashes with the current state (a running job, a version that fails)."""

    status, title, slug = 409, "Conflict", "conflict"


class GateFailed(Conflict):
    """A version that fails the promotion gate may not go live unless forced."""

    slug = "gate-failed"


class PayloadTooLarge(APIError):
    """The body or the batch exceeds a configured limit."""

    status, title, slug = 413, "Content Too Large", "payload-too-large"


class UnsupportedMediaType(APIError):
    """The body is not JSON."""

    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class ServiceUnavailable(APIError):
    """No valid model is loaded (yet), or the model directory cannot be written."""

    status, title, slug = 503, "Service Unavailable", "service-unavailable"


class InsufficientStorage(APIError):
    """The model directory is full: nothing new can be saved."""

    status, title, slug = 507, "Insufficient Storage", "insufficient-storage"


class V2Error(APIError):
    """A request the Open Inference Protocol rejects; always rendered as {"error": ...}."""

    status, title, slug = 400, "Bad Request", "inference-request"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status)

    @property
    def message(self) -> str:
        """The protocol calls the detail its error message."""
        return self.detail


# The gRPC status of each HTTP status, as the Open Inference Protocol and Triton map them: one
# table for every error the inference core raises, so both protocols refuse alike.
GRPC_CODES: dict[int, str] = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 405: "UNIMPLEMENTED", 409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT", 503: "UNAVAILABLE",
    507: "RESOURCE_EXHAUSTED",
}


def grpc_code(error: APIError) -> str:
    """The name of the gRPC status code (grpc.StatusCode) that carries this error."""
    return GRPC_CODES.get(error.status, "INTERNAL")


_HTTP_DETAILS: dict[int, tuple[type[APIError], str]] = {
    400: (BadRequest, "The request could not be understood."),
    404: (NotFound, "No such endpoint: {path}. See /openapi.json for the API."),
    405: (MethodNotAllowed, "{method} is not allowed on {path}."),
    413: (PayloadTooLarge, "The request body exceeds the limit of {max_body} bytes."),
    415: (UnsupportedMediaType, "The request body must be JSON (Content-Type: application/json)."),
}


def is_v2(path: str) -> bool:
    """Paths whose errors speak the Open Inference Protocol."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def render(error: APIError, path: str) -> Response:
    """The one serializer of errors: {"error"} under /v2, a problem document elsewhere."""
    if isinstance(error, V2Error) or is_v2(path):
        body, mimetype = {"error": error.detail}, "application/json"
    else:
        body, mimetype = error.to_dict(), PROBLEM_JSON
    response = Response(json.dumps(body) + "\n", status=error.status, mimetype=mimetype)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def from_http_exception(exc: HTTPException) -> APIError:
    """Translate werkzeug's routing and body errors so nothing is ever answered in HTML."""
    known = _HTTP_DETAILS.get(exc.code or 500)
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    if known is None:
        error = APIError(exc.description or "The request failed.", status=exc.code or 500)
        error.headers = headers
        return error
    cls, template = known
    detail = template.format(path=request.path, method=request.method,
                             max_body=current_app.config.get("MAX_CONTENT_LENGTH"))
    return cls(detail, headers=headers)


def unexpected(exc: BaseException, environ: dict[str, Any]) -> APIError:
    """Log a bug with its traceback and request id; the client gets the id, not the trace."""
    request_id = environ.get("rnnadd.request_id")
    log.error("unhandled error on %s %s (request_id=%s)", environ.get("REQUEST_METHOD"),
              environ.get("PATH_INFO"), request_id, exc_info=exc)
    return APIError("An unexpected error occurred; it has been logged.",
                    extra={"request_id": request_id} if request_id else None)


def relative_redirect(response: Response) -> Response:
    """Werkzeug's own redirects (merged slashes, a missing trailing slash) build an absolute
    Location from the client's Host header and an HTML body: keep the path alone, say it in
    JSON, so no client-chosen host is ever echoed as a place to go."""
    location = response.headers.get("Location")
    if not 300 <= response.status_code < 400 or not location:
        return response
    target = urlsplit(location)
    if target.scheme or target.netloc:
        path = "/" + target.path.lstrip("/")  # never //host: that is absolute again
        location = path + (f"?{target.query}" if target.query else "")
        response.headers["Location"] = location
    if response.mimetype == "text/html":
        body = {"type": PROBLEM_BASE + "moved", "title": "Moved", "status": response.status_code,
                "detail": f"This resource is at {location}."}
        response.set_data(json.dumps(body) + "\n")
        response.mimetype = PROBLEM_JSON
    return response


def register_error_handlers(app: Flask) -> None:
    """Install the single mapping from exceptions to error bodies."""
    app.after_request(relative_redirect)

    @app.errorhandler(APIError)
    def _api_error(error: APIError) -> Response:
        return render(error, request.path)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return render(from_http_exception(exc), request.path)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        return render(unexpected(exc, request.environ), request.path)
