"""What a request must look like before any route runs, so a web page cannot drive the server.

``add_request_guards(app, settings)`` puts ``RequestGuards`` outermost (with Starlette's
``CORSMiddleware`` inside it when ``MARITACA_CHAINS_CORS_ORIGINS`` is set). At the start
of every request, and never per body chunk, it refuses:

- a ``Host`` the server is not meant to be reached by (400): DNS rebinding. Allowed are
  the loopback names and addresses, the address the connection arrived on, the
  configured ``MARITACA_CHAINS_HOST`` and ``MARITACA_CHAINS_ALLOWED_HOSTS``;
- a cross-site state-changing request or WebSocket handshake (403): an ``Origin`` that is
  neither this server nor a CORS origin, or ``Sec-Fetch-Site`` cross-site/same-site;
- a body that is not JSON on a JSON route (415): a ``text/plain`` POST needs no CORS
  preflight, so any page could send one;
- an access key in the URL (400), its value replaced by ``REDACTED`` in the scope before
  uvicorn's access log reads it.

A refusal is ``{"detail": <message>, "type": <code>}``, the message in pt-BR or, with
``Accept-Language: en``, English (``messages``).

GET responses that may be documents (not event streams) get ``X-Frame-Options``,
``nosniff`` and a ``Content-Security-Policy`` per page kind (``csp``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from .csp import page_headers
from .media_types import is_json, media_type
from .messages import DEFAULT_LANGUAGE, Language, say, scope_language
from .settings import ServerSettings, is_loopback

__all__ = ["ALLOWED_ORIGINS", "LOGIN_PATH", "LOGOUT_PATH", "RequestGuards", "add_request_guards",
           "cross_site_refusal"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
# where the middleware leaves the allowed CORS origins for the WebSocket face's own check
ALLOWED_ORIGINS = "maritaca_chains.allowed_origins"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# query parameters that would carry a key: refused, and never printed by the access log
_SECRET_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "access_key",
                            "access-key", "accesskey", "x-api-key", "x_api_key", "token",
                            "access_token", "bearer", "authorization", "password", "secret"})
_UNSPECIFIED = frozenset({"", "0.0.0.0", "::", "[::]"})


_HOST = re.compile(r"(?:\[([0-9a-f:.]+)\]|([a-z0-9_.-]+))(?::[0-9]{1,5})?", re.I)


def _hostname(host: str) -> str | None:
    """The name in a ``Host`` header (IPv6 brackets removed), or None if it is not a
    plain name or address with an optional port (``[::1].evil.example`` is not)."""
    match = _HOST.fullmatch(host.strip())
    if match is None:
        return None
    return (match.group(1) or match.group(2)).lower().rstrip(".")


def _origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def cross_site_refusal(scope: Scope, allowed_origins: Iterable[str] | None = None,
                       headers: dict[str, str] | None = None,
                       lang: Language = DEFAULT_LANGUAGE) -> str | None:
    """Why this request or handshake comes from another site, or None if it does not.

    Same origin means the ``Origin``'s host and port are the ``Host`` the browser sent
    (the Host allow-list has already refused rebinding names). Without ``Origin``, a
    ``Sec-Fetch-Site`` of ``cross-site``/``same-site`` still gives a browser away
    (another port on localhost is "same-site" but another origin). Clients that are not
    browsers send neither and pass. ``allowed_origins`` defaults to what the
    middleware left in the scope.
    """
    if allowed_origins is None:
        allowed_origins = scope.get("state", {}).get(ALLOWED_ORIGINS, ())
    headers = headers if headers is not None else _headers(scope)
    origin = headers.get("origin")
    if origin is not None:
        if _origin_key(origin) in allowed_origins:
            return None
        netloc = urlsplit(origin.strip().lower()).netloc if origin != "null" else ""
        if netloc and netloc == headers.get("host", "").lower():
            return None
        return say("cross_site_origin", lang, origin=repr(origin[:100]))
    if headers.get("sec-fetch-site", "") in ("cross-site", "same-site"):
        return say("cross_site_fetch", lang)
    return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class RequestGuards:
    """Pure ASGI: host, origin, content type and URL checks at request start; page
    headers on GET responses. Nothing runs per body chunk except one flag test."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] = (),
                 cors_origins: Iterable[str] = (), listen_host: str = "127.0.0.1") -> None:
        self.app = app
        hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        if listen_host.strip().lower() not in _UNSPECIFIED:
            hosts.add(_hostname(listen_host) or listen_host.lower())
        self.any_host = "*" in hosts
        self.host_suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.com"
        self.hosts = frozenset(h for h in hosts if not h.startswith("*"))
        self.cors_origins = frozenset(_origin_key(o) for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[ALLOWED_ORIGINS] = self.cors_origins
        headers = _headers(scope)
        refused = self._refusal(scope, headers)
        if refused is not None:
            status, code, values = refused
            await _refuse(scope, send, status, code,
                          say(code, scope_language(scope), **values))
            return
        # page headers for what may be a document; an event stream (Gradio's queue, a
        # run's events) is not one, and its chunks then pass through untouched
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") \
                and "text/event-stream" not in headers.get("accept", ""):
            send = page_headers(scope["path"], send)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]
                 ) -> tuple[int, str, dict[str, str]] | None:
        """Why a request is refused: its status, message code and the message's values."""
        if scope.get("query_string") and _secret_in_query(scope):
            return 400, "key_in_url", {}
        host = headers.get("host")
        if host is not None and not self._host_allowed(host, scope):
            return 400, "host_not_allowed", {"host": repr(host[:100])}
        method = scope.get("method", "GET")
        if scope["type"] == "websocket" or method not in _SAFE_METHODS:
            if cross_site_refusal(scope, self.cors_origins, headers):
                origin = headers.get("origin")
                return (403, "cross_site_origin", {"origin": repr(origin[:100])}) \
                    if origin is not None else (403, "cross_site_fetch", {})
        if method in _BODY_METHODS:
            return _content_type_refusal(scope["path"], headers.get("content-type", ""))
        return None

    def _host_allowed(self, host: str, scope: Scope) -> bool:
        name = _hostname(host)
        if name is None:
            return False
        if self.any_host or is_loopback(name) or name in self.hosts:
            return True
        if self.host_suffixes and name.endswith(self.host_suffixes):
            return True
        # the address the connection arrived on (uvicorn: always an IP, which no DNS
        # answer can rebind; in-process test clients: their URL's host)
        server = scope.get("server")
        return server is not None and name == str(server[0]).lower()


def _content_type_refusal(path: str, content_type: str
                          ) -> tuple[int, str, dict[str, str]] | None:
    kind = media_type(content_type)
    if path == LOGIN_PATH:
        if kind == "application/x-www-form-urlencoded":
            return None
        return 415, "login_form_required", {}
    if path == LOGOUT_PATH and kind in ("application/x-www-form-urlencoded", ""):
        return None  # a logout form, or a POST with no body
    if path.startswith("/ui/") and path.endswith("/upload") and kind == "multipart/form-data":
        return None  # Gradio's file uploads (the chat itself speaks JSON)
    if is_json(kind):
        return None
    return 415, "json_body_required", {}


def _secret_in_query(scope: Scope) -> bool:
    """Blank a key-carrying query string in the scope (uvicorn's access log prints the
    scope's); whether there was one."""
    raw = scope["query_string"].decode("latin-1")
    pairs = parse_qsl(raw, keep_blank_values=True)
    if not any(name.lower() in _SECRET_PARAMS for name, _ in pairs):
        return False
    scope["query_string"] = urlencode(
        [(n, "REDACTED" if n.lower() in _SECRET_PARAMS else v) for n, v in pairs]).encode()
    return True


async def _refuse(scope: Scope, send: Any, status: int, code: str, detail: str) -> None:
    body = json.dumps({"detail": detail, "type": code}, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff")]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": detail.encode()[:120].decode(errors="ignore")})


def add_request_guards(app: FastAPI, settings: ServerSettings) -> None:
    """Wrap ``app`` (call after every other ``add_middleware``: this one goes outermost)."""
    origins = sorted({_origin_key(o) for o in settings.cors_origins})  # as browsers send them
    if origins:
        # real CORS for the browser apps allowed to call the API; no cookies cross-site
        # (the login cookie is SameSite=Strict anyway): such apps send X-API-Key
        app.add_middleware(CORSMiddleware, allow_origins=origins,
                           allow_methods=["GET", "POST"], allow_credentials=False,
                           allow_headers=["content-type", "x-api-key", "authorization"],
                           max_age=600)
    app.add_middleware(RequestGuards, allowed_hosts=settings.allowed_hosts,
                       cors_origins=origins, listen_host=settings.host)
