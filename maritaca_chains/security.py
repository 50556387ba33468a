"""Who may call the server: access keys, or loopback clients only; and the browser login.

``access_guard(settings, sessions)`` is the check every chain route, face and page that
runs a model passes (through ``request_rules``' dependencies). With
``MARITACA_CHAINS_API_KEYS`` set, clients send a key (``X-API-Key``, ``Authorization:
Bearer``: ``supplied_key`` reads it, the one place that does), or the browser the session
cookie set by ``POST /login`` (a random token naming a session: ``sessions``; ``POST
/logout`` ends it); without keys, only loopback clients are served (``loopback_client``:
by address, never by name) unless the settings allow public access. A browser opening a
page without the key gets the pt-BR "entre primeiro" page linking to
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

from .login_pages import LoginRequired, login_page, safe_next, wants_page
from .messages import language
from .redis_outage import REDIS_DOWN, redis_unavailable_http
from .refusals import Refusal
from .request_guards import LOGIN_PATH, LOGOUT_PATH
from .sessions import LoginThrottle, Sessions
from .settings import ServerSettings, loopback_address

__all__ = ["ACCESS_COOKIE", "NO_KEY", "CallerLabels", "access_guard", "add_login_route",
           "caller_label", "key_label", "loopback_client", "supplied_key"]

logger = logging.getLogger("maritaca_chains.server")

ACCESS_COOKIE = "maritaca_chains_session"  # a session token (sessions), never the key
_MAX_FORM_BYTES = 4096


NO_KEY = "none"  # the caller's label when the server has no access keys


def supplied_key(connection: HTTPConnection) -> str:
    """The key the caller sent (``X-API-Key``, else ``Authorization: Bearer``; "" for
    none). The one place that reads it."""
    auth = connection.headers.get("authorization", "")
    return connection.headers.get("x-api-key") or (
        auth[7:] if auth[:7].lower() == "bearer " else "")


def loopback_client(connection: HTTPConnection) -> bool:
    """Whether the caller connected from a loopback address: the socket's peer address,
    or the client address a trusted proxy forwarded (uvicorn's ``--proxy-headers``
    rewrites it). An address, never a name: a forwarded ``localhost`` is not loopback.
    A connection without a peer address (a Unix socket) is local."""
    if connection.client is None:
        return True
    return loopback_address(connection.client.host)


def key_label(key: str) -> str:
    """A stable label for an access key, safe to log and to keep state by (quotas, runs,
    the run log): ``key-`` + 8 hex of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class CallerLabels:
    """Which configured access key a request carries, as its ``key_label``: the same
    label whether the key came as a header or the browser's session stands for it."""

    def __init__(self, settings: ServerSettings, sessions: Sessions) -> None:
        self.sessions = sessions
        self._labels: dict[str, str] = {}
        for secret in settings.access_keys:
            key = secret.get_secret_value()
            self._labels[key] = key_label(key)
        self._known = frozenset(self._labels.values())

    def __call__(self, connection: HTTPConnection) -> str:
        if not self._labels:
            return NO_KEY
        if (supplied := supplied_key(connection)) and (label := self._labels.get(supplied)):
            return label
        # a session the access guard already checked (in this process)
        session = self.sessions.known_label(connection.cookies.get(ACCESS_COOKIE, ""))
        if session is not None and session in self._known:
            return session
        return "unknown"  # only before the access guard refused it


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


def access_guard(settings: ServerSettings, sessions: Sessions
                 ) -> Callable[[Request], Awaitable[None]]:
    """A dependency: with access keys configured, every chain route needs one (or a live
    login session); without, only loopback clients are served unless the settings allow
    public access. Async (it never blocks): FastAPI would run a plain function in its
    thread pool, a thread hop before every request's first token."""
    keys = [k.get_secret_value().encode() for k in settings.access_keys]
    # a session counts only while its key is still configured: one made with a key that
    # has since been removed (kept in Redis, or by another replica) lets nobody in
    labels = {key_label(k.get_secret_value()) for k in settings.access_keys}

    async def guard(request: Request) -> None:
        if not keys:
            if settings.allow_public or loopback_client(request):
                return
            raise Refusal(403, "loopback_only", language(request.headers))
        supplied = supplied_key(request).encode()
        if any(hmac.compare_digest(supplied, key) for key in keys):
            return
        if cookie := request.cookies.get(ACCESS_COOKIE):
            try:
                if await sessions.label_of(cookie) in labels:
                    return
            except REDIS_DOWN:
                raise redis_unavailable_http(language(request.headers)) from None
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


def add_login_route(app: FastAPI, settings: ServerSettings, sessions: Sessions,
                    throttle: LoginThrottle) -> None:
    """``GET /login[?next=/a/page]``: the form; ``POST /login`` (the form): the access
    cookie for the playground and the UI, set only for a right key: a new session
    (``sessions``) that lasts ``MARITACA_CHAINS_SESSION_SECONDS``, then on to ``next`` (a
    path on this site; anything else goes to ``/``). Wrong keys are throttled per client
    address (429). ``POST /logout`` ends the session. Keys in the URL are refused before
    this runs (``request_guards``)."""
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
        address = request.client.host if request.client else "?"
        if (wait := await throttle.retry_after(address)) is not None:
            logger.warning("login refused: too many wrong keys from %s", address)
            return HTMLResponse(login_page(f"Muitas tentativas com chave incorreta: tente "
                                           f"de novo em {wait} s.", error=True,
                                           next_path=next_path, root=root), 429,
                                headers={"Retry-After": str(wait)})
        match = next((k for k in keys
                      if hmac.compare_digest(supplied.encode(), k.encode())), None)
        if match is None:
            await throttle.failed(address)
            logger.warning("login refused: wrong access key from %s", address)
            return HTMLResponse(login_page("Chave incorreta: confira e tente de novo.",
                                           error=True, next_path=next_path, root=root), 401)
        # next_path is a path here, never another site (safe_next): no open redirect
        # (a full path, proxy prefix included: request.url.path carries it)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(ACCESS_COOKIE, await sessions.create(key_label(match)),
                            max_age=int(settings.session_seconds), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    @app.post(LOGOUT_PATH, include_in_schema=False)
    async def logout(request: Request) -> Response:
        """End the browser's session (a form POST, or one with no body)."""
        if token := request.cookies.get(ACCESS_COOKIE):
            await sessions.drop(token)
        response = RedirectResponse(LOGIN_PATH, status_code=303)
        response.delete_cookie(ACCESS_COOKIE, httponly=True, samesite="strict",
                               secure=request.url.scheme == "https", path="/")
        return response
