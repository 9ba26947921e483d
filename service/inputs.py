"""Reading request bodies and the /v1 JSON fields: strict about types, precise about fields.

Only types are checked here; every limit (widths, batch size, work) is the inference core's
(service.runtime), so /v1 and /v2 cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import re
from operator import itemgetter
from typing import Any

from gunicorn.http.errors import ParseException

from service.errors import (
    CLOSE_KEY,
    BadRequest,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from service.runtime import describe, integer

DIGITS = re.compile(r"[0-9]+")
PREDICT_FIELDS = frozenset({"a", "b", "bits", "trace"})
BATCH_FIELDS = frozenset({"pairs", "bits"})
FIRST, SECOND = itemgetter(0), itemgetter(1)
CHUNK = 64 * 1024
# What a server's input stream raises for a client's broken framing or a dropped connection:
# gunicorn's parse errors (bad chunk sizes, extensions, trailers) and socket errors.
STREAM_ERRORS = (ParseException, OSError, ValueError)

log = logging.getLogger("rnnadd.inputs")


class FailedStream:
    """Stands in for a wsgi.input whose read already failed, so the Flask app explains it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        """Raise the original error again."""
        raise self.error


def unreadable(environ: dict[str, Any], detail: str) -> MalformedBody:
    """The 400 for a body that cannot be read; the connection is closed after it."""
    environ[CLOSE_KEY] = True
    log.info("unreadable request body on %s %s: %s", environ.get("REQUEST_METHOD"),
             environ.get("PATH_INFO"), detail)
    return MalformedBody(f"The request body could not be read: {detail}")


def read_stream(environ: dict[str, Any], size: int) -> bytes:
    """Up to size bytes of the body; framing errors and aborted uploads are the client's 400."""
    try:
        return environ["wsgi.input"].read(size)
    except STREAM_ERRORS as exc:
        reason = str(exc)[:200] or type(exc).__name__
        raise unreadable(environ, f"{type(exc).__name__}: {reason}") from exc


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The raw body, at most `limit` bytes, with or without a Content-Length.

    Chunked bodies are read in pieces until one byte past the limit, so an oversized body is
    a 413 rather than silently cut at the limit.
    """
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if length.isdigit() and not chunked:
        size = int(length)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        data = read_stream(environ, size) if size else b""
        if len(data) < size:
            raise unreadable(environ, f"it ended after {len(data)} of the {size} bytes its "
                                      "Content-Length announced")
        return data
    if not chunked and not environ.get("wsgi.input_terminated"):
        return b""  # no length and no framing: there is no body
    pieces, total = [], 0
    while total <= limit:
        piece = read_stream(environ, min(CHUNK, limit + 1 - total))
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    if total > limit:
        raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    return b"".join(pieces)


def parse_json(data: bytes, content_type: str, *, allow_empty: bool = False) -> dict[str, Any]:
    """A body as a JSON object, or the matching 400/415 problem."""
    if not data:
        if allow_empty:
            return {}
        raise BadRequest("The request body is empty; send a JSON object.")
    mimetype = content_type.split(";", 1)[0].strip().lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"The body must be JSON (Content-Type: application/json), got "
            f"{mimetype or 'no content type'}."
        )
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from exc
    if type(body) is not dict:
        raise BadRequest(f"The body must be a JSON object, got {describe(body)}.")
    return body


def read_json(environ: dict[str, Any], limit: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or the matching 400/413/415 problem."""
    data = read_body(environ, limit)
    return parse_json(data, environ.get("CONTENT_TYPE", ""), allow_empty=allow_empty)


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Unknown fields are errors, so a misspelt "bits" is never silently ignored."""
    if body.keys() <= allowed:
        return
    unknown = sorted(str(k) for k in body.keys() - allowed)
    raise BadRequest(
        f"Unknown field {unknown[0]!r}; allowed fields: {', '.join(sorted(allowed))}.",
        field=unknown[0],
    )


def parse_uint(value: Any, name: str, max_digits: int) -> int:
    """An integer from JSON (5 or 5.0) or a string of decimal digits (for values past 2**53)."""
    number = integer(value)
    if number is not None and type(value) is not bool:
        return number
    if type(value) is str and len(value) > max_digits:
        raise BadRequest(f"{name} is a string of {len(value)} characters; inputs may have at "
                         f"most {max_digits} decimal digits.", field=name)
    if type(value) is str and DIGITS.fullmatch(value):
        return int(value)
    raise BadRequest(f"{name} must be a non-negative integer (a JSON integer or a string of "
                     f"decimal digits), got {describe(value)}.", field=name)


def parse_flag(body: dict[str, Any], name: str) -> bool:
    """An optional JSON boolean, false when absent."""
    value = body.get(name, False)
    if type(value) is not bool:
        raise BadRequest(f"{name} must be true or false, got {describe(value)}.", field=name)
    return value


def parse_pair_body(body: dict[str, Any], max_digits: int) -> tuple[int, int]:
    """Fields a and b of a single prediction request."""
    reject_unknown(body, PREDICT_FIELDS)
    for name in ("a", "b"):
        if name not in body:
            raise BadRequest(f"Field {name!r} is required.", field=name)
    return parse_uint(body["a"], "a", max_digits), parse_uint(body["b"], "b", max_digits)


def parse_pairs(body: dict[str, Any], max_digits: int) -> tuple[list[int], list[int]]:
    """Field pairs of a batch request, as the a values and the b values."""
    reject_unknown(body, BATCH_FIELDS)
    if "pairs" not in body:
        raise BadRequest("Field 'pairs' is required.", field="pairs")
    pairs = body["pairs"]
    if type(pairs) is not list:
        raise BadRequest(f"pairs must be an array of [a, b] arrays, got {describe(pairs)}.",
                         field="pairs")
    if not pairs:
        raise BadRequest("pairs must hold at least one [a, b] pair.", field="pairs")
    if set(map(type, pairs)) == {list} and set(map(len, pairs)) == {2}:
        a, b = list(map(FIRST, pairs)), list(map(SECOND, pairs))
        if set(map(type, a)) == {int} and set(map(type, b)) == {int}:
            return a, b  # the common case, checked with C-level loops
    a, b = [], []
    for i, pair in enumerate(pairs):
        if type(pair) is not list or len(pair) != 2:
            got = f"{len(pair)} items" if type(pair) is list else describe(pair)
            raise BadRequest(f"pairs[{i}] must be an array of two integers [a, b], got {got}.",
                             field=f"pairs[{i}]")
        a.append(parse_uint(pair[0], f"pairs[{i}][0]", max_digits))
        b.append(parse_uint(pair[1], f"pairs[{i}][1]", max_digits))
    return a, b


def pair_field(i: int, j: int) -> str:
    """How a batch names operand j of pair i."""
    return f"pairs[{i}][{j}]"
