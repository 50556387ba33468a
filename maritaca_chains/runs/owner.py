"""Whose run it is: a stable label of the access key a request carries, never the key."""

from __future__ import annotations

import hashlib

from fastapi import Request

from ..security import ACCESS_COOKIE, cookie_token

__all__ = ["key_label"]


def key_label(request: Request) -> str:
    """A short non-secret label of the request's access key ("" when it sends none).

    The key sent as a header and the browser's login cookie for the same key get the
    same label (the cookie holds ``cookie_token(key)``), so a run started with curl can
    be read in the browser that logged in with that key. Call it after the access guard.
    """
    auth = request.headers.get("authorization", "")
    supplied = request.headers.get("x-api-key") \
        or (auth[7:] if auth.lower().startswith("bearer ") else "")
    token = cookie_token(supplied) if supplied else request.cookies.get(ACCESS_COOKIE, "")
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""
