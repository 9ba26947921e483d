"""One structured JSON line per request, and X-Request-ID taken from the caller or generated."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from service.app import create_app
from service.reqlog import Clock, JSONFormatter, request_id


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    """The access-log lines written so far, parsed (each must be one JSON object)."""
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()
            if line.startswith("{")]


def test_one_json_line_per_request(client, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    response = client.post("/v1/predict?x=1", json={"a": 3, "b": 5})
    client.get("/missing")
    client.post("/v1/predict", json={"a": -3, "b": 5})
    lines = log_lines(capsys)
    assert [(r["method"], r["path"], r["status"]) for r in lines] == [
        ("POST", "/v1/predict", 200), ("GET", "/missing", 404), ("POST", "/v1/predict", 400)]
    first = lines[0]
    assert first["request_id"] == response.headers["X-Request-ID"]
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert first["level"] == "info" and first["event"] == "request"


def test_a_safe_request_id_is_kept(client, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123_x.y:z"})
    assert response.headers["X-Request-ID"] == "abc-123_x.y:z"
    assert log_lines(capsys)[0]["request_id"] == "abc-123_x.y:z"


@pytest.mark.parametrize("supplied", ["", "a" * 129, "has space", "quote\"", "tab\there",
                                      "<script>", "ünïcode"])
def test_an_unsafe_request_id_is_replaced(client, supplied: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": supplied})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_generated_ids_differ(client) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(50)}
    assert len(ids) == 50 and request_id(None) != request_id(None)


def test_errors_carry_the_request_id_too(client) -> None:
    for response in (client.get("/nope"), client.post("/v1/predict", data="x"),
                     client.put("/v1/predict")):
        assert response.headers["X-Request-ID"]


def test_odd_paths_stay_valid_json(client, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    client.get('/caf\u00e9/"quoted"\\back')
    client.get("/" + "x" * 5000)
    first, second = log_lines(capsys)
    assert first["path"] == '/caf\u00e9/"quoted"\\back'
    assert len(second["path"]) == 512


def test_the_access_log_can_be_turned_off(model_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RNNADD_ACCESS_LOG", "0")
    client = create_app({"MODEL_DIR": str(model_dir)}).test_client()
    capsys.readouterr()
    client.get("/healthz")
    assert log_lines(capsys) == []


def test_clock_formats_milliseconds() -> None:
    clock = Clock()
    assert clock.stamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert clock.stamp(86400.25) == "1970-01-02T00:00:00.250Z"
    assert clock.stamp(86400.999) == "1970-01-02T00:00:00.999Z"


def test_application_records_are_json_too() -> None:
    formatter = JSONFormatter()
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = logging.LogRecord("rnnadd.model", logging.ERROR, __file__, 1, "load %s failed",
                                   ("v1",), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert line["level"] == "error" and line["logger"] == "rnnadd.model"
    assert line["msg"] == "load v1 failed" and "ValueError: bad thing" in line["exc"]


def test_logging_is_configured_once(model_dir: Path) -> None:
    create_app({"MODEL_DIR": str(model_dir)})
    create_app({"MODEL_DIR": str(model_dir)})
    handlers = [h for h in logging.getLogger("rnnadd").handlers if getattr(h, "rnnadd", False)]
    assert len(handlers) == 1
