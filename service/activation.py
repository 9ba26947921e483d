"""Going live: the one path every API route takes to activate a version, with its error mapping.

The store establishes promotability from the weights (never from model.json) and replaces CURRENT
under a lock; this module turns its refusals into API errors and makes this worker switch at once.
"""

from __future__ import annotations

import logging
from typing import Any

from service.errors import Conflict, GateFailed, NotCertified, NotFound
from service.jobs import storage_error
from service.model import ModelHolder, certificate_summary
from training import store as model_store
from training.store import ModelError, ModelStore, VersionNotFound

log = logging.getLogger("rnnadd.activation")


def activate(store: ModelStore, holder: ModelHolder, version: str, *, force: bool,
             max_bits: int) -> dict[str, Any]:
    """Activate a stored version (force: even if not promotable); the answer both APIs give."""
    if not model_store.is_version(version):
        raise NotFound(f"{version!r} is not a version id.", field="version")
    try:
        previous = store.current()
    except ModelError:
        previous = None
    try:
        promotion = store.activate(version, force=force, max_bits=max_bits)
    except VersionNotFound as exc:
        raise NotFound(f"No stored version {version}.", field="version") from exc
    except model_store.GateFailed as exc:
        raise GateFailed(
            f"Version {version} fails the promotion gate ({exc.check}); send "
            '{"force": true} to activate it anyway.',
            field="version", extra={"check": exc.check, "gate": exc.gate},
        ) from exc
    except model_store.NotCertified as exc:
        raise NotCertified(
            f"Version {version} is not certified: {exc.reason}; send "
            '{"force": true} to activate it anyway.',
            field="version", extra={"reason": exc.reason},
        ) from exc
    except ModelError as exc:
        raise Conflict(f"Version {version} cannot be activated, it fails validation: {exc}",
                       field="version") from exc
    except OSError as exc:
        raise storage_error(exc, f"activate version {version}") from exc
    if not promotion.passed:
        log.warning("version %s activated by force although it is not promotable (gate: %s; "
                    "certificate: %s)", version, promotion.gate.get("failed"),
                    promotion.proof["problem"])
    holder.refresh(force=True)
    served = holder.current()
    return {"active": version, "previous": previous,
            "model_version": served.version if served else None,
            "forced": not promotion.passed, "certified": promotion.proof["certified"],
            "certificate": certificate_summary(store.record(version), promotion.proof),
            "gate": promotion.gate}
