"""The proxy's files checked offline: its error answers are well-formed HTTP and shaped like the
service's problem documents, and HAProxy accepts the configuration (when haproxy is installed;
the image build runs the same check, and tests/test_container.py runs the real proxy)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HAPROXY = Path(__file__).resolve().parent.parent / "deploy" / "haproxy"
ERRORS = HAPROXY / "errors"
PROBLEM_KEYS = {"type", "title", "status", "detail"}


def _problem_fields(text: str) -> dict:
    """A body after HAProxy's log-format fills in %[...] (stand-in values here)."""
    return json.loads(re.sub(r"%\[[^\]]*\]", "x", text))


@pytest.mark.parametrize("path", sorted(ERRORS.glob("*.http")), ids=lambda p: p.name)
def test_raw_error_files_are_complete_http_responses(path: Path) -> None:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    code = int(path.stem)
    assert re.fullmatch(rf"HTTP/1\.1 {code} [A-Za-z -]+", lines[0]), lines[0]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/problem+json"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Connection"] == "close"
    problem = json.loads(body)
    assert set(problem) == PROBLEM_KEYS and problem["status"] == code
    assert problem["type"].startswith("urn:rnnadd:problem:")


@pytest.mark.parametrize("path", sorted(ERRORS.glob("*.json")), ids=lambda p: p.name)
def test_log_format_error_bodies_are_problem_documents(path: Path) -> None:
    problem = _problem_fields(path.read_text())
    assert PROBLEM_KEYS <= set(problem) <= PROBLEM_KEYS | {"request_id"}
    assert problem["status"] == int(path.stem)
    assert problem["type"].startswith("urn:rnnadd:problem:")


def test_every_error_file_the_config_names_exists() -> None:
    config = (HAPROXY / "haproxy.cfg").read_text()
    named = re.findall(r"/etc/haproxy/errors/(\S+)", config)
    assert named, "the config names no error files"
    for name in named:
        assert (ERRORS / name).is_file(), name
    statuses = {int(n.split(".")[0]) for n in named}
    assert {400, 408, 413, 502, 503, 504} <= statuses


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed here")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    config = (HAPROXY / "haproxy.cfg").read_text().replace("/etc/haproxy/errors", str(ERRORS))
    (tmp_path / "haproxy.cfg").write_text(config)
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True,
        env={**os.environ, "RNNADD_MAX_BODY": "1048576"}, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
