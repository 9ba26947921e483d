"""Plain POST /v1/predict as bare WSGI: the same codec and core, without Flask's objects.

A single-pair prediction is a few microseconds of work; Flask's request context, routing and
response objects cost several times that. This wrapper parses the body with the /v1 codec,
calls the inference core and formats the answer exactly as the Flask route does. Anything
else, and every error the service raises, goes to the Flask app, which answers through the
one error mapping. RNNADD_FAST_PATH=0 turns it off; tests check both give the same answers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from service.errors import APIError
from service.inputs import STREAM_ERRORS, FailedStream, parse_pair_body
from service.predict import format_one
from service.reqlog import RULE_KEY
from service.runtime import AUTO, Runtime

PATH = "/v1/predict"
HEADERS = ("Content-Type", "application/json")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class PredictFastPath:
    """Wraps the Flask WSGI app; answers plain single predictions itself."""

    def __init__(self, app: WSGIApp, runtime: Runtime, max_body: int) -> None:
        self.app = app
        self.runtime = runtime
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        if (environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST"
                or environ.get("CONTENT_TYPE") != "application/json"
                or not length.isdigit() or int(length) > self.max_body
                or "HTTP_TRANSFER_ENCODING" in environ):
            return self.app(environ, start_response)
        try:
            data = environ["wsgi.input"].read(int(length))
        except STREAM_ERRORS as exc:  # broken framing, a dropped client: Flask explains it
            environ["wsgi.input"] = FailedStream(exc)
            return self.app(environ, start_response)
        if len(data) != int(length):  # the upload stopped short: never answer a partial body
            environ["wsgi.input"] = io.BytesIO(data)
            return self.app(environ, start_response)
        try:
            text = self.answer(data)
        except (APIError, ValueError, RecursionError):  # ours to explain: Flask renders it
            environ["wsgi.input"] = io.BytesIO(data)
            return self.app(environ, start_response)
        payload = text.encode()
        environ[RULE_KEY] = PATH
        start_response("200 OK", [HEADERS, ("Content-Length", str(len(payload)))])
        return [payload]

    def answer(self, data: bytes) -> str:
        """The prediction's JSON text; raises what the Flask route would answer as an error."""
        body = json.loads(data)
        if type(body) is not dict or body.get("trace", False) is not False:
            raise APIError("not the plain case")  # Flask explains or traces
        a, b = parse_pair_body(body, self.runtime.max_digits)
        return format_one(self.runtime.predict([a], [b], body.get("bits", AUTO)))
