"""The success path of POST /v1/predict as plain WSGI: same handlers, no Flask request objects.

A single-pair prediction is a few microseconds of work; Flask's request context, routing and
response objects cost several times that. This wrapper answers the common case (a JSON body
with a Content-Length that predicts without error) directly and hands everything else, every
error included, to the Flask app, which parses the body again and answers through the one
error mapping. Turn it off with RNNADD_FAST_PATH=0; tests check both give the same answers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from service.inputs import Limits, parse_bits, parse_pair_body
from service.metrics import Metrics
from service.model import ModelHolder
from service.predict import predict_one
from service.reqlog import RULE_KEY

PATH = "/v1/predict"
HEADERS = ("Content-Type", "application/json")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Fallback(Exception):
    """The request is not the plain case; Flask answers it."""


class PredictFastPath:
    """Wraps the Flask WSGI app; answers plain single predictions itself."""

    def __init__(
        self, app: WSGIApp, holder: ModelHolder, metrics: Metrics, limits: Limits, max_body: int
    ) -> None:
        self.app = app
        self.holder = holder
        self.metrics = metrics
        self.limits = limits
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        if (environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST"
                or environ.get("CONTENT_TYPE") != "application/json"
                or not length.isdigit() or int(length) > self.max_body
                or "HTTP_TRANSFER_ENCODING" in environ):
            return self.app(environ, start_response)
        data = environ["wsgi.input"].read(int(length))
        try:
            text = self.answer(data)
        except Exception:  # validation errors and surprises alike: Flask renders the problem
            environ["wsgi.input"] = io.BytesIO(data)
            return self.app(environ, start_response)
        payload = text.encode()
        environ[RULE_KEY] = PATH
        start_response("200 OK", [HEADERS, ("Content-Length", str(len(payload)))])
        return [payload]

    def answer(self, data: bytes) -> str:
        """The prediction's JSON text; raises on anything the Flask route would reject."""
        body = json.loads(data)
        if type(body) is not dict:
            raise Fallback("not a JSON object")
        a, b = parse_pair_body(body, self.limits)
        model = self.holder.get()
        bits = parse_bits(body, max(a, b).bit_length(), model.bits, self.limits)
        text = predict_one(model, a, b, bits)
        self.metrics.add_pairs(1)
        return text
