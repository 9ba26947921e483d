"""Every error the API returns, as RFC 9457 problem details, mapped in one place."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:rnnadd:problem:"
PATH_RENDERERS = "rnnadd.path_error_renderers"


class APIError(Exception):
    """An error the client can act on; carries everything the problem document needs."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}

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
    """The request clashes with the current state (a running job, an invalid model)."""

    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(APIError):
    """The body or the batch exceeds a configured limit."""

    status, title, slug = 413, "Content Too Large", "payload-too-large"


class UnsupportedMediaType(APIError):
    """The body is not JSON."""

    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class ServiceUnavailable(APIError):
    """No valid model is loaded (yet)."""

    status, title, slug = 503, "Service Unavailable", "service-unavailable"


_HTTP_DETAILS: dict[int, tuple[type[APIError], str]] = {
    400: (BadRequest, "The request could not be understood."),
    404: (NotFound, "No such endpoint: {path}. See /openapi.json for the API."),
    405: (MethodNotAllowed, "{method} is not allowed on {path}."),
    413: (PayloadTooLarge, "The request body exceeds the limit of {max_body} bytes."),
    415: (UnsupportedMediaType, "The request body must be JSON (Content-Type: application/json)."),
}


def problem_response(error: APIError) -> Response:
    """Serialize a problem directly, skipping Flask's sorted JSON provider."""
    response = Response(json.dumps(error.to_dict()), status=error.status, mimetype=PROBLEM_JSON)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def from_http_exception(exc: HTTPException) -> APIError:
    """Translate werkzeug's routing and body errors so nothing is ever answered in HTML."""
    known = _HTTP_DETAILS.get(exc.code or 500)
    if known is None:
        return _generic(exc)
    cls, template = known
    detail = template.format(
        path=request.path,
        method=request.method,
        max_body=current_app.config.get("MAX_CONTENT_LENGTH"),
    )
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    return cls(detail, headers=headers)


def _generic(exc: HTTPException) -> APIError:
    """Keep the status of any other HTTP error werkzeug raises, still as a problem."""
    error = APIError(exc.description or "The request failed.")
    error.status = exc.code or 500  # type: ignore[misc]
    error.title = exc.name  # type: ignore[misc]
    error.slug = "http-" + str(error.status)  # type: ignore[misc]
    return error


Renderer = Callable[[HTTPException], Response]


def render_errors_under(app: Flask, prefix: str, render: Renderer) -> None:
    """Let another protocol (e.g. /v2) answer 404/405 under its prefix in its own format.

    Routing errors happen before any blueprint is chosen, so only the app-level handler sees
    them; this costs nothing on requests that route, unlike a before_app_request hook.
    """
    app.extensions.setdefault(PATH_RENDERERS, []).append((prefix.rstrip("/"), render))


def register_error_handlers(app: Flask) -> None:
    """Install the single mapping from exceptions to problem documents."""
    log = logging.getLogger("rnnadd.errors")

    @app.errorhandler(APIError)
    def _api_error(error: APIError) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        path = request.path
        for prefix, render in app.extensions.get(PATH_RENDERERS, ()):
            if path == prefix or path.startswith(prefix + "/"):
                return render(exc)
        return problem_response(from_http_exception(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        request_id = request.environ.get("rnnadd.request_id")
        log.exception("unhandled error on %s %s (request_id=%s)", request.method, request.path,
                      request_id)
        error = APIError("An unexpected error occurred; it has been logged.",
                         extra={"request_id": request_id} if request_id else None)
        return problem_response(error)
