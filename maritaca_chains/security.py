"""Who may call the server: access keys, or loopback clients only; and the browser login.

``access_guard(settings)`` is the one dependency every chain route, face and page that
runs a model sits behind. With ``MARITACA_CHAINS_API_KEYS`` set, clients send a key
(``X-API-Key``, ``Authorization: Bearer``, or the browser cookie set by ``POST /login``);
without keys, only loopback clients are served unless the settings allow public access.
A browser opening a page without the key gets the pt-BR "entre primeiro" page linking to
``/login?next=<that page>`` (``login_pages``); programs get JSON with a ``type``.
What may reach a route at all (hosts, origins, content types) is ``request_guards``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .error_responses import Refusal
from .login_pages import LoginRequired, login_page, safe_next, wants_page
from .messages import language
from .request_guards import LOGIN_PATH
from .settings import ServerSettings, is_loopback

__all__ = ["ACCESS_COOKIE", "NO_KEY", "CallerLabels", "access_guard", "add_login_route",
           "caller_label", "cookie_token", "key_label"]

logger = logging.getLogger("maritaca_chains.server")

ACCESS_COOKIE = "maritaca_chains_key"
_MAX_FORM_BYTES = 4096


def cookie_token(key: str) -> str:
    """What the login cookie holds for ``key``: a digest, so the cookie jar (and anything
    that dumps it) never holds the key itself."""
    return hmac.new(key.encode(), b"maritaca-chains login cookie", hashlib.sha256).hexdigest()


NO_KEY = "none"  # the caller's label when the server has no access keys


def key_label(key: str) -> str:
    """A stable label for an access key, safe to log and to keep state by (quotas, runs,
    the run log): ``key-`` + 8 hex of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class CallerLabels:
    """Which configured access key a request carries, as its ``key_label``: the same
    label whether the key came as a header or as the browser's login cookie."""

    def __init__(self, settings: ServerSettings) -> None:
        self._labels: dict[str, str] = {}
        for secret in settings.access_keys:
            key = secret.get_secret_value()
            self._labels[key] = self._labels[cookie_token(key)] = key_label(key)

    def __call__(self, connection: HTTPConnection) -> str:
        if not self._labels:
            return NO_KEY
        auth = connection.headers.get("authorization", "")
        for supplied in (connection.headers.get("x-api-key"),
                         auth[7:] if auth.lower().startswith("bearer ") else None,
                         connection.cookies.get(ACCESS_COOKIE)):
            if supplied and (label := self._labels.get(supplied)):
                return label
        return "unknown"  # only before the access guard has refused it


    def middleware(self, app: ASGIApp) -> ASGIApp:
        """``app``, with these labels in every request's scope, where ``caller_label``
        finds them, also inside mounted apps (the Gradio UI) that have their own state."""

        async def with_labels(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_LABELS_IN_SCOPE] = self
            await app(scope, receive, send)

        return with_labels


_LABELS_IN_SCOPE = "maritaca_chains.caller_labels"


def caller_label(connection: HTTPConnection) -> str:
    """The label of the access key this request or WebSocket carries (``NO_KEY`` on a
    server without keys)."""
    labels: CallerLabels | None = connection.scope.get(_LABELS_IN_SCOPE)
    return labels(connection) if labels is not None else NO_KEY


def access_guard(settings: ServerSettings) -> Callable[[Request], Awaitable[None]]:
    """A dependency: with access keys configured, every chain route needs one; without,
    only loopback clients are served unless the settings allow public access. Async
    (it never blocks): FastAPI would run a plain function in its thread pool, a thread
    hop before every request's first token."""
    keys = [k.get_secret_value().encode() for k in settings.access_keys]
    tokens = [cookie_token(k.decode()).encode() for k in keys]

    async def guard(request: Request) -> None:
        if not keys:
            client = request.client.host if request.client else ""
            if settings.allow_public or not client or is_loopback(client) \
                    or client == "testclient":
                return
            raise Refusal(403, "loopback_only", language(request.headers))
        auth = request.headers.get("authorization", "")
        supplied = (request.headers.get("x-api-key")
                    or (auth[7:] if auth.lower().startswith("bearer ") else "")).encode()
        cookie = request.cookies.get(ACCESS_COOKIE, "").encode()
        if not (any(hmac.compare_digest(supplied, key) for key in keys)
                or any(hmac.compare_digest(cookie, token) for token in tokens)):
            if wants_page(request):
                raise LoginRequired(_asked_for(request), _site_root(request))
            raise Refusal(401, "access_key_required", language(request.headers),
                          headers={"WWW-Authenticate": "Bearer"})

    return guard


def _site_root(request: Request) -> str:
    """The path the whole site is mounted at (a proxy's prefix): inside a mounted app
    (the Gradio UI) ``root_path`` is the mount's own, ``app_root_path`` the site's."""
    return str(request.scope.get("app_root_path", request.scope.get("root_path", "")))


def _asked_for(request: Request) -> str:
    """The page the browser asked for, as a path on this site (for ``/login?next=``)."""
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


def add_login_route(app: FastAPI, settings: ServerSettings) -> None:
    """``GET /login[?next=/a/page]``: the form; ``POST /login`` (the form): the access
    cookie for the playground and the UI, set only for a right key, then on to ``next``
    (a path on this site; anything else goes to ``/``). Keys in the URL are refused
    before this runs (``request_guards``)."""
    keys = [k.get_secret_value() for k in settings.access_keys]

    @app.get(LOGIN_PATH, include_in_schema=False)
    async def login_form(request: Request,
                         next_path: str = Query("/", alias="next")) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        if not keys:
            return HTMLResponse(login_page("Este servidor não usa chaves de acesso: "
                                           "não é preciso entrar.", root=root))
        return HTMLResponse(login_page(next_path=next_path, root=root))

    @app.post(LOGIN_PATH, include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await request.body()
        root = request.scope.get("root_path", "")
        if len(body) > _MAX_FORM_BYTES:
            return HTMLResponse(login_page("Formulário grande demais.", error=True,
                                           root=root), 413)
        form = parse_qs(body.decode("utf-8", errors="replace"))
        supplied = (form.get("key") or [""])[0]
        next_path = safe_next((form.get("next") or ["/"])[0])
        if not keys:
            return HTMLResponse(login_page("Este servidor não usa chaves de acesso: "
                                           "não é preciso entrar.", error=True, root=root),
                                400)
        match = next((k for k in keys
                      if hmac.compare_digest(supplied.encode(), k.encode())), None)
        if match is None:
            logger.warning("login refused: wrong access key from %s",
                           request.client.host if request.client else "?")
            return HTMLResponse(login_page("Chave incorreta: confira e tente de novo.",
                                           error=True, next_path=next_path, root=root), 401)
        # next_path is a path here, never another site (safe_next): no open redirect
        # (a full path, proxy prefix included: request.url.path carries it)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(ACCESS_COOKIE, cookie_token(match), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response
