"""The inference core: which model answers, at what width, within which limits, and counting.

/v1, /v2 and the WSGI fast path are codecs over this one module: they parse their own wire
format, call `Runtime.predict` (or `trace`), and format the `Prediction` it returns. Every
limit is checked here, so no protocol can skip one, and every Prediction says whether the
version that computed it is trusted (service.model.assess), so no codec can drop the marker.

Work is counted as pairs x bits x the model's cost per step relative to the 16-unit default:
one step multiplies a hidden x hidden matrix, so a 256-unit version costs 256 times as much per
pair-bit, and RNNADD_MAX_WORK bounds the time of a request whichever stored version answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from service.metrics import Metrics
from service.model import LoadedModel, ModelHolder, trust_of
from service.settings import Settings
from training.store import ModelError, VersionNotFound

AUTO: Any = object()  # no width was asked for: the model's own, widened to fit the inputs
TRACE_MAX_BITS = 256  # a trace carries hidden_size floats per step; wider would be megabytes
REFERENCE_HIDDEN = 16  # RNNADD_MAX_WORK is in pair-bits of a model of this many hidden units

log = logging.getLogger("rnnadd.runtime")


@dataclass(frozen=True)
class Prediction:
    """Sums of pairs from one model at one width; `correct` compares with exact sums."""

    version: str
    bits: int
    a: Sequence[int]
    b: Sequence[int]
    sums: list[int]
    trusted: bool = True  # the version passes (service.model.assess); codecs say so when not
    forced: bool = False  # not trusted, yet the active version: it went live by force

    @property
    def correct(self) -> list[bool]:
        """Whether each predicted sum equals the exact one."""
        return [s == x + y for s, x, y in zip(self.sums, self.a, self.b, strict=True)]


def work_weight(hidden: int) -> int:
    """Cost of one pair-bit on a model of `hidden` units, in pair-bits of the 16-unit default."""
    return max(1, -(-hidden * hidden // (REFERENCE_HIDDEN * REFERENCE_HIDDEN)))


def integer(value: Any) -> int | None:
    """A JSON integer, also written as 5.0 (JSON Schema's integer); None for anything else.

    Floats count only below 2**53, where every integer is exact, so 1e300 is never silently
    rounded into a different number.
    """
    kind = type(value)
    if kind is int:
        return value
    if kind is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


class Runtime:
    """Resolves the model, picks the width, enforces every limit, predicts and counts."""

    def __init__(self, settings: Settings, holder: ModelHolder, metrics: Metrics) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.max_bits = settings.max_bits
        self.max_batch = settings.max_batch
        self.max_work = settings.max_work
        self.max_input_bits = settings.max_input_bits
        self.max_digits = settings.max_digits

    def model(self, version: str | None = None, *, admin: bool = False) -> LoadedModel:
        """The active model, or the stored version named; 503/404/409 when it cannot answer.

        A named version that is not trusted answers only admins (403 otherwise): the active
        version is the operator's choice, a stored one is anybody's pick.
        """
        if version is None:
            model = self.holder.current()
            if model is None:
                raise ServiceUnavailable(f"No valid model is loaded: {self.holder.reason}")
            return model
        model = self._stored(version)
        trust = trust_of(model, self.max_bits)
        if not trust.trusted and not admin:
            raise Forbidden(f"Version {version} is not trusted (not certified: "
                            f"{trust.certificate.get('problem')}); only admin callers may use "
                            "it (Authorization: Bearer <token>).", field="version")
        return model

    def _stored(self, version: str) -> LoadedModel:
        """A stored version by id, with the store's refusals as API errors."""
        try:
            return self.holder.get_version(version)
        except VersionNotFound as exc:
            raise NotFound(f"Unknown version {version!r}: no stored version has this id.",
                           field="version") from exc
        except ModelError as exc:
            log.error("version %s was requested but does not load: %s", version, exc)
            raise Conflict(f"Version {version} is not ready: {exc}", field="version") from exc

    def check_pairs(self, a: Sequence[int], b: Sequence[int],
                    name: Callable[[int, int], str] = lambda i, j: "ab"[j]) -> int:
        """Bound the batch and every operand; return the widest operand's bit length.

        `name(i, j)` says how the codec calls operand j of pair i, so errors name the field.
        """
        if len(a) != len(b):
            raise BadRequest(f"a and b must have the same length, got {len(a)} and {len(b)}.")
        if not a:
            raise BadRequest("At least one pair is needed.", field="pairs")
        if len(a) > self.max_batch:
            raise PayloadTooLarge(f"{len(a)} pairs were sent; at most {self.max_batch} are "
                                  "allowed per request.", field="pairs")
        low, high = min(min(a), min(b)), max(max(a), max(b))
        if low < 0 or high.bit_length() > self.max_input_bits:
            i, j, value = next((i, j, v) for i, pair in enumerate(zip(a, b, strict=True))
                               for j, v in enumerate(pair)
                               if v < 0 or v.bit_length() > self.max_input_bits)
            field = name(i, j)
            if value < 0:
                raise BadRequest(f"{field} must be non-negative, got {value}.", field=field)
            raise BadRequest(f"{field} has {value.bit_length()} bits; inputs may have at most "
                             f"{self.max_input_bits} so that the sum fits in {self.max_bits} "
                             "bits.", field=field)
        return high.bit_length()

    def width(self, requested: Any, longest: int, model: LoadedModel) -> int:
        """The explicit width if it fits the inputs, else the model's, widened to fit."""
        needed = longest + 1
        if requested is AUTO:
            return max(min(model.bits, self.max_bits), needed)
        bits = integer(requested)
        if bits is None or isinstance(requested, bool):
            raise BadRequest(f"bits must be an integer, got {describe(requested)}.", field="bits")
        if not 1 <= bits <= self.max_bits:
            raise BadRequest(f"bits must be between 1 and {self.max_bits}, got {bits}.",
                             field="bits")
        if bits < needed:
            raise BadRequest(f"bits={bits} is too small: the longest input has {longest} bits, "
                             f"so the sum needs at least {needed}.", field="bits")
        return bits

    def check_work(self, pairs: int, bits: int, hidden: int = REFERENCE_HIDDEN) -> None:
        """Bound pairs x bits x model cost, so a small body cannot ask for seconds of CPU."""
        weight = work_weight(hidden)
        work = pairs * bits * weight
        if work > self.max_work:
            model = f" on a {hidden}-unit model ({weight} times the work per pair-bit of " \
                    f"{REFERENCE_HIDDEN} units)" if weight > 1 else ""
            raise PayloadTooLarge(
                f"{pairs} pairs of {bits} bits{model} is {work} pair-bits of work; at most "
                f"{self.max_work} are allowed per request (fewer pairs or fewer bits).",
                field="pairs",
            )

    def _prediction(self, model: LoadedModel, width: int, a: Sequence[int], b: Sequence[int],
                    sums: list[int]) -> Prediction:
        """The result with the version's trust: forced when the untrusted version is live."""
        trusted = model.certified
        served = self.holder.current() if not trusted else None
        forced = not trusted and served is not None and served.version == model.version
        return Prediction(model.version, width, a, b, sums, trusted, forced)

    def predict(self, a: Sequence[int], b: Sequence[int], bits: Any = AUTO,
                version: str | None = None,
                name: Callable[[int, int], str] = lambda i, j: "ab"[j], *,
                admin: bool = False) -> Prediction:
        """Add every pair in one vectorized pass, after every check, and count the pairs."""
        longest = self.check_pairs(a, b, name)
        model = self.model(version, admin=admin)
        width = self.width(bits, longest, model)
        self.check_work(len(a), width, model.predictor.hidden_size)
        sums = model.predictor.add(a, b, width)
        self.metrics.add_pairs(len(sums))
        return self._prediction(model, width, a, b, sums)

    def trace(self, a: int, b: int, bits: Any = AUTO) -> tuple[Prediction, list[dict[str, Any]]]:
        """One prediction with what the network computed at every step, for people to look at."""
        longest = self.check_pairs([a], [b])
        model = self.model()
        width = self.width(bits, longest, model)
        if width > TRACE_MAX_BITS:
            raise BadRequest(f"trace is available up to {TRACE_MAX_BITS} bits; this addition "
                             f"needs {width}.", field="trace")
        self.check_work(1, width, model.predictor.hidden_size)
        steps = model.predictor.trace(a, b, width)
        total = sum(step["bit"] << i for i, step in enumerate(steps))
        self.metrics.add_pairs(1)
        return self._prediction(model, width, [a], [b], [total]), steps


def describe(value: Any) -> str:
    """Name a parsed JSON value the way the client wrote it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"the number {value!r} (integers only)"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
