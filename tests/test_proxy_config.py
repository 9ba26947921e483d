"""The proxy's files checked offline: its error bodies are shaped like the service's problem
documents, only the statuses HAProxy's parser raises itself close without an answer, bodies too
large for the proxy's buffer go to the holder, whose buffer holds a whole one, and HAProxy
accepts both configurations (when haproxy is installed; the image
build runs the same check, and tests/test_container.py runs the real proxy)."""

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
    answered = {int(n.split(".")[0]) for n in named if n.endswith(".json")}
    assert {400, 408, 413, 414, 431, 500, 502, 503, 504} <= answered


def _sections(config: str) -> dict[str, str]:
    """Each section's text by its header line ("frontend public", "backend api", ...)."""
    parts = re.split(r"^(\w+(?: \w+)?)\n", config, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_only_the_parsers_own_errors_close_without_an_answer() -> None:
    """HAProxy 2.6 sends built-in HTML for what its parser refuses unless the errorfile is
    empty; an empty file anywhere else would turn an answer into a dropped connection."""
    assert (ERRORS / "empty").read_bytes() == b""
    sections = _sections((HAPROXY / "haproxy.cfg").read_text())
    closing = re.findall(r"errorfile (\d+) /etc/haproxy/errors/empty", sections["frontend public"])
    assert sorted(map(int, closing)) == [400, 408, 422]
    backend = sections["backend api"]  # the stream is the backend's once headers are parsed
    assert "errors/empty" not in backend
    assert re.search(r"http-error status 408 .*lf-file /etc/haproxy/errors/408.json", backend)
    assert re.search(r"http-error status 400 .*lf-file /etc/haproxy/errors/400.json", backend)


def test_small_bodies_are_held_here_and_large_ones_in_the_holder() -> None:
    """16 KiB buffers where every request passes (L7 retries copy a whole buffer per request);
    whole-body buffers only in the holder, which bodies too large for one go through."""
    config = (HAPROXY / "haproxy.cfg").read_text()
    sections = _sections(config)
    assert not re.search(r"^\s+tune.bufsize", sections["global"], flags=re.M)
    assert "option http-buffer-request" in sections["backend api"]
    assert "command haproxy -db -f /etc/haproxy/holder.cfg" in sections["program holder"]
    public = sections["frontend public"]
    assert "use_backend holder if large_body" in public
    assert "acl large_body req.hdr(transfer-encoding) -m found" in public
    # headers and body must fit in 16 KiB less tune.maxrewrite (1 KiB) and HTX's framing
    limit = int(re.search(r"acl large_body var\(txn.request_bytes\) -m int gt (\d+)", public)[1])
    assert limit <= 16384 - 1024 - 2048
    assert "option http-buffer-request" not in sections["backend holder"]  # passed on as it comes
    assert "server holder 127.0.0.1:8001" in sections["backend holder"]
    assert "bind 127.0.0.1:8002" in sections["frontend relay"]
    assert "default_backend api" in sections["frontend relay"]

    holder = _sections((HAPROXY / "holder.cfg").read_text())
    assert 'tune.bufsize "${RNNADD_PROXY_BUFSIZE}"' in holder["global"]
    assert "bind 127.0.0.1:8001" in holder["frontend hold"]
    relay = holder["backend public_relay"]
    assert "option http-buffer-request" in relay and "server public 127.0.0.1:8002" in relay
    assert "http-request disable-l7-retry unless safe_method or inference" in relay
    dockerfile = (HAPROXY / "Dockerfile").read_text()
    assert "RNNADD_PROXY_BUFSIZE:-$((RNNADD_MAX_BODY + 32768))" in dockerfile
    assert "holder.cfg /etc/haproxy/" in dockerfile
    maxconn = int(re.search(r"^\s+maxconn (\d+)", holder["global"], flags=re.M).group(1))
    # The worst case, every connection holding a full buffer, stays near 1 GiB at the default.
    from service.settings import Settings

    assert maxconn * (Settings().max_body + 32768) <= 1.2 * 2**30


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed here")
@pytest.mark.parametrize(("name", "args"), [("haproxy.cfg", ["-W"]), ("holder.cfg", [])])
def test_haproxy_accepts_the_config(tmp_path: Path, name: str, args: list[str]) -> None:
    config = (HAPROXY / name).read_text().replace("/etc/haproxy/errors", str(ERRORS))
    (tmp_path / name).write_text(config)
    result = subprocess.run(
        ["haproxy", *args, "-c", "-f", str(tmp_path / name)], capture_output=True, text=True,
        env={**os.environ, "RNNADD_MAX_BODY": "1048576", "RNNADD_PROXY_BUFSIZE": "1081344"},
        timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
