"""What holding whole request bodies in the proxy costs: `python -m benchmarks.proxy_buffering`.

Three compose stacks are up at once, HAProxy in front of 3 api replicas each, differing only in
how the proxy holds bodies: "16 KiB, one process", HAProxy's default buffer and this project's
setting before, where a body larger than that is streamed to a replica as it arrives; "whole
body, one process", the same with tune.bufsize = RNNADD_MAX_BODY + 32 KiB, where the proxy holds
any body until it is complete but copies a whole 1 MiB buffer per request for L7 retries; and the
shipped configuration, 16 KiB buffers plus a body holder (holder.cfg, buffers of RNNADD_MAX_BODY
+ 32 KiB) for bodies that do not fit in one. The two references are the shipped haproxy.cfg with
the holder left out (and the buffer raised), mounted over the image's. For each:

- memory: the resident size of the proxy's processes idle, then with N connections each holding
  an unfinished request (headers and 17.6 KB, 190 KB or 1 MiB - 1 byte of a larger body), as kB
  per connection over idle (each reading within the 5 s the proxy gives a request);
- throughput: 10,000-pair /v1/predict/batch (about 110 KB each) and single pairs, wrk over
  keep-alive connections, interleaved rounds, medians;
- slow uploads: the attack of tests/test_container.py (48 uploads of 200 KB: headers and
  17.6 KB at once, then 8 bytes every 2 s, each replaced when the proxy ends it) while /healthz
  and /v1/predict are probed through the proxy every 0.2 s with a 1 s timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import load
from benchmarks.proxy import (
    PAIR,
    _compose,
    _get,
    _run,
    batch_body,
    build_images,
    check,
    measure,
    stack,
)
from tests.test_container import SLOW_UPLOADS

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy" / "haproxy.cfg"
SETUPS = ("16 KiB, one process", "whole body, one process", "holder (shipped)")
HOLD = {"headers + 17.6 KB": 17_600, "190 KB": 190_000, "1 MiB - 1 B": 1024 * 1024 - 1}


def reference_config(name: str, directory: Path) -> Path | None:
    """The shipped haproxy.cfg without the holder (and with whole-body buffers); None: shipped."""
    if name == SETUPS[2]:
        return None
    text = CONFIG.read_text()
    for line in ("    use_backend holder if large_body\n",
                 "program holder\n    command haproxy -db -f /etc/haproxy/holder.cfg\n"):
        if line not in text:
            raise SystemExit(f"{CONFIG} has no {line.strip()!r} to leave out")
        text = text.replace(line, "")
    if name == SETUPS[1]:
        buffer = '    tune.bufsize "${RNNADD_PROXY_BUFSIZE}"\n'
        text = text.replace("\nglobal\n", "\nglobal\n" + buffer, 1)
    path = directory / f"haproxy-{SETUPS.index(name)}.cfg"
    path.write_text(text)
    path.chmod(0o644)
    return path
def proxy_rss_kb(project: str, compose: list[str]) -> int:
    """Resident kB of every haproxy process in the project's proxy container."""
    (cid,) = _run([*compose, "-p", project, "ps", "-q", "proxy"]).split()
    code = ("import glob, re\n"
            "total = 0\n"
            "for path in glob.glob('/proc/[0-9]*/status'):\n"
            "    text = open(path).read()\n"
            "    if re.search(r'^Name:\\s+haproxy$', text, re.M):\n"
            "        total += int(re.search(r'^VmRSS:\\s+(\\d+)', text, re.M).group(1))\n"
            "print(total)\n")
    return int(_run(["docker", "exec", cid, "python3", "-c", code]).strip())


def held_connections(port: int, count: int, body_bytes: int) -> list[socket.socket]:
    """count connections, each having sent its headers and body_bytes of a larger body."""
    size = max(body_bytes + 1, 200_000)
    head = (f"POST /v1/predict/batch HTTP/1.1\r\nHost: rnnadd\r\nContent-Type: application/json"
            f"\r\nContent-Length: {size}\r\n\r\n").encode()
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head + b" " * body_bytes)
        socks.append(sock)
    return socks


def memory(project: str, compose: list[str], port: int, count: int) -> dict[str, float]:
    """kB per held connection over idle, for each size in HOLD."""
    per = {}
    for label, body_bytes in HOLD.items():
        time.sleep(6)  # earlier connections are gone (timeout http-request 5 s)
        idle = proxy_rss_kb(project, compose)
        socks = held_connections(port, count, body_bytes)
        try:
            time.sleep(1)
            held = proxy_rss_kb(project, compose)
        finally:
            for sock in socks:
                sock.close()
        per[label] = (held - idle) / count
        per[f"idle ({label})"] = idle
    return per


def slow_uploads(port: int, seconds: int) -> dict[str, object]:
    """The container test's attack; probes through the proxy: failures and the slowest."""
    attack = subprocess.Popen([sys.executable, "-c", SLOW_UPLOADS, str(port), "48", str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latencies, failures = [], 0
    try:
        assert attack.stdout is not None and attack.stdout.readline().strip() == "open"
        began = time.monotonic()
        while attack.poll() is None and time.monotonic() - began < seconds + 5:
            for path, body in (("/healthz", None), ("/v1/predict", json.dumps(PAIR).encode())):
                started = time.monotonic()
                status, _ = _get("127.0.0.1", port, path, body, timeout=1.0)
                latencies.append(time.monotonic() - started)
                failures += status != 200
            time.sleep(0.2)
        out, _ = attack.communicate(timeout=30)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait(10)
    summary = json.loads(out)
    return {"probes": len(latencies), "failed": failures, "slowest_ms": max(latencies) * 1000,
            "uploads": summary["opened"], "answers": summary["answers"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_buffering",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per setup, pattern and round")
    parser.add_argument("--connections", type=int, default=100, help="held for the memory test")
    parser.add_argument("--attack-seconds", type=int, default=30)
    parser.add_argument("--no-build", action="store_true", help="use the built rnnadd:bench "
                        "and rnnadd-proxy:bench images")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    compose = _compose()
    if not args.no_build:
        build_images(compose)
    batch = batch_body()
    patterns = [("10,000 pairs", "/v1/predict/batch", batch, 4),
                ("single pair", "/v1/predict", json.dumps(PAIR).encode(), 16)]
    with contextlib.ExitStack() as stacks:
        configs = Path(stacks.enter_context(tempfile.TemporaryDirectory(prefix="rnnadd-bench-")))
        configs.chmod(0o755)  # the proxy runs as haproxy, not as this user
        setups = {}
        for name in SETUPS:
            setup, project = stacks.enter_context(
                stack(3, compose, proxy_config=reference_config(name, configs)))
            check(setup, batch)
            setups[name] = (setup, project)
        mem = {name: memory(project, compose, setup.port, args.connections)
               for name, (setup, project) in setups.items()}
        figures: dict[tuple[str, str], list[load.Result]] = {}
        for round_no in range(args.rounds):
            for label, path, body, connections in patterns:
                for name, (setup, _) in setups.items():
                    result = measure(setup, path, body, args.seconds, connections)
                    figures.setdefault((label, name), []).append(result)
                    print(f"round {round_no + 1} {label:12} {name:24} {result.rate:8.1f} req/s "
                          f"errors {result.errors}", flush=True)
        attacks = {}
        for name, (setup, _) in setups.items():
            time.sleep(6)
            attacks[name] = slow_uploads(setup.port, args.attack_seconds)
            print(f"slow uploads {name}: {attacks[name]}", flush=True)
    client = load.wrk_available() or "Python http.client"
    print(f"\n{platform.platform()}, {os.cpu_count()} CPUs, client {client}; HAProxy in front "
          f"of 3 replicas (2 gunicorn workers x 4 threads) in each setup; medians of "
          f"{args.rounds} rounds x {args.seconds} s\n")
    names = list(SETUPS)
    print(f"{'':34}" + "".join(f"{n:>26}" for n in names))
    print(f"{'proxy RSS idle (kB)':34}" + "".join(
        f"{mem[n]['idle (headers + 17.6 KB)']:>26.0f}" for n in names))
    for label in HOLD:
        print(f"{'kB per connection holding ' + label:34}" + "".join(
            f"{mem[n][label]:>26.1f}" for n in names))
    for label, _, _, _ in patterns:
        rates = [statistics.median(r.rate for r in figures[(label, n)]) for n in names]
        errors = [sum(r.errors for r in figures[(label, n)]) for n in names]
        print(f"{label + ' req/s (errors)':34}" + "".join(
            f"{f'{rate:.1f} ({err})':>26}" for rate, err in zip(rates, errors, strict=True)))
        print(f"{label + ' ratio':34}" + "".join(f"{rate / rates[0]:>26.2f}" for rate in rates))
    for key, title in (("failed", "slow uploads: failed probes"),
                       ("probes", "slow uploads: probes"),
                       ("slowest_ms", "slow uploads: slowest probe ms")):
        print(f"{title:34}" + "".join(f"{attacks[n][key]:>26.0f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
