"""Prometheus metrics built per app, aggregated across gunicorn workers in multiprocess mode."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JOB_OUTCOMES = ("succeeded", "failed", "rejected", "cancelled")

log = logging.getLogger("rnnadd.metrics")


def multiprocess_dir() -> str | None:
    """The directory prometheus_client shares between workers, when multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class JobsCollector(Collector):
    """Retrain jobs by outcome and how many are active: one small file and one lock probe.

    A scrape reads and writes nothing else, so it stays cheap however many jobs ran.
    """

    def __init__(self, outcomes: Callable[[], dict[str, int]], active: Callable[[], int]) -> None:
        self.outcomes = outcomes
        self.active = active

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Read the counts at scrape time; a failure to read one must not break the scrape."""
        try:
            counts = self.outcomes()
        except Exception:
            log.exception("cannot read retrain job outcomes for metrics")
        else:
            done = CounterMetricFamily(
                "rnnadd_retrain_jobs", "Finished retrain jobs by outcome.", labels=["outcome"]
            )
            for outcome in JOB_OUTCOMES:
                done.add_metric([outcome], counts.get(outcome, 0))
            yield done
        try:
            active = self.active()
        except Exception:
            log.exception("cannot count active retrain jobs for metrics")
        else:
            yield GaugeMetricFamily("rnnadd_retrain_jobs_active",
                                    "Retrain jobs queued or running.", value=active)


class Metrics:
    """The service's metrics; one instance per app so tests never share or re-register them."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rnnadd_http_requests",
            "Requests by endpoint (a gRPC method's path), method, status (a gRPC code's name) "
            "and protocol (http or grpc).",
            ["endpoint", "method", "status", "protocol"], registry=self.registry,
        )
        self.latency = Histogram(
            "rnnadd_http_request_duration_seconds",
            "Time to answer a request, by endpoint, protocol and outcome (ok or error).",
            ["endpoint", "protocol", "outcome"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.pairs = Counter(
            "rnnadd_pairs_predicted", "Pairs of integers added by the network.",
            registry=self.registry,
        )
        self.active_model = Gauge(
            "rnnadd_model_active", "1 for the version a worker serves, 0 for versions it left.",
            ["version"], registry=self.registry, multiprocess_mode="liveall",
        )
        self.degraded = Gauge(
            "rnnadd_model_degraded",
            "1 while a worker serves another version than CURRENT names (CURRENT fails to load).",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.load_failures = Counter(
            "rnnadd_model_load_failures", "Model versions that failed to load or validate.",
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int | str, str], Any] = {}
        self._latency_children: dict[tuple[str, str, bool], Any] = {}
        self._scrape = self.registry
        if self.multiprocess:
            self._scrape = CollectorRegistry()
            MultiProcessCollector(self._scrape)

    def observe_request(self, endpoint: str, method: str, status: int | str, seconds: float,
                        protocol: str = "http") -> None:
        """Count one request; children are bound once per label set to keep this cheap.

        HTTP statuses are numbers; gRPC ones are code names, "OK" for success.
        """
        if method not in METHODS:
            method = "other"
        key = (endpoint, method, status, protocol)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()
        ok = status == "OK" if protocol == "grpc" else int(status) < 400
        timer = self._latency_children.get((endpoint, protocol, ok))
        if timer is None:
            timer = self._latency_children[(endpoint, protocol, ok)] = self.latency.labels(
                endpoint, protocol, "ok" if ok else "error")
        timer.observe(seconds)

    def families(self) -> Any:
        """The collected metric families (every worker's, in multiprocess mode)."""
        return self._scrape.collect()

    def add_pairs(self, count: int) -> None:
        """Count pairs predicted, from /v1 and /v2 alike."""
        self.pairs.inc(count)

    def model_loaded(self, old: str | None, new: str) -> None:
        """Move this worker's active-version gauge from the old version to the new one."""
        if old is not None and old != new:
            self.active_model.labels(old).set(0)
        self.active_model.labels(new).set(1)

    def model_load_failed(self, version: str | None) -> None:
        """Count a version that could not be loaded (the worker keeps its last good model)."""
        self.load_failures.inc()

    def model_degraded(self, degraded: bool) -> None:
        """Say whether this worker serves a fallback rather than the version CURRENT names."""
        self.degraded.set(1 if degraded else 0)

    def add_jobs_collector(
        self, outcomes: Callable[[], dict[str, int]], active: Callable[[], int]
    ) -> None:
        """Report retrain jobs at scrape time, once, not once per worker."""
        self._scrape.register(JobsCollector(outcomes, active))

    def exposition(self) -> bytes:
        """Prometheus text for the whole service (all workers in multiprocess mode)."""
        return generate_latest(self._scrape)


def create_blueprint(metrics: Metrics) -> Blueprint:
    """GET /metrics."""
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def scrape() -> Response:
        return Response(metrics.exposition(), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    return bp
