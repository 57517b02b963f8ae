"""The admin API's bearer token: CDC_ADMIN_TOKEN. Without one configured, the
endpoints that need it are refused, never open."""

from __future__ import annotations

import hmac

from fastapi import Request

from api.errors import ApiError


def require_token(request: Request) -> None:
    """A FastAPI dependency: raises ApiError 403 when no token is configured, 401
    when the request does not carry it as ``Authorization: Bearer <token>``."""
    expected: str | None = request.app.state.service.settings.admin_token
    if expected is None:
        raise ApiError(
            403,
            "the admin API is off: set CDC_ADMIN_TOKEN (or CDC_ADMIN_TOKEN_FILE) on the "
            "service to enable it",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise ApiError(
            401,
            "send the admin token as `Authorization: Bearer <token>` (CDC_ADMIN_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
