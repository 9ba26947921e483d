"""gRPC against /v2 REST on the same service, and against MLServer 1.7's gRPC, side by side:

    python -m benchmarks.grpc --mlserver .venv-mlserver/bin/mlserver    (make bench-grpc)

One run starts the service (gunicorn, 2 workers, REST and gRPC from the same workers) and
MLServer (its own venv, requirements-mlserver.txt) serving the same numpy model through
benchmarks/mlserver_runtime.py, both on 127.0.0.1. Every answer is checked before anything is
timed. Then, in rounds that visit every target in turn (reversed every other round), for a
fixed time each:
- single pairs under concurrent load (processes x threads, one connection each): gRPC with
  raw_input_contents to the service and to MLServer, and /v2 REST JSON to the service, from
  Python clients (grpcio, http.client) on the same cores;
- the same calls from load generators written in C, h2load (nghttp2-client) for gRPC and wrk
  for REST, as many connections, one call at a time each: they leave the cores to the servers,
  so the figures are the servers' own (skipped, and said so, where they are not installed).
  h2load does not read gRPC statuses (trailers), so every phase checks on the server's metrics
  that it answered OK as many calls as h2load counted, and nothing else;
- the decoding of one single-pair ModelInferRequest in this process, direct (the usual call)
  against the general mapping every call can take, the figure with and without the shortcut;
- 10,000-pair batches, one request at a time: gRPC raw, the REST binary tensor extension and
  REST JSON (output `sum` only), and Predictor.add in this process on the same inputs.
The run ends by itself; every server is ended by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import timeit
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import load

HOST = "127.0.0.1"
INFER_RPC = "/inference.GRPCInferenceService/ModelInfer"
INFER_PATH = "/v2/models/rnnadd/infer"
BATCH = 10_000
TARGETS = {"single_vs_rest_json": 1.5, "single_vs_mlserver": 3.0,
           "single_vs_rest_json (h2load/wrk)": 1.5, "single_vs_mlserver (h2load)": 3.0,
           "batch_vs_rest_binary": 1.0, "batch_vs_in_process": 0.4}
OUR_OK = ("rnnadd_http_requests_total", {"endpoint": INFER_RPC, "protocol": "grpc"}, "status")
THEIR_OK = ("grpc_server_handled_total", {"grpc_method": "ModelInfer"}, "grpc_code")


# --- requests -----------------------------------------------------------------------------------

def grpc_message(a: list[int], b: list[int], outputs: tuple[str, ...] = ()) -> Any:
    """A ModelInferRequest with raw INT64 inputs, as tritonclient.grpc sends it."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="rnnadd")
    for name, values in (("a", a), ("b", b)):
        request.inputs.add(name=name, datatype="INT64", shape=[len(values)])
        request.raw_input_contents.append(struct.pack(f"<{len(values)}q", *values))
    for name in outputs:
        request.outputs.add(name=name)
    return request


def grpc_request(a: list[int], b: list[int], outputs: tuple[str, ...] = ()) -> bytes:
    """The same, serialized."""
    return grpc_message(a, b, outputs).SerializeToString()


def grpc_sums(answer: bytes) -> list[int]:
    """The `sum` output of a serialized ModelInferResponse (raw or contents)."""
    from tritonclient.grpc import service_pb2 as pb

    response = pb.ModelInferResponse.FromString(answer)
    index = [o.name for o in response.outputs].index("sum")
    if response.raw_output_contents:
        raw = response.raw_output_contents[index]
        return list(struct.unpack(f"<{len(raw) // 8}q", raw))
    return list(response.outputs[index].contents.int64_contents)


def json_request(a: list[int], b: list[int], outputs: tuple[str, ...] = ()) -> bytes:
    """A /v2 REST JSON body."""
    body: dict = {"inputs": [{"name": n, "shape": [len(v)], "datatype": "INT64", "data": v}
                             for n, v in (("a", a), ("b", b))]}
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(body).encode()


def binary_request(a: list[int], b: list[int]) -> tuple[bytes, int]:
    """A /v2 REST body of the binary tensor extension asking for `sum` as binary data."""
    raw = [struct.pack(f"<{len(v)}q", *v) for v in (a, b)]
    header = json.dumps({
        "inputs": [{"name": n, "shape": [len(v)], "datatype": "INT64",
                    "parameters": {"binary_data_size": len(r)}}
                   for (n, v), r in zip((("a", a), ("b", b)), raw, strict=True)],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}],
    }).encode()
    return header + b"".join(raw), len(header)


# --- servers ------------------------------------------------------------------------------------

@dataclass
class MLServer:
    """An MLServer process we started, and its gRPC address."""

    proc: subprocess.Popen
    grpc: str
    log: Path
    metrics: str  # its Prometheus endpoint, where it counts calls by gRPC code


@contextlib.contextmanager
def mlserver(executable: str, tmp: Path, model_dir: Path) -> Iterator[MLServer]:
    """MLServer serving the service's model through benchmarks.mlserver_runtime on 127.0.0.1.

    MLServer takes fixed ports, so free ones are picked just before it starts.
    """
    from tests import servers

    folder = tmp / "mlserver"
    (folder / "rnnadd").mkdir(parents=True)
    ports = [servers.free_port() for _ in range(3)]
    settings = {"debug": False, "host": HOST, "http_port": ports[0], "grpc_port": ports[1],
                "metrics_port": ports[2], "parallel_workers": 0}
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {"name": "rnnadd", "implementation": "benchmarks.mlserver_runtime.RnnAdd",
             "parameters": {"uri": str(model_dir)}}
    (folder / "rnnadd" / "model-settings.json").write_text(json.dumps(model))
    log = tmp / "mlserver.log"
    env = {**os.environ, "PYTHONPATH": str(servers.ROOT), "OPENBLAS_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        command = [os.path.abspath(executable), "start", str(folder)]  # it runs in `folder`
        proc = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    running = MLServer(proc, f"{HOST}:{ports[1]}", log, f"http://{HOST}:{ports[2]}/metrics")
    try:
        wait_model_ready(running.grpc, proc, log)
        yield running
    finally:
        servers.stop_process(proc)


def wait_model_ready(target: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Until ModelReady("rnnadd") is true over gRPC."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            if stub.ModelReady(pb.ModelReadyRequest(name="rnnadd"), timeout=2).ready:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{target} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


# --- load ---------------------------------------------------------------------------------------

def _grpc_thread(target: str, body: bytes, stop: float, latencies: list[float],
                 errors: list[int]) -> None:
    """One channel (its own connection) sending the same call until `stop`."""
    import grpc

    failed = 0
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = ch.unary_unary(INFER_RPC)
        clock = time.perf_counter
        while time.time() < stop:
            began = clock()
            try:
                call(body, timeout=10)
            except grpc.RpcError:
                failed += 1
                continue
            latencies.append(clock() - began)
    errors.append(failed)


def _grpc_process(target: str, body: bytes, threads: int, start: float,
                  seconds: float) -> tuple[list[float], int, float, float]:
    """A client process: `threads` channels from `start` for `seconds`; as load._process."""
    latencies: list[float] = []
    errors: list[int] = []
    time.sleep(max(0.0, start - time.time()))
    began, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=_grpc_thread,
                                args=(target, body, start + seconds, latencies, errors))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, sum(errors), time.perf_counter() - began, time.process_time() - cpu


def grpc_load(target: str, body: bytes, seconds: float, processes: int,
              threads: int) -> load.Result:
    """Processes x threads gRPC channels, each one call at a time, like load.python_load."""
    context = multiprocessing.get_context("spawn")
    start = time.time() + 1.0  # every process is up (and has imported grpc) before the clock
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [pool.submit(_grpc_process, target, body, threads, start, seconds)
                   for _ in range(processes)]
        parts = [future.result(timeout=seconds + 60) for future in futures]
    latencies = sorted(v for part in parts for v in part[0])
    return load.Result(len(latencies), max(p[2] for p in parts), load.percentile(latencies, 50),
                       load.percentile(latencies, 99), sum(p[1] for p in parts),
                       client_cpu=sum(p[3] for p in parts))


def sequential(seconds: float, call: Callable[[], None]) -> float:
    """Calls per second of `call`, one at a time, for `seconds`."""
    call()  # warm: connections, caches
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        call()
        count += 1
    return count / (time.perf_counter() - began)


class Rest:
    """One keep-alive HTTP connection to the service, checking every answer's status."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        self.conn.request("POST", INFER_PATH, body, headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST answered {response.status}: {data[:300]!r}")
        return data, dict(response.getheaders())


def rest_binary_sums(data: bytes, headers: dict[str, str]) -> list[int]:
    """`sum` from a binary tensor extension answer."""
    size = int(headers["Inference-Header-Content-Length"])
    raw = data[size:]
    return list(struct.unpack(f"<{len(raw) // 8}q", raw))


def calls_by_code(url: str, counter: tuple[str, dict[str, str], str]) -> dict[str, float]:
    """A Prometheus counter's values by its code label, over the samples matching the others."""
    name, wanted, code_label = counter
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    totals: dict[str, float] = {}
    for match in re.finditer(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
        if all(labels.get(k) == v for k, v in wanted.items()):
            code = labels.get(code_label, "")
            totals[code] = totals.get(code, 0.0) + float(match.group(2))
    return totals


def checked_h2load(target: str, body: bytes, seconds: int, connections: int, pid: int,
                   metrics: str, counter: tuple[str, dict[str, str], str]) -> load.Result:
    """An h2load phase whose every counted call the server answered OK (its metrics say)."""
    before = calls_by_code(metrics, counter)
    result = with_cpu(pid, lambda: load.h2load_grpc(target, INFER_RPC, body, seconds=seconds,
                                                    connections=connections))
    after = calls_by_code(metrics, counter)
    delta = {code: after.get(code, 0.0) - before.get(code, 0.0) for code in after}
    ok = delta.pop("OK", 0.0)
    if any(delta.values()) or ok < result.requests or result.errors:
        raise RuntimeError(f"{target}: h2load counted {result.requests} calls "
                           f"({result.errors} not HTTP 200); the server answered OK {ok:.0f}, "
                           f"and {delta}")
    return result


def decode_micros(message: bytes, max_batch: int, max_digits: int) -> dict[str, float]:
    """Microseconds to decode one serialized call: direct, and the general mapping to REST's."""
    from tritonclient.grpc import service_pb2 as pb

    from service import oip
    from service.grpc_codec import common_request, infer_header

    request = pb.ModelInferRequest.FromString(message)

    def general() -> oip.InferRequest:
        header, binary = infer_header(request)
        return oip.parse_infer_header(header, binary, max_batch, max_digits, binary_output=True)

    if common_request(request, max_batch) != general():
        raise RuntimeError("the direct decoding differs from the general one")
    return {name: 1e6 * timeit.timeit(call, number=20_000) / 20_000
            for name, call in (("direct", lambda: common_request(request, max_batch)),
                               ("general", general))}


# --- the run ------------------------------------------------------------------------------------

def with_cpu(pid: int, run: Callable[[], load.Result]) -> load.Result:
    """A load phase, with the CPU seconds the server's process tree used meanwhile."""
    before = load.tree_ticks(pid)
    result = run()
    return dataclasses.replace(result, server_cpu=(load.tree_ticks(pid) - before) / load.TICKS)


def rounds(count: int, phases: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Each phase once per round, the order reversed every other round."""
    names, results = list(phases), {name: [] for name in phases}
    for index in range(count):
        for name in names if index % 2 == 0 else names[::-1]:
            results[name].append(phases[name]())
            value = results[name][-1]
            print(f"  round {index + 1} {name}: {getattr(value, 'rate', value):,.0f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlserver", required=True, help="path of MLServer 1.7's executable")
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2, help="client processes (single)")
    parser.add_argument("--threads", type=int, default=8, help="connections per process")
    args = parser.parse_args()
    mlserver_version = subprocess.run([args.mlserver, "--version"], capture_output=True,
                                      text=True, timeout=60).stdout.strip()

    import grpc
    from threadpoolctl import threadpool_info, threadpool_limits

    from tests import servers
    from training.predictor import Predictor
    from training.store import ModelStore

    rng = random.Random(0)
    a = [rng.randrange(2**30) for _ in range(BATCH)]
    b = [rng.randrange(2**30) for _ in range(BATCH)]
    expected = [x + y for x, y in zip(a, b, strict=True)]
    single_grpc = grpc_request([100], [27])
    single_json = json_request([100], [27])
    batch_grpc = grpc_request(a, b, ("sum",))
    batch_json = json_request(a, b, ("sum",))
    batch_binary, header_length = binary_request(a, b)
    binary_headers = {"Content-Type": "application/octet-stream",
                      "Inference-Header-Content-Length": str(header_length)}
    json_headers = {"Content-Type": "application/json"}

    tmp = Path(tempfile.mkdtemp(prefix="rnnadd-bench-grpc-"))
    service = servers.start_server(tmp / "service", workers=2, grpc=True)
    try:
        with mlserver(args.mlserver, tmp, service.model_dir) as other, \
                grpc.insecure_channel(service.grpc) as ours_channel, \
                grpc.insecure_channel(other.grpc) as their_channel:
            ours = ours_channel.unary_unary(INFER_RPC)
            theirs = their_channel.unary_unary(INFER_RPC)
            rest = Rest(service.port)
            # Nothing is timed before every target gives the right sums.
            for call, body in ((ours, single_grpc), (theirs, single_grpc)):
                assert grpc_sums(call(body, timeout=30)) == [127]
            assert grpc_sums(ours(batch_grpc, timeout=30)) == expected
            assert grpc_sums(theirs(batch_grpc, timeout=60)) == expected
            data, _ = rest.post(single_json, json_headers)
            assert json.loads(data)["outputs"][0]["data"] == [127]
            data, headers = rest.post(batch_binary, binary_headers)
            assert rest_binary_sums(data, headers) == expected
            data, _ = rest.post(batch_json, json_headers)
            answer = json.loads(data)
            assert answer["outputs"][0]["data"] == expected
            bits = answer["parameters"]["bits"]
            store = ModelStore(service.model_dir)
            predictor = Predictor(store.load(store.current()).params)
            assert predictor.add(a, b, bits) == expected

            other_load = load.OtherLoad()
            print(f"single pairs: {args.processes} processes x {args.threads} connections, "
                  f"{args.seconds:g} s per phase, {args.rounds} rounds", flush=True)

            def concurrent(target: str, pid: int) -> Callable[[], load.Result]:
                return lambda: with_cpu(pid, lambda: grpc_load(
                    target, single_grpc, args.seconds, args.processes, args.threads))

            single = rounds(args.rounds, {
                "gRPC, service": concurrent(service.grpc, service.proc.pid),
                "gRPC, MLServer": concurrent(other.grpc, other.proc.pid),
                "REST JSON, service": lambda: with_cpu(service.proc.pid, lambda: load.python_load(
                    HOST, service.port, INFER_PATH, single_json, close=False,
                    seconds=args.seconds, processes=args.processes, threads=args.threads)),
            })
            native: dict[str, list[load.Result]] = {}
            tools = (load.h2load_available(), load.wrk_available())
            if None in tools:
                print("h2load or wrk is not installed (apt install nghttp2-client wrk): the "
                      "load generators' phases are skipped", flush=True)
            else:
                print(f"the same from {tools[0]} and {tools[1]}", flush=True)
                connections, whole = args.processes * args.threads, max(1, round(args.seconds))
                native = rounds(args.rounds, {
                    "gRPC, service": lambda: checked_h2load(
                        service.grpc, single_grpc, whole, connections, service.proc.pid,
                        f"{service.url}/metrics", OUR_OK),
                    "gRPC, MLServer": lambda: checked_h2load(
                        other.grpc, single_grpc, whole, connections, other.proc.pid,
                        other.metrics, THEIR_OK),
                    "REST JSON, service": lambda: with_cpu(service.proc.pid, lambda: load.wrk(
                        f"{service.url}{INFER_PATH}", single_json.decode(), close=False,
                        seconds=whole, threads=1, connections=connections)),
                })
            decoding = decode_micros(single_grpc, BATCH, 1000)
            print(f"10,000-pair batches ({bits} bits), one request at a time", flush=True)

            def in_process() -> float:
                with threadpool_limits(1):  # as gunicorn's workers run (service/gunicorn.conf.py)
                    return BATCH * sequential(args.seconds, lambda: predictor.add(a, b, bits))

            def rest_batch(body: bytes, headers: dict[str, str]) -> Callable[[], float]:
                def phase() -> float:  # a new connection: the last one idled past keep-alive
                    fresh = Rest(service.port)
                    return BATCH * sequential(args.seconds, lambda: fresh.post(body, headers))
                return phase

            batch = rounds(args.rounds, {
                "gRPC raw, service": lambda: BATCH * sequential(
                    args.seconds, lambda: ours(batch_grpc, timeout=30)),
                "REST binary, service": rest_batch(batch_binary, binary_headers),
                "REST JSON, service": rest_batch(batch_json, json_headers),
                "gRPC raw, MLServer": lambda: BATCH * sequential(
                    args.seconds, lambda: theirs(batch_grpc, timeout=60)),
                "Predictor.add, in process": in_process,
            })
            busy = other_load.share()
    finally:
        servers.stop_server(service)
        shutil.rmtree(tmp, ignore_errors=True)
    report(single, native, decoding, batch, busy, mlserver_version, threadpool_info())


def single_table(title: str, results: dict[str, list[load.Result]]) -> dict[str, float]:
    """Print one table of single-pair phases; return medians of calls/s and per server CPU.

    CPU per call is the server's and, for Python clients, the clients' own: on shared cores
    a client that costs more per call leaves less for the server it measures.
    """
    print(f"\n| {title} | calls/s (median) | min-max | calls per server CPU-second | "
          "CPU per call, server / client (ms) |\n| --- | --- | --- | --- | --- |")
    medians = {}
    for name, phases in results.items():
        rates = [r.rate for r in phases]
        per_cpu = statistics.median(r.requests / r.server_cpu for r in phases if r.server_cpu)
        medians[name], medians[f"{name} per CPU"] = statistics.median(rates), per_cpu
        client = statistics.median(1e3 * r.client_cpu / r.requests for r in phases)
        cost = f"{1e3 / per_cpu:.3f} / " + (f"{client:.3f}" if client else "(C tool)")
        print(f"| {name} | {medians[name]:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | "
              f"{per_cpu:,.0f} | {cost} |")
    return medians


def report(single_results: dict[str, list[load.Result]],
           native_results: dict[str, list[load.Result]], decoding: dict[str, float],
           batch: dict[str, list[float]], busy: float, mlserver_version: str,
           blas: list[dict]) -> None:
    """Medians, the ratios the targets name, and what the machine was."""
    med = {f"batch {k}": statistics.median(v) for k, v in batch.items()}
    print(f"\n{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, grpcio {version('grpcio')}, {mlserver_version}; "
          f"other processes used {busy:.0%} of the machine meanwhile")
    print("BLAS: " + "; ".join(f"{i.get('internal_api')} {i.get('version')} "
                               f"{i.get('architecture')} threads={i.get('num_threads')}"
                               for i in blas))
    med.update(single_table("single pairs, Python clients", single_results))
    if native_results:
        native = single_table("single pairs, h2load (gRPC) and wrk (REST)", native_results)
        med.update({f"native {k}": v for k, v in native.items()})
    print(f"\ndecoding one single-pair ModelInferRequest: {decoding['direct']:.1f} us direct, "
          f"{decoding['general']:.1f} us by the general mapping")
    print("\n| 10,000-pair batches, sequential | pairs/s (median) | min-max |\n| --- | --- | --- |")
    for name, values in batch.items():
        print(f"| {name} | {med['batch ' + name]:,.0f} | {min(values):,.0f}-{max(values):,.0f} |")
    ratios = {
        "single_vs_rest_json": med["gRPC, service"] / med["REST JSON, service"],
        "single_vs_mlserver": med["gRPC, service"] / med["gRPC, MLServer"],
        **({"single_vs_rest_json (h2load/wrk)": med["native gRPC, service"]
            / med["native REST JSON, service"],
            "single_vs_mlserver (h2load)": med["native gRPC, service"]
            / med["native gRPC, MLServer"]} if native_results else {}),
        "batch_vs_rest_binary": med["batch gRPC raw, service"] / med["batch REST binary, service"],
        "batch_vs_in_process": med["batch gRPC raw, service"]
        / med["batch Predictor.add, in process"],
    }
    for prefix, rest, theirs in (("", "", ""), ("native ", " (h2load/wrk)", " (h2load)")):
        if f"{prefix}gRPC, service" not in med:
            continue
        ours = med[f"{prefix}gRPC, service per CPU"]
        ratios[f"single_vs_rest_json{rest} per server CPU"] = (
            ours / med[f"{prefix}REST JSON, service per CPU"])
        ratios[f"single_vs_mlserver{theirs} per server CPU"] = (
            ours / med[f"{prefix}gRPC, MLServer per CPU"])
    print("\n| ratio | measured | target |\n| --- | --- | --- |")
    for name, value in ratios.items():
        if name not in TARGETS:
            print(f"| {name} | {value:.2f} | (capacity; for comparison) |")
            continue
        mark = "met" if value >= TARGETS[name] else "NOT met"
        print(f"| {name} | {value:.2f} | >= {TARGETS[name]:g} ({mark}) |")


if __name__ == "__main__":
    main()
