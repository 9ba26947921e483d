"""Bounded HTTP load on 127.0.0.1 for benchmarks.http: wrk when installed, Python clients always.

Both send one fixed POST body over a fixed number of connections for a fixed time, either
keeping connections alive (what other services do) or asking the server to close each one.
h2load (nghttp2's load generator) does the same for one gRPC call over HTTP/2.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
%s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "seconds": %%.6f, "p50": %%.6f, ' ..
    '"p99": %%.6f, "errors": %%d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Result:
    """One load phase: answered requests, wall time, latency percentiles, failures."""

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: int
    server_cpu: float = 0.0  # CPU seconds the server (master and workers) used meanwhile
    client_cpu: float = 0.0  # CPU seconds the client processes used (Python clients only)

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def _busy_ticks() -> int:
    """Clock ticks every CPU spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4]


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks used: utime + stime) for every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_ticks(root: int) -> int:
    """CPU ticks used by a process and its live descendants (e.g. a gunicorn master)."""
    table = _processes()
    tree, total = {root}, table.get(root, (0, 0))[1]
    for pid in sorted(table):  # children have larger pids than parents, nearly always
        if table[pid][0] in tree:
            tree.add(pid)
            total += table[pid][1]
    return total


def _own_ticks() -> int:
    """Ticks this process, its waited children and its live descendants have used."""
    own = os.times()
    waited = own.user + own.system + own.children_user + own.children_system
    this = os.getpid()
    return tree_ticks(this) - _processes()[this][1] + round(waited * TICKS)


class OtherLoad:
    """Share of the machine's CPUs that processes outside this run used, between two reads."""

    def __init__(self) -> None:
        self.start = (_busy_ticks(), _own_ticks(), time.monotonic())

    def share(self) -> float:
        """Other processes' CPU time over the interval, as a share of all CPUs."""
        busy, own, now = _busy_ticks(), _own_ticks(), time.monotonic()
        capacity = (now - self.start[2]) * TICKS * (os.cpu_count() or 1)
        other = (busy - self.start[0]) - (own - self.start[1])
        return max(0.0, other / capacity) if capacity else 0.0


def merge(parts: list[Result]) -> Result:
    """Parts of one phase as one: rates add up, p50 weighted by requests, the worst p99."""
    requests = sum(p.requests for p in parts)
    return Result(
        requests=requests,
        seconds=sum(p.seconds for p in parts),
        p50=sum(p.p50 * p.requests for p in parts) / requests if requests else 0.0,
        p99=max(p.p99 for p in parts),
        errors=sum(p.errors for p in parts),
        server_cpu=sum(p.server_cpu for p in parts),
    )


def wrk_available() -> str | None:
    """wrk's version line, or None when it is not installed."""
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def wrk(url: str, body: str, *, close: bool, seconds: int, threads: int = 2,
        connections: int = 16) -> Result:
    """Run wrk with a Lua script for the POST body; figures come from its done() hook."""
    header = 'wrk.headers["Connection"] = "close"' if close else ""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT % (body, header))
        script.flush()
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
             "-s", script.name, url],
            capture_output=True, text=True, timeout=seconds + 30,
        )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return Result(**json.loads(line[len("WRK_JSON "):]))
    raise RuntimeError(f"wrk gave no figures:\n{out.stdout}\n{out.stderr}")


def h2load_available() -> str | None:
    """h2load's version line, or None when it is not installed (Debian: nghttp2-client)."""
    if shutil.which("h2load") is None:
        return None
    out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def h2load_grpc(target: str, method: str, message: bytes, *, seconds: int,
                connections: int = 16, streams: int = 1) -> Result:
    """One gRPC call sent over and over by h2load: `connections` x `streams` calls in flight.

    The message goes out framed as gRPC frames it (a 0 flag byte, then its length, big-endian).
    h2load counts HTTP 200 answers; a gRPC status travels in trailers it does not read, so
    callers count OK calls on the server (its metrics) to know every call succeeded.
    """
    with tempfile.TemporaryDirectory() as tmp:
        body, log = os.path.join(tmp, "call.bin"), os.path.join(tmp, "log.tsv")
        with open(body, "wb") as out:
            out.write(b"\0" + struct.pack(">I", len(message)) + message)
        out = subprocess.run(
            ["h2load", "-D", str(seconds), "-c", str(connections), "-m", str(streams), "-t", "1",
             "-T", "5", "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
             "--log-file", log, f"http://{target}{method}"],
            capture_output=True, text=True, timeout=seconds + 30,
        )
        # One line per finished call: start (microseconds), HTTP status, duration (microseconds).
        with open(log) as lines:
            rows = [line.split() for line in lines if line.strip()]
    done = re.search(r"finished in ([\d.]+)(m?s)", out.stdout)
    if done is None:
        raise RuntimeError(f"h2load gave no figures:\n{out.stdout}\n{out.stderr}")
    wall = float(done.group(1)) / (1000.0 if done.group(2) == "ms" else 1.0)
    latencies = sorted(int(row[2]) / 1e6 for row in rows if row[1] == "200")
    return Result(len(latencies), wall, percentile(latencies, 50), percentile(latencies, 99),
                  len(rows) - len(latencies))


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def _client(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
            stop: float, latencies: list[float], errors: list[int]) -> None:
    """One connection sending requests until `stop`; http.client reconnects after a close."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    clock = time.perf_counter
    failed = 0
    try:
        while time.time() < stop:
            began = clock()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                failed += 1
                continue
            if response.status == 200:
                latencies.append(clock() - began)
            else:
                failed += 1
    finally:
        conn.close()
        errors.append(failed)


def _process(host: str, port: int, path: str, body: bytes, close: bool, threads: int,
             start: float, seconds: float) -> tuple[list[float], int, float, float]:
    """A client process: `threads` connections from `start` for `seconds` (wall clock); its
    latencies, failures, wall time and own CPU seconds."""
    headers = {"Content-Type": "application/json"}
    if close:
        headers["Connection"] = "close"
    latencies: list[float] = []
    errors: list[int] = []
    time.sleep(max(0.0, start - time.time()))
    began, cpu = time.perf_counter(), time.process_time()
    workers = [
        threading.Thread(target=_client, args=(host, port, path, body, headers,
                                               start + seconds, latencies, errors))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, sum(errors), time.perf_counter() - began, time.process_time() - cpu


def python_load(host: str, port: int, path: str, body: bytes, *, close: bool, seconds: float,
                processes: int = 2, threads: int = 8) -> Result:
    """Processes x threads persistent http.client connections (processes sidestep the GIL)."""
    context = multiprocessing.get_context("spawn")
    start = time.time() + 0.5  # every process is up before the clock starts
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [pool.submit(_process, host, port, path, body, close, threads, start, seconds)
                   for _ in range(processes)]
        parts = [future.result(timeout=seconds + 60) for future in futures]
    latencies = sorted(value for part in parts for value in part[0])
    return Result(
        requests=len(latencies),
        seconds=max(part[2] for part in parts),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        errors=sum(part[1] for part in parts),
        client_cpu=sum(part[3] for part in parts),
    )

