"""The gRPC server of each gunicorn worker: inference, health and reflection on RNNADD_GRPC_BIND.

Every worker serves gRPC beside HTTP, on the same port through SO_REUSEPORT (the master holds
the port, see service/gunicorn.conf.py), with the worker's own app: the same ModelHolder and its
watch thread, the same inference core, metrics and limits as REST. gunicorn supervises it with
the worker, and SIGTERM drains it for RNNADD_GRACEFUL_TIMEOUT as it drains HTTP.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.context import EXTENSION, Services
from service.grpc_api import SERVICE, InferenceServicer
from service.openapi import SPEC_PATH

log = logging.getLogger("rnnadd.grpc")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Health service names: these follow readiness (a model is loaded); "liveness" is SERVING while
# the server runs, for probes that must not restart a live worker that has no model yet.
READINESS_NAMES = ("", SERVICE, "readiness")
LIVENESS = "liveness"


@dataclass
class GrpcServer:
    """A started server, its health service, and what stops it."""

    server: grpc.Server
    health: health.HealthServicer
    port: int
    stopped: threading.Event = field(default_factory=threading.Event)
    done: threading.Event | None = None

    def stop(self, grace: float) -> threading.Event:
        """Refuse new calls, let calls in flight finish for `grace` seconds; idempotent."""
        if self.done is None:
            self.stopped.set()
            self.health.enter_graceful_shutdown()
            self.done = self.server.stop(grace)
        return self.done


def _follow_readiness(services: Services, servicer: health.HealthServicer,
                      stopped: threading.Event) -> None:
    """Health says SERVING exactly while a model is loaded, checked as often as CURRENT."""
    period = max(services.settings.reload_interval, 0.1)
    last = None
    while True:
        status = SERVING if services.holder.current() is not None else NOT_SERVING
        if status != last:
            for name in READINESS_NAMES:
                servicer.set(name, status)
            last = status
        if stopped.wait(period):
            return


def start(services: Services, bind: str) -> GrpcServer:
    """Build and start the server on `bind`; raise when the address cannot be listened on."""
    settings = services.settings
    options = [
        ("grpc.max_receive_message_length", settings.max_body),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1),
    ]
    # Few threads: each call hands off between grpc's poller and a pool thread twice, and more
    # threads than the GIL can run only contend for it (docs/benchmarks.md measures 2, 3 and 4).
    pool = futures.ThreadPoolExecutor(max_workers=settings.grpc_threads,
                                      thread_name_prefix="rnnadd-grpc")
    server = grpc.server(pool, options=options)
    version = json.loads(SPEC_PATH.read_bytes())["info"]["version"]
    server.add_registered_method_handlers(SERVICE, InferenceServicer(services, version).handlers())
    checker = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
    )
    checker.set(LIVENESS, SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection((SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(bind)
    if port == 0:
        raise RuntimeError(f"cannot listen for gRPC on {bind} (RNNADD_GRPC_BIND)")
    server.start()
    running = GrpcServer(server, checker, port)
    threading.Thread(target=_follow_readiness, args=(services, checker, running.stopped),
                     name="rnnadd-grpc-health", daemon=True).start()
    log.info("gRPC listening at %s", bind)
    return running


def serve_in_worker(worker: Any) -> GrpcServer | None:
    """Start this worker's server and drain it on the signals that stop the worker."""
    services: Services | None = getattr(worker.wsgi, "extensions", {}).get(EXTENSION)
    if services is None or not services.settings.grpc_bind:
        return None
    running = start(services, services.settings.grpc_bind)
    grace = services.settings.graceful_timeout
    for signum, seconds in ((signal.SIGTERM, grace), (signal.SIGINT, 0), (signal.SIGQUIT, 0)):
        _chain(signum, running, seconds)
    worker.rnnadd_grpc = running
    return running


def _chain(signum: int, running: GrpcServer, grace: float) -> None:
    """Stop gRPC when gunicorn's own handler for this signal runs, then run that handler."""
    previous = signal.getsignal(signum)

    def handle(number: int, frame: Any) -> None:
        running.stop(grace)
        if callable(previous):
            previous(number, frame)

    signal.signal(signum, handle)


def finish_in_worker(worker: Any) -> None:
    """Before the worker exits: wait for gRPC calls in flight (bounded by the graceful timeout)."""
    running: GrpcServer | None = getattr(worker, "rnnadd_grpc", None)
    if running is None:
        return
    grace = float(worker.cfg.graceful_timeout)
    running.stop(grace).wait(grace + 1)
