"""Request parsing and validation: strict, cheap, and precise about which field is wrong."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from flask import Request

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

DIGITS = re.compile(r"[0-9]+")
PREDICT_FIELDS = frozenset({"a", "b", "bits"})
BATCH_FIELDS = frozenset({"pairs", "bits"})
FIRST, SECOND = itemgetter(0), itemgetter(1)


@dataclass(frozen=True)
class Limits:
    """Configured bounds, with derived figures computed once rather than per request."""

    max_bits: int
    max_batch: int
    max_work: int = 2_560_000  # pairs x bits per request: 10,000 pairs of 256 bits
    max_input_bits: int = field(init=False)
    max_digits: int = field(init=False)

    def __post_init__(self) -> None:
        # the sum of two inputs must fit in max_bits, so each input has at most max_bits - 1 bits
        object.__setattr__(self, "max_input_bits", self.max_bits - 1)
        object.__setattr__(self, "max_digits", len(str(2**self.max_bits)))


def json_type(value: Any) -> str:
    """Name a parsed value the way the client wrote it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"the number {value!r} (integers only, without fraction or exponent)"
    if isinstance(value, str):
        return "a string that is not all decimal digits"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def read_body(request: Request, limit: int | None) -> bytes:
    """The raw body; with a Content-Length it is read straight from the WSGI input.

    That skips werkzeug's stream wrappers, a sixth of a single prediction's cost; chunked
    bodies still go through werkzeug, which enforces the limit as it reads.
    """
    environ = request.environ
    length = environ.get("CONTENT_LENGTH")
    if not length or not length.isdigit() or "HTTP_TRANSFER_ENCODING" in environ:
        return request.get_data(cache=True)  # raises 413 beyond MAX_CONTENT_LENGTH
    size = int(length)
    if limit is not None and size > limit:
        raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    return environ["wsgi.input"].read(size) if size else b""


def read_json(
    request: Request, limit: int | None = None, *, allow_empty: bool = False
) -> dict[str, Any]:
    """The request body as a JSON object, or the matching 400/413/415 problem."""
    data = read_body(request, limit if limit is not None else request.max_content_length)
    if not data:
        if allow_empty:
            return {}
        raise BadRequest("The request body is empty; send a JSON object.")
    content_type = request.environ.get("CONTENT_TYPE", "")
    if content_type != "application/json" and not request.is_json:
        raise UnsupportedMediaType(
            f"The body must be JSON (Content-Type: application/json), got "
            f"{request.mimetype or 'no content type'}."
        )
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"The body must be a JSON object, got {json_type(body)}.")
    return body


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Unknown fields are errors, so a misspelt "bits" is never silently ignored."""
    if body.keys() <= allowed:
        return
    unknown = sorted(str(k) for k in body.keys() - allowed)
    raise BadRequest(
        f"Unknown field {unknown[0]!r}; allowed fields: {', '.join(sorted(allowed))}.",
        field=unknown[0],
    )


def parse_uint(value: Any, name: str, limits: Limits) -> int:
    """A non-negative integer from a JSON integer or a string of decimal digits."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is str and len(value) <= limits.max_digits and DIGITS.fullmatch(value):
        number = int(value)
    elif kind is str and len(value) > limits.max_digits:
        raise BadRequest(
            f"{name} is a string of {len(value)} characters; inputs may have at most "
            f"{limits.max_digits} decimal digits.",
            field=name,
        )
    else:
        raise BadRequest(
            f"{name} must be a non-negative integer (a JSON integer or a string of decimal "
            f"digits), got {json_type(value)}.",
            field=name,
        )
    if number < 0:
        raise BadRequest(f"{name} must be non-negative, got {number}.", field=name)
    if number.bit_length() > limits.max_input_bits:
        raise BadRequest(
            f"{name} has {number.bit_length()} bits; inputs may have at most "
            f"{limits.max_input_bits} so that the sum fits in {limits.max_bits} bits.",
            field=name,
        )
    return number


def parse_bits(body: dict[str, Any], longest: int, model_bits: int, limits: Limits) -> int:
    """The width to run: the explicit one if it fits the inputs, else the default."""
    needed = longest + 1
    if "bits" not in body:
        return max(min(model_bits, limits.max_bits), needed)
    bits = body["bits"]
    if type(bits) is not int:
        raise BadRequest(f"bits must be an integer, got {json_type(bits)}.", field="bits")
    if not 1 <= bits <= limits.max_bits:
        raise BadRequest(f"bits must be between 1 and {limits.max_bits}, got {bits}.",
                         field="bits")
    if bits < needed:
        raise BadRequest(
            f"bits={bits} is too small: the longest input has {longest} bits, so the sum "
            f"needs at least {needed}.",
            field="bits",
        )
    return bits


def check_work(pairs: int, bits: int, limits: Limits) -> None:
    """Bound pairs x bits, so a small body cannot ask for seconds of CPU and gigabytes."""
    if pairs * bits > limits.max_work:
        raise PayloadTooLarge(
            f"{pairs} pairs of {bits} bits is {pairs * bits} pair-bits of work; at most "
            f"{limits.max_work} are allowed per request (fewer pairs or fewer bits).",
            field="pairs",
        )


def parse_pair_body(body: dict[str, Any], limits: Limits) -> tuple[int, int]:
    """Fields a and b of a single prediction request."""
    reject_unknown(body, PREDICT_FIELDS)
    for name in ("a", "b"):
        if name not in body:
            raise BadRequest(f"Field {name!r} is required.", field=name)
    return parse_uint(body["a"], "a", limits), parse_uint(body["b"], "b", limits)


def parse_pairs(body: dict[str, Any], limits: Limits) -> tuple[list[int], list[int], int]:
    """Field pairs of a batch request: (a values, b values, longest bit length)."""
    reject_unknown(body, BATCH_FIELDS)
    if "pairs" not in body:
        raise BadRequest("Field 'pairs' is required.", field="pairs")
    pairs = body["pairs"]
    if type(pairs) is not list:
        raise BadRequest(f"pairs must be an array of [a, b] arrays, got {json_type(pairs)}.",
                         field="pairs")
    if not pairs:
        raise BadRequest("pairs must hold at least one [a, b] pair.", field="pairs")
    if len(pairs) > limits.max_batch:
        raise PayloadTooLarge(
            f"pairs holds {len(pairs)} pairs; at most {limits.max_batch} are allowed per batch.",
            field="pairs",
        )
    fast = _fast_pairs(pairs, limits)
    return fast if fast is not None else _slow_pairs(pairs, limits)


def _fast_pairs(pairs: list[Any], limits: Limits) -> tuple[list[int], list[int], int] | None:
    """Validate the common case (JSON ints) with C-level loops; None means check item by item."""
    if set(map(type, pairs)) != {list} or set(map(len, pairs)) != {2}:
        return None
    a, b = list(map(FIRST, pairs)), list(map(SECOND, pairs))
    if set(map(type, a)) != {int} or set(map(type, b)) != {int} or min(a) < 0 or min(b) < 0:
        return None
    longest = max(max(a), max(b)).bit_length()
    if longest > limits.max_input_bits:
        return None
    return a, b, longest


def _slow_pairs(pairs: list[Any], limits: Limits) -> tuple[list[int], list[int], int]:
    """Check each pair, naming the first wrong one; also accepts strings of digits."""
    a: list[int] = []
    b: list[int] = []
    for i, pair in enumerate(pairs):
        if type(pair) is not list or len(pair) != 2:
            got = f"{len(pair)} items" if type(pair) is list else json_type(pair)
            raise BadRequest(f"pairs[{i}] must be an array of two integers [a, b], got {got}.",
                             field=f"pairs[{i}]")
        a.append(parse_uint(pair[0], f"pairs[{i}][0]", limits))
        b.append(parse_uint(pair[1], f"pairs[{i}][1]", limits))
    return a, b, max(max(a), max(b)).bit_length()
