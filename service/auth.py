"""Admin authentication: one Bearer token from the environment, compared in constant time."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import current_app, request

from service.errors import Forbidden, Unauthorized

P = ParamSpec("P")
R = TypeVar("R")

CHALLENGE = 'Bearer realm="rnnadd"'


def check_admin(configured: str | None, authorization: str | None) -> None:
    """Raise the right problem unless the Authorization header carries the configured token."""
    if not configured:
        raise Forbidden(
            "Admin endpoints are disabled: set RNNADD_ADMIN_TOKEN in the service's environment "
            "to enable them, then send it as 'Authorization: Bearer <token>'."
        )
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "This endpoint needs an admin token: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    if not hmac.compare_digest(token.strip().encode(), configured.encode()):
        raise Unauthorized(
            "The admin token is not valid.",
            headers={"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'},
        )


def caller_is_admin() -> bool:
    """Whether this request carries the admin token; a wrong token is a 401, not "no"."""
    authorization = request.headers.get("Authorization")
    if authorization is None:
        return False
    check_admin(current_app.config.get("ADMIN_TOKEN"), authorization)
    return True


def require_admin(view: Callable[P, R]) -> Callable[P, R]:
    """Guard a view with the admin token configured for the app (RNNADD_ADMIN_TOKEN)."""

    @functools.wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        check_admin(current_app.config.get("ADMIN_TOKEN"), request.headers.get("Authorization"))
        return view(*args, **kwargs)

    return guarded
