"""The WSGI fast path of POST /v1/predict answers exactly as the Flask route does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.app import create_app

PREDICT = "/v1/predict"


def pair_of_apps(model_dir: Path) -> tuple[Flask, Flask]:
    """The same service with the fast path on and off."""
    on = create_app({"MODEL_DIR": str(model_dir), "MAX_BODY": 4096})
    off = create_app({"MODEL_DIR": str(model_dir), "MAX_BODY": 4096, "FAST_PATH": False})
    return on, off


def count_flask_calls(app: Flask) -> list[int]:
    """Count calls of the Flask predict view (the fast path never reaches it)."""
    calls: list[int] = []
    view = app.view_functions["predict.predict"]
    app.view_functions["predict.predict"] = lambda: calls.append(1) or view()
    return calls


REQUESTS: list[tuple[Any, str, bool]] = [
    # body, content type, answered by the fast path
    ({"a": 3, "b": 5}, "application/json", True),
    ({"a": "123456789012345678901234567890", "b": 7, "bits": 100}, "application/json", True),
    ({"a": 2**40, "b": 1}, "application/json", True),
    ({"a": 3, "b": 5}, "application/json; charset=utf-8", False),
    ({"a": -1, "b": 5}, "application/json", False),
    ({"a": 3.0, "b": 5}, "application/json", True),
    ({"a": 3.5, "b": 5}, "application/json", False),
    ({"a": 3, "b": 5, "trace": True}, "application/json", False),
    ({"a": 3, "b": 5, "bits": 2}, "application/json", False),
    ({"a": 3, "b": 5, "x": 1}, "application/json", False),
    ({"b": 5}, "application/json", False),
    ([3, 5], "application/json", False),
    ("{", "application/json", False),
    ("", "application/json", False),
    ({"a": 3, "b": 5}, "text/plain", False),
    ({"a": 3, "b": 5, "pad": "x" * 5000}, "application/json", False),
]


@pytest.mark.parametrize(("body", "content_type", "fast"), REQUESTS)
def test_same_answers_with_and_without_the_fast_path(
    model_dir: Path, body: Any, content_type: str, fast: bool
) -> None:
    on, off = pair_of_apps(model_dir)
    calls = count_flask_calls(on)
    data = body if isinstance(body, str) else json.dumps(body)
    answers = [app.test_client().post(PREDICT, data=data, content_type=content_type)
               for app in (on, off)]
    first, second = answers
    assert first.status_code == second.status_code
    assert first.get_data() == second.get_data()
    for name in ("Content-Type", "Content-Length", "Allow", "WWW-Authenticate"):
        assert first.headers.get(name) == second.headers.get(name)
    assert first.headers["X-Request-ID"] and second.headers["X-Request-ID"]
    assert (calls == []) is fast


def test_the_fast_path_is_logged_and_counted(model_dir: Path, capsys) -> None:
    app = create_app({"MODEL_DIR": str(model_dir)})
    client = app.test_client()
    capsys.readouterr()
    response = client.post(PREDICT, json={"a": 1, "b": 2}, headers={"X-Request-ID": "fast-1"})
    assert response.headers["X-Request-ID"] == "fast-1"
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["path"], line["status"], line["request_id"]) == (PREDICT, 200, "fast-1")
    text = client.get("/metrics").get_data(as_text=True)
    labels = 'endpoint="/v1/predict",method="POST",protocol="http",status="200"'
    assert f"rnnadd_http_requests_total{{{labels}}} 1.0" in text
    assert "rnnadd_pairs_predicted_total 1.0" in text


def test_without_a_model_the_fast_path_defers_to_the_503(tmp_path: Path) -> None:
    response = create_app({"MODEL_DIR": str(tmp_path)}).test_client().post(
        PREDICT, json={"a": 1, "b": 2})
    assert response.status_code == 503 and response.mimetype == "application/problem+json"


def test_other_routes_are_untouched(model_dir: Path) -> None:
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    assert client.get(PREDICT).status_code == 405
    assert client.post(PREDICT + "/batch", json={"pairs": [[1, 2]]}).status_code == 200
