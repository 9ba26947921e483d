"""Every error is problem+json, from one handler; nothing is ever HTML or a stack trace."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Flask, Response

from service.app import create_app
from service.errors import (
    APIError,
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    V2Error,
)
from tests.conftest import Contract


@pytest.mark.parametrize(("cls", "status"), [
    (BadRequest, 400), (Unauthorized, 401), (Forbidden, 403), (NotFound, 404), (Conflict, 409),
    (PayloadTooLarge, 413), (UnsupportedMediaType, 415), (ServiceUnavailable, 503),
    (InsufficientStorage, 507),
])
def test_error_classes_carry_their_status(cls: type[APIError], status: int) -> None:
    body = cls("what went wrong", field="x").to_dict()
    assert body["status"] == status and body["detail"] == "what went wrong"
    assert body["field"] == "x" and body["title"] and body["type"].startswith("urn:rnnadd:")


def test_extension_members_never_override_standard_ones() -> None:
    body = BadRequest("d", extra={"status": 999, "hint": "h"}).to_dict()
    assert body["status"] == 400 and body["hint"] == "h" and "field" not in body


def test_unknown_path_is_a_json_404(client, contract: Contract) -> None:
    response = client.get("/no/such/thing")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert "/no/such/thing" in response.get_json()["detail"]
    contract.validate({"$ref": "#/components/schemas/Problem"}, response.get_json())


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/predict/batch"), ("PUT", "/v1/model"), ("DELETE", "/v1/models"),
    ("GET", "/v1/retrain"), ("GET", "/v1/models/20261129T013600Z-a1b2c3/activate"),
    ("POST", "/healthz"), ("PATCH", "/metrics"),
])
def test_wrong_method_is_a_json_405_with_allow(client, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405 and response.mimetype == "application/problem+json"
    assert response.headers["Allow"]
    assert method in response.get_json()["detail"]


def failing_app(model_dir: Path) -> Flask:
    """The real app plus a route that fails the way a bug would."""
    app = create_app({"MODEL_DIR": str(model_dir)})

    @app.get("/boom")
    def boom() -> Response:
        raise RuntimeError("secret internals /etc/passwd")

    return app


def test_an_unexpected_exception_is_a_logged_500_without_internals(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = failing_app(model_dir).test_client()
    with caplog.at_level(logging.ERROR, logger="rnnadd.errors"):
        response = client.get("/boom", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    text = response.get_data(as_text=True)
    assert "secret" not in text and "Traceback" not in text and "<html" not in text.lower()
    assert response.get_json()["request_id"] == "trace-me-1"
    assert any("trace-me-1" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("path", ["/boom", "/v2/boom"])
def test_one_handler_renders_bugs_in_each_protocol(
    model_dir: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    app = create_app({"MODEL_DIR": str(model_dir)})

    @app.get(path)
    def boom() -> Response:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="rnnadd.errors"):
        response = app.test_client().get(path)
    assert response.status_code == 500 and "secret" not in response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert ("error" in body) == path.startswith("/v2") and ("type" in body) != ("error" in body)
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_v2_errors_are_service_errors_rendered_as_error_objects(client) -> None:
    assert issubclass(V2Error, APIError) and V2Error("no", 404).status == 404
    response = client.get("/v2/models/other")
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert set(response.get_json()) == {"error"}
    routing = client.get("/v2/no/such/route")
    assert routing.status_code == 404 and set(routing.get_json()) == {"error"}
    assert client.get("/v20").mimetype == "application/problem+json"  # only under the prefix


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/models", "/v2/models/rnnadd/infer", "/nope"])
def test_every_json_body_ends_with_a_newline(client, path: str) -> None:
    response = client.post(path, json={"a": 1, "b": 2}) if "infer" not in path else client.post(
        path, json={"inputs": []})
    assert response.get_data().endswith(b"}\n")
