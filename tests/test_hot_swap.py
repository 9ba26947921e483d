"""Hot swap: follow CURRENT cheaply, load fully before swapping, keep the last good model."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from service import model as model_module
from service.app import create_app
from service.model import ModelHolder
from tests.conftest import clone_version, corrupt_version, point_current_at
from training.store import ModelError, ModelStore, VersionNotFound


class Events:
    """Records what the holder reports."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str | None, str]] = []
        self.failed: list[str | None] = []

    def model_loaded(self, old: str | None, new: str) -> None:
        self.loaded.append((old, new))

    def model_load_failed(self, version: str | None) -> None:
        self.failed.append(version)

    def model_degraded(self, degraded: bool) -> None:
        self.degraded = degraded


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze the holder's notion of time."""
    fake = Clock()
    monkeypatch.setattr(model_module.time, "monotonic", fake)
    return fake


@pytest.fixture
def events() -> Events:
    """A fresh event recorder."""
    return Events()


@pytest.fixture
def holder(store: ModelStore, clock: Clock, events: Events) -> ModelHolder:
    """A loaded holder with a one-second reload interval."""
    h = ModelHolder(store, reload_interval=1.0, events=events)
    assert h.load()
    return h


def test_loads_current_at_start(holder: ModelHolder, store: ModelStore, events: Events) -> None:
    assert holder.ready and holder.current().version == store.current()
    assert events.loaded == [(None, store.current())]


def test_a_new_current_is_served_after_the_interval(
    holder: ModelHolder, store: ModelStore, clock: Clock, events: Events
) -> None:
    old = store.current()
    new = clone_version(store, activate=True)
    clock.now += 0.5
    assert holder.current().version == old  # not checked yet: at most one stat per interval
    clock.now += 0.6
    assert holder.current().version == new
    assert events.loaded[-1] == (old, new)


def test_stat_runs_at_most_once_per_interval(
    holder: ModelHolder, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(model_module.os, "stat", lambda p: calls.append(p) or real_stat(p))
    for _ in range(1000):
        holder.current()
    assert calls == []
    clock.now += 1.0
    for _ in range(1000):
        holder.current()
    assert len(calls) == 1


def test_an_unchanged_current_is_not_reloaded(
    holder: ModelHolder, store: ModelStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "load", lambda v: pytest.fail("reloaded an unchanged CURRENT"))
    for _ in range(5):
        clock.now += 2.0
        holder.current()


def test_a_corrupt_version_keeps_the_last_good_model_and_is_counted_once(
    holder: ModelHolder, store: ModelStore, clock: Clock, events: Events
) -> None:
    good = store.current()
    bad = corrupt_version(store)
    point_current_at(store, bad)
    for _ in range(5):
        clock.now += 1.5
        assert holder.current().version == good
    assert events.failed == [bad]
    assert holder.ready


def test_recovers_when_current_points_at_a_good_version_again(
    holder: ModelHolder, store: ModelStore, clock: Clock
) -> None:
    good = store.current()
    point_current_at(store, corrupt_version(store))
    clock.now += 1.5
    holder.current()
    new = clone_version(store, good, activate=True)
    clock.now += 1.5
    assert holder.current().version == new


@pytest.mark.parametrize("damage", ["missing", "unknown version", "garbage"])
def test_a_broken_current_file_keeps_the_last_good_model(
    holder: ModelHolder, store: ModelStore, clock: Clock, events: Events, damage: str
) -> None:
    good = store.current()
    if damage == "missing":
        store.current_file.unlink()
    elif damage == "unknown version":
        point_current_at(store, "20200101T000000Z-abcdef")
    else:
        store.current_file.write_bytes(b"\xff\xfe../../etc/passwd")
    clock.now += 1.5
    assert holder.current().version == good
    assert len(events.failed) == 1


def test_not_ready_until_a_valid_model_exists(tmp_path: Path, clock: Clock, events: Events) -> None:
    store = ModelStore(tmp_path)
    holder = ModelHolder(store, reload_interval=1.0, events=events)
    assert not holder.load()
    assert "CURRENT" in holder.reason
    assert holder.current() is None and not holder.ready


def test_versioned_access_is_cached(
    holder: ModelHolder, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = holder.current()
    assert holder.get_version(served.version) is served
    other = clone_version(store)
    loads = []
    real_load = store.load
    monkeypatch.setattr(store, "load", lambda v: loads.append(v) or real_load(v))
    first = holder.get_version(other)
    assert holder.get_version(other) is first and loads == [other]
    assert first.version == other and holder.current().version == served.version


def test_versioned_access_errors(holder: ModelHolder, store: ModelStore) -> None:
    with pytest.raises(VersionNotFound):
        holder.get_version("../CURRENT")
    with pytest.raises(VersionNotFound):
        holder.get_version("20200101T000000Z-abcdef")
    with pytest.raises(ModelError):
        holder.get_version(corrupt_version(store))


def test_the_cache_is_bounded(holder: ModelHolder, store: ModelStore) -> None:
    versions = [clone_version(store) for _ in range(holder.cache_size + 2)]
    for version in versions:
        holder.get_version(version)
    assert len(holder._cache) == holder.cache_size


def test_concurrent_readers_always_get_a_valid_model(store: ModelStore) -> None:
    holder = ModelHolder(store, reload_interval=0.0)
    holder.load()
    versions = {store.current()} | {clone_version(store) for _ in range(2)}
    stop = threading.Event()
    seen: set[str] = set()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                model = holder.current()
                model.predictor.add([3], [5], 8)
                seen.add(model.version)
                stop.wait(0.0005)  # a read is microseconds: spinning would starve the swaps' gate
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for version in sorted(versions) * 3:
        store.activate(version)
    stop.set()
    for t in threads:
        t.join(10)
    assert not failures
    assert seen == versions  # every reader got a whole model, and every swap was seen


def test_the_app_follows_current_and_counts_failures(store: ModelStore) -> None:
    client = create_app({"MODEL_DIR": str(store.root), "RELOAD_INTERVAL": 0.0}).test_client()
    new = clone_version(store, activate=True)
    assert client.post("/v1/predict", json={"a": 1, "b": 1}).get_json()["model_version"] == new
    point_current_at(store, corrupt_version(store))
    response = client.post("/v1/predict", json={"a": 1, "b": 1})
    assert response.status_code == 200 and response.get_json()["model_version"] == new
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "rnnadd_model_load_failures_total 1.0" in metrics


def test_the_watch_thread_swaps_without_any_request(store: ModelStore) -> None:
    holder = ModelHolder(store, reload_interval=0.05)
    holder.load()
    thread = holder.watch()
    try:
        new = clone_version(store, activate=True)
        deadline = time.monotonic() + 10
        while holder._model.version != new and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder._model.version == new
    finally:
        holder.stop()
        thread.join(5)
    assert not thread.is_alive()


# --- nothing a request does waits on the model directory -------------------------------------

def wait_for(condition, timeout: float = 10.0) -> bool:
    """Poll until condition() holds or the time is up."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_fifo_at_current_never_freezes_switching(store: ModelStore) -> None:
    """A FIFO briefly at CURRENT once blocked the watch thread's read for good: now it is an
    error at once (degraded, still serving), and the next real CURRENT is followed."""
    app = create_app({"MODEL_DIR": str(store.root), "RELOAD_INTERVAL": 0.05,
                      "ACCESS_LOG": False})
    holder = app.extensions["rnnadd"].holder
    served = holder.current().version
    thread = holder.watch()
    fifo = store.root / ".fifo"
    try:
        os.mkfifo(fifo)
        os.replace(fifo, store.current_file)
        assert wait_for(lambda: holder.degraded is not None), "the FIFO was never reported"
        ready = app.test_client().get("/readyz").get_json()
        assert ready["status"] == "degraded" and "FIFO" in ready["degraded"]
        assert ready["model_version"] == served
        new = clone_version(store, served, activate=True)
        assert wait_for(lambda: holder._model.version == new), "switching is frozen"
        assert holder.degraded is None
    finally:
        with contextlib.suppress(OSError):  # unblock a reader stuck on it, if any
            os.close(os.open(store.current_file, os.O_WRONLY | os.O_NONBLOCK))
        holder.stop()
        thread.join(5)


def test_with_the_watch_thread_probes_and_predictions_never_read_the_store(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app({"MODEL_DIR": str(store.root), "RELOAD_INTERVAL": 0.0,
                      "ACCESS_LOG": False})
    holder = app.extensions["rnnadd"].holder
    thread = holder.watch()
    try:
        callers: list[threading.Thread] = []
        monkeypatch.setattr(ModelHolder, "refresh",
                            lambda self, force=False: callers.append(threading.current_thread()))
        client = app.test_client()
        for path in ("/readyz", "/healthz", "/v2/health/ready"):
            assert client.get(path).status_code == 200
        assert client.post("/v1/predict", json={"a": 1, "b": 2}).status_code == 200
        assert client.post("/v2/models/rnnadd/infer", json={"inputs": [
            {"name": n, "shape": [1], "datatype": "INT64", "data": [1]} for n in "ab"]}
        ).status_code == 200
        assert threading.current_thread() not in callers, "a request read CURRENT"
    finally:
        holder.stop()
        thread.join(5)
