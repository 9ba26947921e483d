"""The one place that loads models: serve CURRENT, swap it on change, keep the last good one.

A worker that starts while CURRENT names a broken version serves the last version that passed
the promotion gate (LAST_GOOD) instead, and says it is degraded, rather than answer 503.

Whether a version is trusted is decided in one place, `assess`: every answer, probe and listing
that says "trusted", "forced" or a gate status asks it.

Under gunicorn each worker follows CURRENT from its watch thread, and requests then never read
the model directory to find the active model: a FIFO or a hung mount at CURRENT stalls only
that thread, never a request, and no request waits on another's refresh.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from training.predictor import Predictor
from training.store import ModelError, ModelStore, VersionNotFound, is_version

log = logging.getLogger("rnnadd.model")

Signature = tuple[int, int, int]


class ModelEvents(Protocol):
    """What the holder reports, so metrics stay out of this module."""

    def model_loaded(self, old: str | None, new: str) -> None: ...

    def model_load_failed(self, version: str | None) -> None: ...

    def model_degraded(self, degraded: bool) -> None: ...


@dataclass(frozen=True)
class LoadedModel:
    """A validated version ready to predict; immutable so a swap is one reference assignment."""

    version: str
    record: dict[str, Any]
    predictor: Predictor
    bits: int
    proof: dict[str, Any]  # the stored certificate, re-verified against these weights at load

    @cached_property
    def certified(self) -> bool:
        """assess's decision for this version, made once: every answer it gives carries it."""
        return certificate_summary(self.record, self.proof)["certified"]


FORCED_REFRESH_WAIT = 2.0  # seconds a forced refresh (after an activation) waits for the lock


@dataclass(frozen=True)
class Trust:
    """What this service may claim about a version: proved exact at every width, or not."""

    trusted: bool
    gate: dict[str, Any]
    certificate: dict[str, Any]


CERTIFICATE_SUMMARY_KEYS = ("method", "classes", "cells", "seconds", "check_seconds")


def certificate_summary(record: dict[str, Any], proof: dict[str, Any] | None) -> dict[str, Any]:
    """certified, whether this worker verified it, and the proof's method, classes and time."""
    claimed = record.get("certificate") if isinstance(record.get("certificate"), dict) else {}
    summary = {k: claimed[k] for k in CERTIFICATE_SUMMARY_KEYS if k in claimed}
    if proof is None:  # a listing: what the record says, not re-verified here
        return {"certified": claimed.get("certified") is True, "verified": False, **summary}
    if proof["certified"]:
        checked = proof["summary"]
        summary.update({k: checked[k] for k in ("method", "classes", "cells") if k in checked})
        summary["check_seconds"] = checked.get("seconds")
    return {"certified": proof["certified"] is True, "verified": True, **summary,
            "problem": proof["problem"]}


def assess(record: dict[str, Any], max_bits: int, proof: dict[str, Any] | None = None) -> Trust:
    """The one decision whether a version is trusted: a certificate that proves its weights.

    With proof (the certificate re-verified against loaded weights) that decides; a listing has
    only the record's claim, which activation and loading re-verify before anything is served.
    The gate's sampled checks are reported beside it; a certified version adds exactly at every
    width, so max_bits bounds work, not correctness.
    """
    gate = gate_summary(record, max_bits)
    certificate = certificate_summary(record, proof)
    return Trust(trusted=certificate["certified"], gate=gate, certificate=certificate)


def trust_of(model: LoadedModel, max_bits: int) -> Trust:
    """Whether a loaded version is trusted: its certificate as verified when it was loaded."""
    return assess(model.record, max_bits, model.proof)


def serving_state(holder: ModelHolder, model: LoadedModel, max_bits: int) -> dict[str, Any]:
    """What an operator needs to trust the served version: certified, its gate, forced, degraded."""
    trust = trust_of(model, max_bits)
    return {"certified": trust.trusted, "certificate": trust.certificate, "gate": trust.gate,
            "forced": not trust.trusted, "degraded": holder.degraded}


def gate_summary(record: dict[str, Any], max_bits: int) -> dict[str, Any]:
    """Whether a version passed the promotion gate at the widths this service answers."""
    gate = record.get("gate")
    if not isinstance(gate, dict) or not isinstance(gate.get("max_bits"), int):
        return {"status": "unchecked", "passed": False, "max_bits": None, "failed": None}
    covers = gate["max_bits"] >= max_bits
    passed = gate.get("passed") is True and covers
    status = "passed" if passed else ("failed" if gate.get("passed") is not True else "narrower")
    return {"status": status, "passed": passed, "max_bits": gate["max_bits"],
            "failed": gate.get("failed")}


def load_model(store: ModelStore, version: str) -> LoadedModel:
    """Load and fully validate a version, and precompute its predictor."""
    model = store.load(version)
    return LoadedModel(model.version, model.record, Predictor(model.params), int(model.bits),
                       store.proof(model))


class ModelHolder:
    """Per-worker access to the active model with a rate-limited stat of CURRENT."""

    def __init__(
        self,
        store: ModelStore,
        reload_interval: float = 1.0,
        events: ModelEvents | None = None,
        cache_size: int = 4,
    ) -> None:
        self.store = store
        self.reload_interval = reload_interval
        self.events = events
        self.cache_size = cache_size
        self._model: LoadedModel | None = None
        self._reason = "no model loaded yet"
        self.degraded: str | None = None  # why the served version is not the one CURRENT names
        self._signature: Signature | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """True once a valid model is being served."""
        return self._model is not None

    @property
    def reason(self) -> str:
        """Why the holder is not ready (or what last went wrong)."""
        return self._reason

    def current(self) -> LoadedModel | None:
        """The model being served; checks CURRENT itself only when no watch thread does."""
        watcher = self._watcher
        if (watcher is None or not watcher.is_alive()) and time.monotonic() >= self._next_check:
            self.refresh()
        return self._model

    def load(self) -> bool:
        """Load the version named in CURRENT now, whatever the interval; True when ready."""
        self.refresh(force=True)
        return self.ready

    def watch(self) -> threading.Thread:
        """Follow CURRENT from a daemon thread too: idle workers switch, and no request waits."""
        period = max(self.reload_interval, 0.05)

        def loop() -> None:
            while not self._stopped.wait(period):
                self.refresh()

        thread = threading.Thread(target=loop, name="rnnadd-model-watch", daemon=True)
        thread.start()
        self._watcher = thread
        return thread

    def stop(self) -> None:
        """End the watch thread, if any."""
        self._stopped.set()

    def refresh(self, force: bool = False) -> None:
        """Stat CURRENT and swap in the version it names if it changed; never raises.

        Unforced, it never waits: another thread checking means keep serving what we have.
        Forced (startup, this worker's own activation), it waits a bounded time for the lock.
        """
        acquired = (self._lock.acquire(timeout=FORCED_REFRESH_WAIT) if force
                    else self._lock.acquire(blocking=False))
        if not acquired:
            if force:
                log.warning("CURRENT is being read by another thread for over %.0f s; the "
                            "watch thread will switch", FORCED_REFRESH_WAIT)
            return
        try:
            self._next_check = time.monotonic() + self.reload_interval
            signature = self._stat()
            if signature == self._signature and not force:
                return
            self._signature = signature
            self._swap_to_current(signature)
        finally:
            self._lock.release()

    def _stat(self) -> Signature | None:
        """Cheap change detection: mtime, size and inode of CURRENT (None if absent)."""
        try:
            st = os.stat(self.store.current_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _swap_to_current(self, signature: Signature | None) -> None:
        """Load the named version fully, then swap the served reference; keep the old on error."""
        if signature is None:
            self._fail(None, "CURRENT does not exist")
            return
        try:
            version = self.store.current()
        except (OSError, ModelError, ValueError) as exc:
            self._fail(None, f"cannot read CURRENT: {exc}")
            return
        if version is None:
            self._fail(None, "CURRENT does not exist")
            return
        old = self._model
        if old is not None and old.version == version and not self.degraded:
            return
        try:
            model = self._cached(version) or load_model(self.store, version)
        except Exception as exc:  # any corrupt file must leave the last good model serving
            self._fail(version, f"version {version} failed to load: {exc}")
            return
        self._serve(model, degraded=None)

    def _serve(self, model: LoadedModel, degraded: str | None) -> None:
        """Swap the served reference (one assignment) and report the change."""
        old = self._model
        self._model = model
        self._reason = "ready"
        if old is not None and old.version != model.version:
            self._remember(old)
        if self.degraded != degraded:
            self.degraded = degraded
            if self.events is not None:
                self.events.model_degraded(degraded is not None)
        log.info("serving model %s (was %s)%s", model.version, old.version if old else None,
                 f"; degraded: {degraded}" if degraded else "")
        if self.events is not None and (old is None or old.version != model.version):
            self.events.model_loaded(old.version if old else None, model.version)

    def _fail(self, version: str | None, reason: str) -> None:
        """Log and count a failed load; keep the previous model, else fall back to LAST_GOOD."""
        if self.events is not None:
            self.events.model_load_failed(version)
        if self._model is None:
            self._reason = reason
            self._fall_back(reason)
        elif self.degraded is None:
            self.degraded = f"{reason}; still serving {self._model.version}"
            if self.events is not None:
                self.events.model_degraded(True)
        log.error("model load failed: %s; %s", reason,
                  f"serving {self._model.version}" if self._model else "not ready")

    def _fall_back(self, reason: str) -> None:
        """With nothing to serve, serve the last version that passed the gate, as degraded."""
        try:
            version = self.store.last_good()
            if version is None:
                return
            model = self._cached(version) or load_model(self.store, version)
        except Exception as exc:  # the fallback is best effort; the worker stays not ready
            log.error("the last good version cannot be loaded either: %s", exc)
            return
        self._serve(model, degraded=f"{reason}; serving the last good version {version}")

    def _cached(self, version: str) -> LoadedModel | None:
        """A recently used version, to make rollbacks and versioned requests cheap."""
        with self._cache_lock:
            model = self._cache.get(version)
            if model is not None:
                self._cache.move_to_end(version)
            return model

    def get_version(self, version: str) -> LoadedModel:
        """A specific stored version (the served one or a cached one); raises store errors."""
        model = self._model
        if model is not None and model.version == version:
            return model
        if not is_version(version):
            raise VersionNotFound(self.store.root, f"{version!r} is not a valid version id")
        cached = self._cached(version)
        if cached is not None:
            return cached
        loaded = load_model(self.store, version)
        self._remember(loaded)
        return loaded

    def _remember(self, model: LoadedModel) -> None:
        """Keep a few versions in memory; versions are immutable, so entries never go stale."""
        with self._cache_lock:
            self._cache[model.version] = model
            self._cache.move_to_end(model.version)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
