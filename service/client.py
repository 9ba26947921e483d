"""Small HTTP client for the rnnadd service, and a CLI on it (`python -m service.client`).

Retry policy: only connection failures (nothing reached the server, or the connection broke) are
retried, and only on calls that are safe to repeat: every GET, and predict / predict_batch, which
are POSTs of pure functions. retrain and activate change server state and are never retried; a
connection error there surfaces at once as a TransportError so the caller can check jobs/models.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import requests

TERMINAL = frozenset({"succeeded", "failed", "rejected"})
DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """A failed call, carrying the server's problem detail (RFC 9457) when there was one."""

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str | None = None,
        field: str | None = None,
        type: str | None = None,
        body: Any = None,
    ) -> None:
        self.status, self.title, self.detail = status, title, detail
        self.field, self.type, self.body = field, type, body
        super().__init__(self._message())

    def _message(self) -> str:
        """One line an operator can act on."""
        head = f"{self.status} {self.title}" if self.status else self.title
        text = f"{head}: {self.detail}" if self.detail else head
        return f"{text} (field: {self.field})" if self.field else text


class RequestError(ClientError):
    """4xx: the request was wrong (bad value, auth, unknown id, conflict)."""


class ServerError(ClientError):
    """5xx or an unreadable response: the server could not answer."""


class TransportError(ClientError):
    """No HTTP answer at all: connection refused, reset or timed out."""


class JobTimeout(ClientError):
    """retrain(wait=True) gave up before the job reached a terminal status."""


def _error_from(response: requests.Response) -> ClientError:
    """Map a non-2xx response to a typed error, keeping the problem detail fields."""
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = response.text[:500]
    problem = body if isinstance(body, dict) else {}
    cls = RequestError if 400 <= response.status_code < 500 else ServerError
    return cls(
        response.status_code,
        str(problem.get("title") or response.reason or "HTTP error"),
        problem.get("detail") if problem else (body or None),
        problem.get("field"),
        problem.get("type"),
        body,
    )


def _reason(exc: Exception) -> str:
    """The operating system's words (e.g. "Connection refused") rather than urllib3's essay."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found[-1].strip() if found else str(exc)


class Client:
    """Talks JSON to one rnnadd base URL, with a keep-alive session."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.session = requests.Session()

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: Any = None, *, retry: bool) -> Any:
        """One call; connection errors retried with backoff when retry is allowed."""
        headers = {"Accept": "application/json, application/problem+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                response = self.session.request(
                    method, self.base_url + path, json=body, headers=headers, timeout=self.timeout
                )
                break
            except requests.ConnectionError as exc:
                if attempt + 1 >= attempts:
                    detail = f"{method} {self.base_url}{path}: {_reason(exc)}"
                    raise TransportError(None, "connection failed", detail) from exc
                time.sleep(min(1.0, 0.1 * 2**attempt))
            except requests.Timeout as exc:
                detail = f"{method} {self.base_url}{path}: no answer within {self.timeout:g} s"
                raise TransportError(None, "timed out", detail) from exc
            except requests.RequestException as exc:
                raise TransportError(None, "request failed", _reason(exc)) from exc
        if not 200 <= response.status_code < 300:
            raise _error_from(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(response.status_code, "invalid JSON response", str(exc)) from exc

    def predict(self, a: int | str, b: int | str, bits: int | None = None) -> dict:
        """The model's sum of one pair."""
        body: dict[str, Any] = {"a": a, "b": b}
        if bits is not None:
            body["bits"] = bits
        return self._request("POST", "/v1/predict", body, retry=True)

    def predict_batch(
        self, pairs: Iterable[Sequence[int | str]], bits: int | None = None
    ) -> dict:
        """The model's sums of many pairs in one call."""
        body: dict[str, Any] = {"pairs": [list(pair) for pair in pairs]}
        if bits is not None:
            body["bits"] = bits
        return self._request("POST", "/v1/predict/batch", body, retry=True)

    def model(self) -> dict:
        """Record of the active model."""
        return self._request("GET", "/v1/model", retry=True)

    def models(self) -> Any:
        """All stored versions, the active one marked."""
        return self._request("GET", "/v1/models", retry=True)

    def job(self, job_id: str) -> dict:
        """One retrain job's record."""
        return self._request("GET", f"/v1/jobs/{quote(job_id, safe='')}", retry=True)

    def jobs(self, limit: int | None = None) -> Any:
        """Recent retrain jobs, newest first."""
        query = "" if limit is None else f"?limit={int(limit)}"
        return self._request("GET", "/v1/jobs" + query, retry=True)

    def activate(self, version: str) -> Any:
        """Make a stored version the active one (rollback); admin."""
        path = f"/v1/models/{quote(version, safe='')}/activate"
        return self._request("POST", path, {}, retry=False)

    def health(self) -> Any:
        """Liveness."""
        return self._request("GET", "/healthz", retry=True)

    def ready(self) -> Any:
        """Readiness: the loaded model version; raises ServerError (503) when not ready."""
        return self._request("GET", "/readyz", retry=True)

    def retrain(
        self,
        wait: bool = False,
        poll_interval: float = 0.5,
        timeout: float = 600.0,
        **params: Any,
    ) -> dict:
        """Start a retrain job (admin); with wait, poll until it ends and return its record.

        Without wait the 202 body ({"job_id", "status"}) is returned. With wait the final job
        record is returned whatever its status (succeeded, failed or rejected): check "status".
        """
        accepted = self._request("POST", "/v1/retrain", params, retry=False)
        if not wait:
            return accepted
        job_id = accepted.get("job_id") or accepted.get("id")
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if record.get("status") in TERMINAL:
                return record
            if time.monotonic() >= deadline:
                detail = f"job {job_id} still {record.get('status')} after {timeout:g} s"
                raise JobTimeout(None, "job wait timed out", detail, body=record)
            time.sleep(poll_interval)


def _pair(text: str) -> list[str]:
    """Parse "A,B" for the batch command."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected A,B with non-negative integers, got {text!r}")
    return [p.strip() for p in parts]


def _uint(text: str) -> str:
    """Non-negative decimal integer of any size, kept as a string so nothing is lost."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    """Subcommands mirror the client's methods."""
    parser = argparse.ArgumentParser(prog="python -m service.client", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("RNNADD_URL", DEFAULT_URL))
    parser.add_argument("--token", default=os.environ.get("RNNADD_ADMIN_TOKEN"),
                        help="admin token (default: $RNNADD_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request seconds")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="sum of one pair")
    p.add_argument("a", type=_uint)
    p.add_argument("b", type=_uint)
    p.add_argument("--bits", type=int)
    p = sub.add_parser("batch", help="sums of pairs given as A,B")
    p.add_argument("pairs", type=_pair, nargs="+")
    p.add_argument("--bits", type=int)
    for name in ("model", "models", "health", "ready"):
        sub.add_parser(name)
    sub.add_parser("jobs").add_argument("--limit", type=int)
    sub.add_parser("job").add_argument("job_id")
    sub.add_parser("activate").add_argument("version")
    p = sub.add_parser("retrain", help="start a retrain job (admin)")
    p.add_argument("--wait", action="store_true", help="poll until the job ends")
    p.add_argument("--poll-interval", type=float, default=0.5)
    p.add_argument("--wait-timeout", type=float, default=600.0)
    for flag, kind in (("--hidden-size", int), ("--optimizer", str), ("--learning-rate", float),
                       ("--batch-size", int), ("--max-steps", int), ("--seed", int),
                       ("--bits", int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--activate", action=argparse.BooleanOptionalAction, default=None)
    return parser


def _run(client: Client, args: argparse.Namespace) -> tuple[Any, int]:
    """Dispatch one subcommand; the result to print and the exit status."""
    simple = {"model": client.model, "models": client.models,
              "health": client.health, "ready": client.ready}
    if args.command in simple:
        return simple[args.command](), 0
    if args.command == "predict":
        return client.predict(args.a, args.b, bits=args.bits), 0
    if args.command == "batch":
        return client.predict_batch(args.pairs, bits=args.bits), 0
    if args.command == "jobs":
        return client.jobs(limit=args.limit), 0
    if args.command == "job":
        return client.job(args.job_id), 0
    if args.command == "activate":
        return client.activate(args.version), 0
    names = ("hidden_size", "optimizer", "learning_rate", "batch_size", "max_steps", "seed",
             "bits", "activate")
    params = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    result = client.retrain(wait=args.wait, poll_interval=args.poll_interval,
                            timeout=args.wait_timeout, **params)
    failed = args.wait and result.get("status") != "succeeded"
    return result, 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON answer; exit 1 with a one-line message when the call fails."""
    args = _parser().parse_args(argv)
    with Client(args.url, token=args.token, timeout=args.timeout) as client:
        try:
            result, status = _run(client, args)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2))
    if status:
        print(f"error: job {result.get('id')} ended {result.get('status')}"
              + (f": {result['error']}" if result.get("error") else ""), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
