"""Client: one method per rnnadd endpoint, JSON in and out, over a keep-alive session.

Retry policy: only connection failures (nothing reached the server, or the connection broke) are
retried, and only on calls that are safe to repeat: every GET, and predict / predict_batch, which
are POSTs of pure functions. retrain, activate and cancel change server state and are never
retried; a connection error there surfaces at once as a TransportError so the caller can look at
jobs() or models() before trying again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import requests

from rnnadd_client.errors import JobTimeout, ServerError, TransportError, error_from, reason

TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
DEFAULT_URL = "http://127.0.0.1:8000"
Number = int | str  # big integers are safest sent as strings of decimal digits


class Client:
    """Talks JSON to one rnnadd base URL; use as a context manager to release connections."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        self.url = url.rstrip("/")
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
        """One call; connection errors retried with backoff only when retry is allowed."""
        headers = {"Accept": "application/json, application/problem+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        target = self.url + path
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                response = self.session.request(
                    method, target, json=body, headers=headers, timeout=self.timeout
                )
                break
            except requests.ConnectionError as exc:
                if attempt + 1 >= attempts:
                    detail = f"{method} {target}: {reason(exc)}"
                    raise TransportError(None, "connection failed", detail) from exc
                time.sleep(min(1.0, 0.1 * 2**attempt))
            except requests.Timeout as exc:
                detail = f"{method} {target}: no answer within {self.timeout:g} s"
                raise TransportError(None, "timed out", detail) from exc
            except requests.RequestException as exc:
                raise TransportError(None, "request failed", reason(exc)) from exc
        if not 200 <= response.status_code < 300:
            raise error_from(response)
        if response.status_code == 204:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(response.status_code, "invalid JSON response", str(exc)) from exc

    def predict(self, a: Number, b: Number, bits: int | None = None, trace: bool = False) -> dict:
        """The model's sum of one pair; with trace, the network's view of every step too."""
        body: dict[str, Any] = {"a": a, "b": b}
        if bits is not None:
            body["bits"] = bits
        if trace:
            body["trace"] = True
        return self._request("POST", "/v1/predict", body, retry=True)

    def predict_batch(self, pairs: Iterable[Sequence[Number]], bits: int | None = None) -> dict:
        """The model's sums of many pairs in one call."""
        body: dict[str, Any] = {"pairs": [list(pair) for pair in pairs]}
        if bits is not None:
            body["bits"] = bits
        return self._request("POST", "/v1/predict/batch", body, retry=True)

    def model(self) -> dict:
        """Record of the active model (version, hyperparameters, metrics, gate, history)."""
        return self._request("GET", "/v1/model", retry=True)

    def models(self, limit: int | None = None, after: str | None = None) -> dict:
        """A page of stored versions, oldest first, the active one marked; pass the answer's
        next_after as after for the next page."""
        query = {k: v for k, v in (("limit", limit), ("after", after)) if v is not None}
        path = "/v1/models" + (f"?{urlencode(query)}" if query else "")
        return self._request("GET", path, retry=True)

    def all_models(self) -> list[dict]:
        """Every stored version, page by page."""
        found, after = [], None
        while True:
            page = self.models(limit=1000, after=after)
            found += page["models"]
            after = page.get("next_after")
            if not after:
                return found

    def activate(self, version: str, force: bool = False) -> dict:
        """Make a stored version the active one (rollback); admin. force: past a failed gate."""
        path = f"/v1/models/{quote(version, safe='')}/activate"
        return self._request("POST", path, {"force": True} if force else {}, retry=False)

    def job(self, job_id: str) -> dict:
        """One retrain job's record."""
        return self._request("GET", f"/v1/jobs/{quote(job_id, safe='')}", retry=True)

    def jobs(self, limit: int | None = None) -> dict:
        """Recent retrain jobs, newest first."""
        query = "" if limit is None else f"?limit={int(limit)}"
        return self._request("GET", "/v1/jobs" + query, retry=True)

    def cancel(self, job_id: str) -> dict:
        """Stop a queued or running retrain job; admin."""
        return self._request("DELETE", f"/v1/jobs/{quote(job_id, safe='')}", retry=False)

    def health(self) -> Any:
        """Liveness."""
        return self._request("GET", "/healthz", retry=True)

    def ready(self) -> Any:
        """Readiness: the loaded model version; raises ServerError (503) when not ready."""
        return self._request("GET", "/readyz", retry=True)

    def retrain(
        self,
        wait: bool = False,
        timeout: float = 600.0,
        poll_interval: float = 0.5,
        **params: Any,
    ) -> dict:
        """Start a retrain job (admin); params go to the server as they are, which checks them.

        Without wait the 202 body ({"job_id", "status"}) is returned. With wait the job is polled
        until it ends and its final record is returned whatever its status: check "status".
        """
        accepted = self._request("POST", "/v1/retrain", params, retry=False)
        if not wait:
            return accepted
        return self.wait(accepted.get("job_id") or accepted["id"], timeout, poll_interval)

    def wait(self, job_id: str, timeout: float = 600.0, poll_interval: float = 0.5) -> dict:
        """Poll a job until it ends; JobTimeout (with the last record) if it outlasts timeout."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if record.get("status") in TERMINAL:
                return record
            if time.monotonic() >= deadline:
                detail = f"job {job_id} still {record.get('status')} after {timeout:g} s"
                raise JobTimeout(None, "job wait timed out", detail, body=record)
            time.sleep(poll_interval)
