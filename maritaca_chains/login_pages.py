"""The browser's way in when the server has access keys: the ``/login`` form, and the
"entre primeiro" page (401) a browser gets instead of JSON when it opens a page that
needs a key (the UI, a playground).

Both are Brazilian Portuguese, in the landing page's look (``templates/site.css``). The
401 page links to ``/login?next=<the page asked for>``, and a right key at ``/login``
lands there. ``next`` is only ever a path on this site (``safe_next``): never another
site, so the login cannot be used to send someone elsewhere.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from .request_guards import LOGIN_PATH

__all__ = ["LoginRequired", "login_page", "login_required_html", "login_required_page",
           "safe_next", "site_style", "wants_page"]


@cache
def site_style() -> str:
    """The shared stylesheet of our own pages (inlined: one request per page)."""
    return (resources.files("maritaca_chains") / "templates" / "site.css").read_text("utf-8")


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this site (``/ui/``, ``/story/playground/?x=1``),
    else ``/``: no scheme, no host, no ``//`` or ``/\\`` (which browsers read as another
    host), no control characters."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x20 or c == "\x7f" for c in value) or "\\" in value:
        return "/"
    return value


def wants_page(request: Request) -> bool:
    """Whether a browser is navigating (a GET asking for HTML), not a program calling."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get(
        "accept", "")


def _page(title: str, body: str, root: str = "") -> str:
    here = html.escape(root)
    return ("<!doctype html><html lang='pt-BR'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)} · maritaca-chains</title>"
            f"<style>{site_style()}</style></head><body><main class='narrow'>"
            f"<header><h1><a href='{here}/'>"
            "maritaca<span>-chains</span></a></h1>"
            "<p>Cadeias LCEL em streaming sobre os modelos Sabiá da Maritaca AI.</p></header>"
            f"{body}</main></body></html>")


def login_page(message: str = "", *, error: bool = False, next_path: str = "/",
               root: str = "") -> str:
    """The login form; after a right key the browser goes to ``next_path``."""
    note = (f"<p class='message{' error' if error else ''}' role='status'>"
            f"{html.escape(message)}</p>" if message else "")
    here = html.escape(root)
    return _page("Entrar", (
        "<section class='card'><h2>Entrar</h2>"
        "<p>Este servidor pede uma chave de acesso. Digite-a uma vez: ela é conferida "
        "aqui e o navegador guarda só um cookie deste site; a chave nunca vai na URL.</p>"
        f"{note}<form method='post' action='{here}{LOGIN_PATH}'>"
        f"<input type='hidden' name='next' value='{html.escape(safe_next(next_path))}'>"
        "<label for='key'>Chave de acesso</label>"
        "<input id='key' name='key' type='password' autocomplete='current-password' "
        "required autofocus>"
        "<button class='submit' type='submit'>Entrar</button></form></section>"
        f"<p class='small'><a href='{here}/'>Voltar ao início</a></p>"), root)


def login_required_page(next_path: str, root: str = "") -> str:
    """The 401 page: this page needs the access key; a link to log in and come back."""
    target = f"{root}{LOGIN_PATH}?next={quote(safe_next(next_path), safe='/')}"
    return _page("Entre primeiro", (
        "<section class='card'><h2>Entre para continuar</h2>"
        f"<p>A página <code>{html.escape(safe_next(next_path))}</code> precisa da chave "
        "de acesso deste servidor. Entre uma vez com ela e você volta direto para cá.</p>"
        f"<a class='button primary' href='{html.escape(target)}'>Entrar</a></section>"
        "<p class='small'>Programas enviam a chave no cabeçalho <code>X-API-Key</code> "
        f"ou <code>Authorization: Bearer</code>. <a href='{html.escape(root)}/'>"
        "Voltar ao início</a></p>"), root)


class LoginRequired(HTTPException):
    """A browser opened a page that needs an access key: answered with the 401 page."""

    def __init__(self, next_path: str, root: str = "") -> None:
        super().__init__(401, "Entre em /login para abrir esta página",
                         headers={"WWW-Authenticate": "Bearer"})
        self.next_path, self.root = next_path, root


async def login_required_html(request: Request, exc: Exception) -> HTMLResponse:
    """The exception handler that renders ``LoginRequired``."""
    assert isinstance(exc, LoginRequired)
    return HTMLResponse(login_required_page(exc.next_path, exc.root), status_code=401,
                        headers=exc.headers)
