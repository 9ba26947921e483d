"""The one place that loads models: serve CURRENT, swap it on change, keep the last good one."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from service.errors import ServiceUnavailable
from training.rnn import Predictor
from training.store import ModelError, ModelStore, VersionNotFound, is_version

log = logging.getLogger("rnnadd.model")

Signature = tuple[int, int, int]


class ModelEvents(Protocol):
    """What the holder reports, so metrics stay out of this module."""

    def model_loaded(self, old: str | None, new: str) -> None: ...

    def model_load_failed(self, version: str | None) -> None: ...


@dataclass(frozen=True)
class LoadedModel:
    """A validated version ready to predict; immutable so a swap is one reference assignment."""

    version: str
    record: dict[str, Any]
    predictor: Predictor
    bits: int


def load_model(store: ModelStore, version: str) -> LoadedModel:
    """Load and fully validate a version, and precompute its predictor."""
    model = store.load(version)
    return LoadedModel(model.version, model.record, Predictor(model.params), int(model.bits))


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
        self._signature: Signature | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def ready(self) -> bool:
        """True once a valid model is being served."""
        return self._model is not None

    @property
    def reason(self) -> str:
        """Why the holder is not ready (or what last went wrong)."""
        return self._reason

    def current(self) -> LoadedModel | None:
        """The model being served, after a rate-limited check for a new CURRENT."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        return self._model

    def get(self) -> LoadedModel:
        """The model being served; raises ServiceUnavailable when there is none."""
        model = self._model if time.monotonic() < self._next_check else self.current()
        if model is None:
            raise ServiceUnavailable(f"No valid model is loaded: {self._reason}")
        return model

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
        return thread

    def stop(self) -> None:
        """End the watch thread, if any."""
        self._stopped.set()

    def refresh(self, force: bool = False) -> None:
        """Stat CURRENT and swap in the version it names if it changed; never raises."""
        if not self._lock.acquire(blocking=force):
            return  # another thread is checking; keep serving what we have
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
            self._fail(None, f"{self.store.current_file} does not exist")
            return
        try:
            version = self.store.current()
        except (OSError, ModelError, ValueError) as exc:
            self._fail(None, f"cannot read {self.store.current_file}: {exc}")
            return
        if version is None:
            self._fail(None, f"{self.store.current_file} does not exist")
            return
        old = self._model
        if old is not None and old.version == version:
            return
        try:
            model = self._cached(version) or load_model(self.store, version)
        except Exception as exc:  # any corrupt file must leave the last good model serving
            self._fail(version, f"version {version} failed to load: {exc}")
            return
        self._model = model
        self._reason = "ready"
        if old is not None:
            self._remember(old)
        log.info("serving model %s (was %s)", version, old.version if old else None)
        if self.events is not None:
            self.events.model_loaded(old.version if old else None, version)

    def _fail(self, version: str | None, reason: str) -> None:
        """Log and count a failed load; the previous model, if any, stays in service."""
        if self._model is None:
            self._reason = reason
        log.error("model load failed: %s; %s", reason,
                  f"still serving {self._model.version}" if self._model else "not ready")
        if self.events is not None:
            self.events.model_load_failed(version)

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
