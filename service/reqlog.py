"""Per-request bookkeeping as WSGI middleware: request id, one JSON log line, request metrics.

Middleware rather than Flask hooks because it sees every response, errors included, and costs
a few microseconds per request instead of two hook dispatches and a dozen context lookups.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import flask
from werkzeug.routing import Rule

from service.errors import CLOSE_KEY
from service.metrics import Metrics

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f-\U0010ffff]*')  # JSON-safe as is, no escaping
RULE_KEY = "rnnadd.rule"
ID_KEY = "rnnadd.request_id"
MAX_LOGGED_PATH = 512
LINE = ('{"ts": "%s", "level": "info", "event": "request", "method": %s, "path": %s, '
        '"status": %d, "duration_ms": %.3f, "request_id": "%s"}\n')

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def request_id(supplied: str | None) -> str:
    """Keep a caller's id when it is short and safe to echo and log; otherwise make one."""
    if supplied is not None and REQUEST_ID.fullmatch(supplied):
        return supplied
    return os.urandom(16).hex()


def quoted(text: str) -> str:
    """A JSON string; plain ASCII (the usual method and path) skips the encoder."""
    if PLAIN.fullmatch(text):
        return f'"{text}"'
    if not text.isascii():  # WSGI strings carry bytes as latin-1; paths are UTF-8
        text = text.encode("latin-1", "replace").decode("utf-8", "replace")
    return json.dumps(text)


class ObservedRequest(flask.Request):
    """Flask's request, also leaving the matched URL rule in the environ for the middleware."""

    @property
    def url_rule(self) -> Rule | None:  # type: ignore[override]
        """The matched rule, as Flask sets it during routing."""
        return self.__dict__.get("_url_rule")

    @url_rule.setter
    def url_rule(self, rule: Rule | None) -> None:
        self.__dict__["_url_rule"] = rule
        if rule is not None:
            self.environ[RULE_KEY] = rule.rule


def close_connection(start_response: StartResponse) -> None:
    """Close the connection after this response (and say so in its Connection header).

    A 413 leaves the rest of the body unread; gunicorn then drops the connection, so the client
    must be told rather than reuse it. gunicorn ignores a Connection header set by the app, so
    this asks its response object, which start_response is a method of; other servers: no-op.
    """
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if callable(force_close):
        force_close()


class Clock:
    """UTC timestamps with milliseconds; the formatted second is reused within that second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def stamp(self, now: float) -> str:
        """ISO 8601 UTC, e.g. 2026-11-29T01:36:00.123Z."""
        second, millis = divmod(int(now * 1000), 1000)
        cached = self._second
        if cached[0] != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cached = self._second = (second, text)
        return f"{cached[1]}.{millis:03d}Z"


class RequestObserver:
    """Wraps the WSGI app: assigns X-Request-ID, times the request, logs it, counts it."""

    def __init__(self, app: WSGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.clock = Clock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ[ID_KEY] = rid
        statuses: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            statuses.append(status)
            headers.append(("X-Request-ID", rid))
            if status.startswith("413") or environ.get(CLOSE_KEY):
                close_connection(start_response)
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            status = int(statuses[-1][:3]) if statuses else 500
            self.record(environ, status, time.perf_counter() - started, rid)

    def record(self, environ: dict[str, Any], status: int, seconds: float, rid: str) -> None:
        """Count and log one finished request."""
        method = environ.get("REQUEST_METHOD", "")
        self.metrics.observe_request(environ.get(RULE_KEY, "unmatched"), method, status, seconds)
        if self.access_log:
            path = environ.get("PATH_INFO", "")[:MAX_LOGGED_PATH]
            sys.stderr.write(LINE % (self.clock.stamp(time.time()), quoted(method),
                                     quoted(path), status, seconds * 1000.0, rid))


class JSONFormatter(logging.Formatter):
    """Application log records as one JSON line each, like the access log."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()

    def format(self, record: logging.LogRecord) -> str:
        """ts, level, logger and message; a traceback, if any, as one escaped string."""
        line = {"ts": self.clock.stamp(record.created), "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the service's own log records to stderr as JSON, once per process."""
    logger = logging.getLogger("rnnadd")
    if any(getattr(h, "rnnadd", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    handler.rnnadd = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)


def install(app: flask.Flask, metrics: Metrics, access_log: bool) -> None:
    """Wrap the app's WSGI callable and make its requests report their matched rule."""
    app.request_class = ObservedRequest
    app.wsgi_app = RequestObserver(app.wsgi_app, metrics, access_log)  # type: ignore[method-assign]
