"""Validation and bounds of retrain hyperparameters, so a request can never start an absurd job."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

from service import errors

INT_BOUNDS = {
    "hidden_size": (1, 256),
    "batch_size": (1, 4096),
    "max_steps": (1, 100_000),
    "seed": (0, 2**32 - 1),
    "bits": (2, 64),
}
LR_MAX = 10.0
FIELDS = (*INT_BOUNDS, "optimizer", "learning_rate", "activate")


def _bad(field: str, detail: str) -> errors.BadRequest:
    """A 400 that names the offending field."""
    return errors.BadRequest(detail=f"{field}: {detail}", field=field)


def _check_int(field: str, value: Any) -> int:
    """JSON integers only (true/false and 3.0 are not integers), within bounds."""
    low, high = INT_BOUNDS[field]
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(field, f"must be an integer from {low} to {high}")
    if not low <= value <= high:
        raise _bad(field, f"must be from {low} to {high}, got {value}")
    return value


def _check_lr(value: Any) -> float:
    """A finite number in (0, LR_MAX]."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad("learning_rate", f"must be a number, 0 < learning_rate <= {LR_MAX:g}")
    if not (math.isfinite(value) and 0 < value <= LR_MAX):
        raise _bad("learning_rate", f"must satisfy 0 < learning_rate <= {LR_MAX:g}, got {value}")
    return float(value)


def validate(params: Any, optimizers: Collection[str]) -> dict[str, Any]:
    """Return the checked request parameters; raise errors.BadRequest naming the field."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise errors.BadRequest(detail="the body must be a JSON object of hyperparameters")
    for key in params:
        if key not in FIELDS:
            allowed = ", ".join(FIELDS)
            raise _bad(str(key), f"unknown field (allowed: {allowed})")
    checks: dict[str, Callable[[Any], Any]] = {f: (lambda v, f=f: _check_int(f, v))
                                               for f in INT_BOUNDS}
    checks["learning_rate"] = _check_lr
    checks["optimizer"] = lambda v: _check_optimizer(v, optimizers)
    checks["activate"] = _check_bool
    return {key: checks[key](value) for key, value in params.items()}


def _check_optimizer(value: Any, optimizers: Collection[str]) -> str:
    """One of the optimizers training implements."""
    names = ", ".join(sorted(optimizers))
    if not isinstance(value, str) or value not in optimizers:
        raise _bad("optimizer", f"must be one of {names}, got {value!r}")
    return value


def _check_bool(value: Any) -> bool:
    """JSON true or false, nothing truthy."""
    if not isinstance(value, bool):
        raise _bad("activate", "must be true or false")
    return value
