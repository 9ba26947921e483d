"""Every RNNADD_* setting, its default and its bounds, written once and read once at startup.

The app, the request limits and the gunicorn config all read one frozen `Settings`, so a value
cannot mean one thing to the workers and another to the app.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
MAX_SAFE_BITS = 14_000  # Python refuses int <-> str beyond 4300 digits (about 14,284 bits)


def _flag(value: str) -> bool:
    """Environment switches: 1/true/yes/on, case-insensitive; anything else is off."""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _token(value: str) -> str | None:
    """An empty token means none (admin endpoints stay off)."""
    return value.strip() or None


def _addresses(value: str) -> str:
    """Comma-separated IP addresses or networks (or *), as gunicorn's forwarded_allow_ips."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for entry in entries:
        if entry != "*":
            ipaddress.ip_network(entry)  # a ValueError names the bad entry
    return ",".join(entries)


def _gate_bits() -> int:
    """The promotion gate's narrowest width; imported late, as the proxy image reads this file
    without the training package (or numpy)."""
    from training.gate import EXHAUSTIVE_BITS

    return EXHAUSTIVE_BITS


def _setting(env: str, default: Any, help: str, parse: Callable[[str], Any] | None = None,
             low: float | Callable[[], int] | None = None, high: float | None = None) -> Any:
    """A dataclass field that knows its variable, parser, bounds and meaning."""
    meta = {"env": env, "parse": parse or type(default), "low": low, "high": high, "help": help}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """The service's configuration; `Settings.from_env()` is the one way to read it."""

    model_dir: str = _setting("RNNADD_MODEL_DIR", str(DEFAULT_MODEL_DIR),
                              "directory of model versions, CURRENT and job records")
    # No narrower than the promotion gate checks: every retrain would fail.
    max_bits: int = _setting("RNNADD_MAX_BITS", 4096, "widest sum answered (bits)",
                             low=_gate_bits, high=MAX_SAFE_BITS)
    max_body: int = _setting("RNNADD_MAX_BODY", 1024 * 1024, "largest request body (bytes)",
                             low=64, high=1 << 30)
    max_batch: int = _setting("RNNADD_MAX_BATCH", 10_000, "most pairs in one request",
                              low=1, high=1_000_000)
    max_work: int = _setting("RNNADD_MAX_WORK", 2_560_000,
                             "most pairs x bits x (hidden units / 16)^2 in one request "
                             "(bounds CPU time)",
                             low=MAX_SAFE_BITS, high=10**9)
    admin_token: str | None = _setting("RNNADD_ADMIN_TOKEN", None,
                                       "bearer token for admin endpoints; unset turns them off",
                                       parse=_token)
    reload_interval: float = _setting("RNNADD_RELOAD_INTERVAL", 1.0,
                                      "seconds between checks of CURRENT in each worker",
                                      low=0.0, high=3600.0)
    job_history: int = _setting("RNNADD_JOB_HISTORY", 100,
                                "finished retrain jobs kept (older records are pruned)",
                                low=1, high=100_000)
    model_history: int = _setting("RNNADD_MODEL_HISTORY", 100,
                                  "model versions kept after a retrain saves one (newest, plus "
                                  "CURRENT, LAST_GOOD and pinned)", low=1, high=100_000)
    access_log: bool = _setting("RNNADD_ACCESS_LOG", True, "one JSON line per request",
                                parse=_flag)
    fast_path: bool = _setting("RNNADD_FAST_PATH", True,
                               "answer plain POST /v1/predict without Flask's request objects",
                               parse=_flag)
    bind: str = _setting("RNNADD_BIND", "127.0.0.1:8000", "gunicorn listen address")
    grpc_bind: str = _setting("RNNADD_GRPC_BIND", "127.0.0.1:8081",
                              "gRPC listen address (Open Inference Protocol); empty turns it off")
    grpc_threads: int = _setting("RNNADD_GRPC_THREADS", 3,
                                 "threads per worker answering gRPC calls (more wait their turn)",
                                 low=1, high=256)
    workers: int = _setting("WEB_CONCURRENCY", 2, "gunicorn worker processes", low=1, high=256)
    worker_class: str = _setting("RNNADD_WORKER_CLASS", "gthread", "gunicorn worker class")
    threads: int = _setting("RNNADD_THREADS", 4, "threads per gthread worker", low=1, high=256)
    timeout: int = _setting("RNNADD_TIMEOUT", 30, "seconds before a stuck worker is replaced",
                            low=1, high=3600)
    graceful_timeout: int = _setting("RNNADD_GRACEFUL_TIMEOUT", 20,
                                     "seconds to finish requests on SIGTERM", low=1, high=3600)
    keepalive: int = _setting("RNNADD_KEEPALIVE", 5, "seconds an idle connection is kept",
                              low=0, high=3600)
    log_level: str = _setting("RNNADD_LOG_LEVEL", "info", "gunicorn log level")
    control_socket: str = _setting("RNNADD_CONTROL_SOCKET", "",
                                   "gunicorn control socket path; empty turns it off")
    forwarded_allow_ips: str = _setting(
        "RNNADD_FORWARDED_ALLOW_IPS", "",
        "proxies (IPs or networks, comma-separated) whose SCRIPT_NAME and X-Forwarded-* "
        "headers gunicorn honours; empty: none", parse=_addresses)

    def __post_init__(self) -> None:
        """Refuse out-of-range values at startup rather than misbehave at request time."""
        for f in fields(self):
            value, low, high = getattr(self, f.name), f.metadata["low"], f.metadata["high"]
            if low is None:
                continue
            low = low() if callable(low) else low
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not low <= value <= high:
                raise ValueError(f"{f.metadata['env']} ({f.name}) must be within {low:g}..{high:g}"
                                 f", got {value!r}")
        if self.grpc_bind and grpc_address(self.grpc_bind) is None:
            raise ValueError(f"RNNADD_GRPC_BIND must be host:port (port 0-65535), or empty, got "
                             f"{self.grpc_bind!r}")
        try:
            _addresses(self.forwarded_allow_ips)
        except ValueError as exc:
            raise ValueError(f"RNNADD_FORWARDED_ALLOW_IPS (forwarded_allow_ips): {exc}") from exc
        token = self.admin_token
        if token is not None and not (token.isascii() and token.isprintable()):
            raise ValueError("RNNADD_ADMIN_TOKEN must be printable ASCII (clients send it in an "
                             "HTTP header, where other characters are not portable)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read every variable, failing with its name when one is bad; overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            parse = f.metadata["parse"]
            if raw is None or (raw.strip() == "" and parse is not _token):
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ValueError(f"{f.metadata['env']}={raw!r} is not valid: {exc}") from exc
        settings = cls(**values)
        return settings.with_overrides(overrides or {})

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with some fields replaced; keys may be field names in either case."""
        names = {f.name for f in fields(self)}
        chosen = {k.lower(): v for k, v in overrides.items() if k.lower() in names}
        return replace(self, **chosen) if chosen else self

    def as_config(self) -> dict[str, Any]:
        """The settings as Flask config keys (MAX_BITS, ...)."""
        return {f.name.upper(): getattr(self, f.name) for f in fields(self)}

    @property
    def max_input_bits(self) -> int:
        """Inputs may be one bit narrower than the widest sum, so every sum fits."""
        return self.max_bits - 1

    @property
    def max_digits(self) -> int:
        """Decimal digits of the largest input, to refuse long strings before converting."""
        return len(str(2**self.max_bits))


def grpc_address(bind: str) -> tuple[str, int] | None:
    """(host, port) of a host:port or [v6]:port address; None when it is not one."""
    host, sep, port = bind.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def describe() -> list[tuple[str, Any, str]]:
    """(variable, default, meaning) of every setting, for documentation and --help."""
    return [(f.metadata["env"], f.default, f.metadata["help"]) for f in fields(Settings)]
