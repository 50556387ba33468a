"""Who may call the server: access keys, or loopback clients only.

``access_guard(settings)`` is the one dependency every chain route, face and page that
runs a model sits behind. With ``MARITACA_CHAINS_API_KEYS`` set, clients send a key
(``X-API-Key``, ``Authorization: Bearer``, or the browser cookie set by ``/login``);
without keys, only loopback clients are served unless the settings allow public access.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse

from .settings import ServerSettings, is_loopback

__all__ = ["ACCESS_COOKIE", "access_guard", "add_login_route"]

ACCESS_COOKIE = "maritaca_chains_key"


def access_guard(settings: ServerSettings) -> Callable[[Request], None]:
    """A dependency: with access keys configured, every chain route needs one; without,
    only loopback clients are served unless the settings allow public access."""
    keys = [k.get_secret_value().encode() for k in settings.access_keys]

    def guard(request: Request) -> None:
        if not keys:
            client = request.client.host if request.client else ""
            if settings.allow_public or not client or is_loopback(client) \
                    or client == "testclient":
                return
            raise HTTPException(403, "This server only serves loopback clients; set "
                                     "MARITACA_CHAINS_API_KEYS to serve others")
        auth = request.headers.get("authorization", "")
        supplied = (request.headers.get("x-api-key")
                    or (auth[7:] if auth.lower().startswith("bearer ") else "")
                    or request.cookies.get(ACCESS_COOKIE, ""))
        if not any(hmac.compare_digest(supplied.encode(), key) for key in keys):
            raise HTTPException(401, "Missing or wrong access key: send it as X-API-Key or "
                                     "Authorization: Bearer, or open /login?key=... once in "
                                     "a browser", headers={"WWW-Authenticate": "Bearer"})

    return guard


def add_login_route(app: FastAPI) -> None:
    """``/login?key=...``: a browser gets the access cookie for the playground and the UI."""

    @app.get("/login", include_in_schema=False)
    async def login(key: str) -> RedirectResponse:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(ACCESS_COOKIE, key, httponly=True, samesite="strict")
        return response
