"""The workers' gRPC servers around the protocol: health (Check, Watch), reflection, hot swap,
message limits, the port, and draining on SIGTERM, against real gunicorn servers."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests import servers
from tests.conftest import clone_version
from training.store import ModelStore

pytestmark = pytest.mark.integration

SERVICE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    running = servers.start_server(tmp_path_factory.mktemp("grpc-server"), workers=2, grpc=True,
                                   env={"RNNADD_MAX_BODY": "65536"})
    try:
        yield running
    finally:
        servers.stop_server(running)


def pair(a: int, b: int) -> list[grpcclient.InferInput]:
    """One pair as tritonclient sends it."""
    tensors = []
    for name, value in (("a", a), ("b", b)):
        tensor = grpcclient.InferInput(name, [1], "INT64")
        tensor.set_data_from_numpy(np.array([value], dtype=np.int64))
        tensors.append(tensor)
    return tensors


def check(target: str, service: str = "") -> int:
    """Health.Check as grpc_health_probe sends it."""
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


@pytest.mark.parametrize("service", ["", SERVICE, "readiness", "liveness"])
def test_health_check_serves_while_ready(server: servers.Server, service: str) -> None:
    assert check(server.grpc, service) == SERVING


def test_health_check_of_an_unknown_service_is_not_found(server: servers.Server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        check(server.grpc, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(server: servers.Server) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
        names = {s.name for s in answer.list_services_response.service}
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
        files = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    assert {SERVICE, "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert files.file_descriptor_response.file_descriptor_proto


def test_messages_over_the_body_limit_are_resource_exhausted(server: servers.Server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    values = np.arange(5000, dtype=np.int64)  # 2 x 40,000 bytes > RNNADD_MAX_BODY=65536
    tensors = []
    for name in ("a", "b"):
        tensor = grpcclient.InferInput(name, [5000], "INT64")
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer("rnnadd", tensors)
    client.close()
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "65536" in info.value.message()


def test_a_retrain_or_rollback_reaches_grpc_callers(server: servers.Server) -> None:
    store = ModelStore(server.model_dir)
    old = store.current()
    new = clone_version(store)
    auth = {"Authorization": f"Bearer {server.token}"}
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        for version in (new, old):
            answer = requests.post(f"{server.url}/v1/models/{version}/activate", headers=auth,
                                   json={}, timeout=10)
            assert answer.status_code == 200, answer.text
            deadline, seen = time.monotonic() + 5, set()
            while time.monotonic() < deadline:  # new channels reach both workers
                probe = grpcclient.InferenceServerClient(server.grpc)
                seen.add(probe.infer("rnnadd", pair(1, 2)).get_response().model_version)
                probe.close()
                if seen == {version}:
                    break
                seen.clear()
                time.sleep(0.05)
            assert seen == {version}
    finally:
        client.close()


def test_answers_of_a_forced_active_version_are_marked(server: servers.Server) -> None:
    store = ModelStore(server.model_dir)
    old = store.current()
    flipped = clone_version(store, flip_output=True)
    auth = {"Authorization": f"Bearer {server.token}"}
    try:
        answer = requests.post(f"{server.url}/v1/models/{flipped}/activate", headers=auth,
                               json={"force": True}, timeout=10)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            probe = grpcclient.InferenceServerClient(server.grpc)
            response = probe.infer("rnnadd", pair(3, 5)).get_response()
            probe.close()
            if response.model_version == flipped:
                break
            time.sleep(0.05)
        params = response.parameters
        assert response.model_version == flipped
        assert (params["trusted"].bool_param, params["forced"].bool_param) == (False, True)
    finally:
        requests.post(f"{server.url}/v1/models/{old}/activate", headers=auth, json={},
                      timeout=10)


@pytest.fixture
def modelless(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """gunicorn with gRPC on an empty model directory (alive, not ready)."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    env = {"RNNADD_MODEL_DIR": str(model_dir), "RNNADD_RELOAD_INTERVAL": "0.1",
           "RNNADD_GRPC_BIND": "127.0.0.1:0", "WEB_CONCURRENCY": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    proc, _url, log = servers.start_gunicorn(tmp_path, env=env, ready_path="/healthz")
    target = servers.grpc_target(log)
    assert target is not None
    try:
        yield proc, target, model_dir
    finally:
        servers.stop_process(proc)


def test_health_watch_follows_readiness(modelless: tuple[subprocess.Popen, str, Path]) -> None:
    _proc, target, model_dir = modelless
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the worker's server starts after the master's line
        try:
            status = check(target)
            break
        except grpc.RpcError:
            time.sleep(0.1)
    assert status == NOT_SERVING
    assert check(target, "readiness") == NOT_SERVING and check(target, "liveness") == SERVING
    client = grpcclient.InferenceServerClient(target)
    assert client.is_server_live() and not client.is_server_ready()
    with pytest.raises(InferenceServerException) as info:
        client.infer("rnnadd", pair(1, 2))
    assert info.value.status() == "StatusCode.UNAVAILABLE", info.value.message()
    with grpc.insecure_channel(target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
        assert next(stream).status == NOT_SERVING
        servers.seed_models(model_dir)
        assert next(stream).status == SERVING
        stream.cancel()
    assert client.is_server_ready() and client.is_model_ready("rnnadd")
    client.close()


def test_sigterm_drains_grpc_and_says_not_serving(tmp_path: Path) -> None:
    running = servers.start_server(tmp_path, workers=1, grpc=True,
                                   env={"RNNADD_GRACEFUL_TIMEOUT": "5"})
    statuses: list[int] = []
    with grpc.insecure_channel(running.grpc) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
        statuses.append(next(stream).status)
        def follow() -> None:
            with contextlib.suppress(grpc.RpcError):  # the stream ends when the server does
                statuses.extend(answer.status for answer in stream)

        watcher = threading.Thread(target=follow)
        watcher.start()
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(15) == 0
        watcher.join(10)
    assert statuses[0] == SERVING and NOT_SERVING in statuses[1:]
    assert time.monotonic() - started < 10
    assert "Shutting down: Master" in running.log_text()


def test_empty_bind_turns_grpc_off(tmp_path: Path) -> None:
    with servers.running_server(tmp_path, workers=1) as running:
        assert running.grpc is None
        assert "gRPC listening" not in running.log_text()


def test_a_port_taken_by_another_listener_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        shutil.copytree(servers.BUNDLED_MODELS, tmp_path / "models",
                        ignore=shutil.ignore_patterns("*.tmp"))
        with pytest.raises(RuntimeError) as info:
            servers.start_gunicorn(tmp_path, env={"RNNADD_GRPC_BIND": f"127.0.0.1:{port}",
                                                  "RNNADD_MODEL_DIR": str(tmp_path / "models")},
                                   timeout=20)
    assert f"RNNADD_GRPC_BIND=127.0.0.1:{port}: cannot bind" in str(info.value)


def handled(server: servers.Server, rid: str) -> list[tuple[float, float]]:
    """(start, end) in seconds of each logged call whose request id starts with `rid`."""
    spans = []
    for line in server.log_text().splitlines():
        if f'"request_id": "{rid}' in line:
            entry = json.loads(line)
            end = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            spans.append((end - entry["duration_ms"] / 1000.0, end))
    return spans


@pytest.mark.parametrize("threads", [1, 3])
def test_a_worker_answers_as_many_calls_at_once_as_grpc_threads(tmp_path: Path,
                                                                threads: int) -> None:
    # Calls sent together to one worker: with one thread, each starts after the last ended;
    # with three, they are handled at the same time. All are answered either way.
    running = servers.start_server(tmp_path, workers=1, grpc=True,
                                   env={"RNNADD_GRPC_THREADS": str(threads)})
    try:
        a = np.arange(2000, dtype=np.int64)
        inputs = []
        for name in ("a", "b"):
            tensor = grpcclient.InferInput(name, [len(a)], "INT64")
            tensor.set_data_from_numpy(a)
            inputs.append(tensor)
        client = grpcclient.InferenceServerClient(running.grpc)
        with futures.ThreadPoolExecutor(3) as pool:
            calls = [pool.submit(client.infer, "rnnadd", inputs, client_timeout=30,
                                 parameters={"bits": 200}, headers={"x-request-id": f"t{i}"})
                     for i in range(3)]
            answers = [call.result() for call in calls]
        assert all((answer.as_numpy("sum") == 2 * a).all() for answer in answers)
        spans = sorted(handled(running, "t"))
        assert len(spans) == 3
        overlaps = [later[0] < earlier[1] - 0.002 for earlier, later in pairwise(spans)]
        assert any(overlaps) == (threads > 1), spans
    finally:
        servers.stop_server(running)
