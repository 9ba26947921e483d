"""The proxy's files checked offline: its error bodies are shaped like the service's problem
documents, every status HAProxy's parser raises itself has a whole HTTP response of one, bodies
too large for the proxy's buffer go to the holder, whose buffer holds a whole one; and the
HAProxy the proxy image ships accepts both configurations without a warning (container-marked:
the configurations are 3.2's, which the host's haproxy, if any, may not be;
tests/test_container.py runs the real proxy)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAPROXY = ROOT / "deploy" / "haproxy"
ERRORS = HAPROXY / "errors"
PROBLEM_KEYS = {"type", "title", "status", "detail"}
# What HAProxy 3.2's HTTP/1 parser answers itself, before any rule runs (mux_h1.c; 500 and 501
# are its internal and not-implemented errors): only an `errorfile` is sent there.
PARSER_STATUSES = {400, 408, 413, 414, 422, 431, 500, 501}
PROXY_IMAGE = f"rnnadd-proxy:{os.environ.get('RNNADD_TEST_IMAGE_TAG', 'test')}"


def _problem_fields(text: str) -> dict:
    """A body after HAProxy's log-format fills in %[...] (stand-in values here)."""
    return json.loads(re.sub(r"%\[[^\]]*\]", "x", text))


@pytest.mark.parametrize("path", sorted(ERRORS.glob("*.json")), ids=lambda p: p.name)
def test_log_format_error_bodies_are_problem_documents(path: Path) -> None:
    problem = _problem_fields(path.read_text())
    assert PROBLEM_KEYS <= set(problem) <= PROBLEM_KEYS | {"request_id"}
    assert problem["status"] == int(path.stem)
    assert problem["type"].startswith("urn:rnnadd:problem:")


def _http_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """An errorfile split as a client reads it: status, headers (lower-case names), body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "no blank line (CRLF CRLF) ends the headers"
    status_line, *fields = head.decode("ascii").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.1 ([1-5]\d\d) [A-Za-z][A-Za-z -]*", status_line)
    assert match, f"not an HTTP/1.1 status line: {status_line!r}"
    headers: dict[str, str] = {}
    for line in fields:
        name, colon, value = line.partition(":")
        assert colon and re.fullmatch(r"[A-Za-z-]+", name), f"bad header line {line!r}"
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value.strip()
    return int(match[1]), headers, body


@pytest.mark.parametrize("path", sorted(ERRORS.glob("*.http")), ids=lambda p: p.name)
def test_errorfiles_are_whole_responses_with_a_problem_document(path: Path) -> None:
    """HAProxy sends an errorfile byte for byte, where no stream (and no request id) exists."""
    raw = path.read_bytes()
    assert b"\n" not in raw.partition(b"\r\n\r\n")[0].replace(b"\r\n", b""), "CRLF lines only"
    status, headers, body = _http_response(raw)
    assert status == int(path.stem)
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert "%[" not in body.decode(), "errorfiles are sent as they are, not as log-format"
    problem = json.loads(body)
    assert set(problem) == PROBLEM_KEYS  # no request_id: there is none yet
    assert problem["status"] == status and problem["type"].startswith("urn:rnnadd:problem:")


def _sections(config: str) -> dict[str, str]:
    """Each section's text by its header line ("frontend public", "backend api", ...)."""
    parts = re.split(r"^(\w+(?: \w+)?)\n", config, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _errorfiles(section: str) -> dict[int, str]:
    """Status -> file of a section's `errorfile` lines (the last one for a status wins)."""
    return {int(code): name for code, name in
            re.findall(r"^\s+errorfile (\d+) /etc/haproxy/errors/(\S+)$", section, flags=re.M)}


def _lf_errors(section: str) -> dict[int, str]:
    """Status -> file of a section's `http-error ... lf-file` lines."""
    return {int(code): name for code, name in re.findall(
        r"^\s+http-error status (\d+) content-type application/problem\+json "
        r"lf-file /etc/haproxy/errors/(\S+)$", section, flags=re.M)}


@pytest.mark.parametrize(("config", "frontend"),
                         [("haproxy.cfg", "frontend public"), ("haproxy.cfg", "frontend relay"),
                          ("holder.cfg", "frontend hold")])
def test_every_status_the_parser_raises_has_an_errorfile(config: str, frontend: str) -> None:
    """The parser's errors use the frontend's replies, and only `errorfile` ones: an
    `http-error` for the same status would take its place and bring HAProxy's HTML back."""
    section = _sections((HAPROXY / config).read_text())[frontend]
    files = _errorfiles(section)
    assert set(files) >= PARSER_STATUSES, PARSER_STATUSES - set(files)
    for status, name in files.items():
        assert name == f"{status}.http" and (ERRORS / name).is_file(), name
    assert not set(_lf_errors(section)) & PARSER_STATUSES
    assert not re.search(r"^\s+errorfiles? .*(empty|/dev/null)", section, flags=re.M)


def test_errors_raised_with_a_stream_carry_the_request_id() -> None:
    """Later errors are looked up in the stream's backend first, then its frontend: lf-file
    problem documents with the request id, for the public and relay frontends' requests."""
    config = (HAPROXY / "haproxy.cfg").read_text()
    holder_config = (HAPROXY / "holder.cfg").read_text()
    named = re.findall(r"/etc/haproxy/errors/(\S+)", config + holder_config)
    for name in named:
        assert (ERRORS / name).is_file(), name
        if name.endswith(".json"):
            assert '"request_id": "%[var(txn.rid)]"' in (ERRORS / name).read_text(), name
    sections = _sections(config)
    assert set(_lf_errors(sections["backend api"])) >= {400, 408, 500, 502, 503, 504}
    assert set(_lf_errors(sections["frontend public"])) >= {502, 503, 504}
    relay = _sections(holder_config)["backend public_relay"]
    assert set(_lf_errors(relay)) >= {400, 408, 500, 502, 503, 504}
    # The frontend's own refusals name their reply: its 413 and 414 slots are the parser's.
    public = sections["frontend public"]
    for status in (413, 414):
        rule = (rf"^\s+http-request (?:deny|return) status {status} content-type "
                rf"application/problem\+json lf-file /etc/haproxy/errors/{status}\.json "
                r"hdr X-Request-ID %\[var\(txn.rid\)\] if \w+$")
        assert re.search(rule, public, flags=re.M), status
    assert "deny_status" not in public


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


def test_large_grpc_calls_are_held_and_replayed_by_the_holder() -> None:
    """An inference call over 12 KiB with its headers cannot be replayed from a 16 KiB buffer:
    the holder holds it whole and replays it through the relay, as for HTTP bodies."""
    sections = _sections((HAPROXY / "haproxy.cfg").read_text())
    public = sections["frontend grpc_public"]
    assert "http-request wait-for-body time 5s at-least 12k if infer" in public
    assert "use_backend grpc_holder if infer { var(txn.request_bytes) -m int gt 12288 }" in public
    assert "default_backend grpc" in public
    assert "server holder 127.0.0.1:8003 proto h2" in sections["backend grpc_holder"]
    relay = sections["frontend grpc_relay"]
    assert "bind 127.0.0.1:8004 proto h2" in relay and "default_backend grpc" in relay
    holder = _sections((HAPROXY / "holder.cfg").read_text())
    assert "bind 127.0.0.1:8003 proto h2" in holder["frontend grpc_hold"]
    replay = holder["backend grpc_relay"]
    assert "option http-buffer-request" in replay
    assert "server relay 127.0.0.1:8004 proto h2" in replay
    # A dead replica shows as the relay's 502 (or 504 after its 8 s): those are replayed.
    retry_on = re.search(r"^\s+retry-on (.+)$", replay, flags=re.M)[1].split()
    assert {"502", "503", "504", "conn-failure", "empty-response"} <= set(retry_on)
    holder_timeout = int(re.search(r"timeout server (\d+)s", replay)[1])
    relay_timeout = int(re.search(r"timeout server (\d+)s", sections["backend grpc"])[1])
    assert holder_timeout > relay_timeout


@pytest.fixture(scope="module")
def proxy_image() -> str:
    """The proxy image, built from this checkout (layers the stack's build made are reused)."""
    from tests.test_container import _docker_problem, _docker_required

    problem = _docker_problem()
    if problem is not None:
        if _docker_required():
            pytest.fail(f"the config check needs Docker: {problem}")
        pytest.skip(f"the config check needs Docker: {problem}")
    base = os.environ.get("RNNADD_PYTHON_IMAGE") or os.environ.get("PYTHON_IMAGE")
    build = subprocess.run(
        ["docker", "build", "-q", "-f", str(HAPROXY / "Dockerfile"), "-t", PROXY_IMAGE,
         *(["--build-arg", f"PYTHON_IMAGE={base}"] if base else []), str(ROOT)],
        capture_output=True, text=True, timeout=1200, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return PROXY_IMAGE


@pytest.mark.container
@pytest.mark.parametrize(("name", "args"), [("haproxy.cfg", ["-W"]), ("holder.cfg", [])])
def test_the_shipped_haproxy_accepts_the_config_without_a_warning(
        proxy_image: str, name: str, args: list[str]) -> None:
    """`haproxy -c` by the image's own HAProxy (3.2) on the files it was built with."""
    result = subprocess.run(
        ["docker", "run", "--rm", "-e", "RNNADD_MAX_BODY=1048576",
         "-e", "RNNADD_PROXY_BUFSIZE=1081344", proxy_image, "sh", "-c",
         f"haproxy -v && haproxy {' '.join(args)} -c -f /etc/haproxy/{name}"],
        capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.startswith("HAProxy version 3.2."), output
    assert "[WARNING]" not in output and "[ALERT]" not in output, output
