"""Typed errors: every failed call raises one, carrying the server's problem details."""

from __future__ import annotations

import re
from typing import Any

import requests


class ClientError(Exception):
    """A failed call, with the server's problem details (RFC 9457) when it sent them."""

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

    @property
    def problem(self) -> dict[str, Any]:
        """The server's problem document as sent (empty when there was none)."""
        return self.body if isinstance(self.body, dict) else {}

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


def error_from(response: requests.Response) -> ClientError:
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


def reason(exc: Exception) -> str:
    """The operating system's words (e.g. "Connection refused") rather than urllib3's essay."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found[-1].strip() if found else str(exc)
