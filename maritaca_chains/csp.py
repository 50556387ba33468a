"""The headers that keep the pages from being framed by other sites or running foreign code.

``page_headers(path, send)`` wraps a GET response's ``send``: every response gets
``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy`` and a
``Content-Security-Policy`` chosen by the page kind. Inline ``<script>`` (and, where
inline styles are not allowed wholesale, ``<style>``) elements of an HTML page sent in
one body message are allowed by their SHA-256 hash, so no policy needs
``'unsafe-inline'`` for scripts. Each policy below is the least its page worked with in
Chromium (``tests/test_browser_security.py`` fails on any CSP violation).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, MutableMapping
from typing import Any

from .media_types import media_type

__all__ = ["page_headers", "policy_for"]

Policy = dict[str, tuple[str, ...]]

# Every page: no framing by anyone (clickjacking), no <base> or form posts elsewhere, no
# plugins.
_COMMON: Policy = {"base-uri": ("'self'",), "form-action": ("'self'",),
                   "frame-ancestors": ("'none'",), "object-src": ("'none'",)}

# The landing page, /login, JSON: nothing runs, styles only from here or by hash.
STRICT: Policy = {"default-src": ("'none'",), "style-src": ("'self'",),
                  "img-src": ("'self'",), "connect-src": ("'self'",)}

# LangServe's playground: a React bundle from its own assets plus one inline script that
# sets the schemas (allowed by hash). Its UI library injects <style> elements at run time
# (so 'unsafe-inline' for styles only), and JSON Forms' validator (ajv) compiles each
# schema with new Function() ('unsafe-eval'; without it the form does not render).
PLAYGROUND: Policy = {"default-src": ("'self'",),
                      "script-src": ("'self'", "'unsafe-eval'"),
                      "style-src": ("'self'", "'unsafe-inline'"),
                      "img-src": ("'self'", "data:"), "font-src": ("'self'", "data:"),
                      "connect-src": ("'self'",)}

# Gradio: its bundle from /ui/assets plus five inline scripts carrying its config (by
# hash, computed per response: the config names the request's URL). Svelte sets
# style="" attributes and the theme is injected as <style> at run time: 'unsafe-inline'
# for styles. Icons and previews use data:/blob: URLs; its queue speaks fetch + SSE.
GRADIO: Policy = {"default-src": ("'self'",), "script-src": ("'self'",),
                  "style-src": ("'self'", "'unsafe-inline'"),
                  "img-src": ("'self'", "data:", "blob:"),
                  "font-src": ("'self'", "data:"), "media-src": ("'self'", "blob:"),
                  "worker-src": ("'self'", "blob:"), "connect-src": ("'self'",)}

# Swagger UI at /docs, served from this server (pages.py): its bundle and CSS from
# /docs-assets, one inline init script (by hash), SVG icons as data: URLs.
DOCS: Policy = {"default-src": ("'self'",), "script-src": ("'self'",),
                "style-src": ("'self'",), "img-src": ("'self'", "data:"),
                "connect-src": ("'self'",)}

_FIXED_HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                  (b"referrer-policy", b"same-origin")]
_INLINE_SCRIPT = re.compile(rb"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>",
                            re.S | re.I)
_INLINE_STYLE = re.compile(rb"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)


def policy_for(path: str) -> Policy:
    """The policy of the page at ``path``."""
    if path == "/ui" or path.startswith("/ui/"):
        return GRADIO
    if "/playground/" in path or path.endswith("/playground"):
        return PLAYGROUND
    if path.startswith("/docs"):
        return DOCS
    return STRICT


def _hashes(pattern: re.Pattern[bytes], html: bytes) -> tuple[str, ...]:
    return tuple(f"'sha256-{base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()}'"
                 for m in pattern.finditer(html))


def _allow(directives: Policy, name: str, hashes: tuple[str, ...]) -> None:
    if hashes:
        sources = directives.get(name, directives.get("default-src", ()))
        directives[name] = (*(s for s in sources if s != "'none'"), *hashes)


def render(policy: Policy, html: bytes = b"") -> bytes:
    """The ``Content-Security-Policy`` value, with the inline elements of ``html`` hashed."""
    directives = {**policy, **_COMMON}
    if html:
        _allow(directives, "script-src", _hashes(_INLINE_SCRIPT, html))
        if "'unsafe-inline'" not in directives.get("style-src", ()):  # a hash would void it
            _allow(directives, "style-src", _hashes(_INLINE_STYLE, html))
    return "; ".join(" ".join((name, *sources)) for name, sources in directives.items()
                     ).encode()


def page_headers(path: str, send: Callable[[MutableMapping[str, Any]], Any]
                 ) -> Callable[[MutableMapping[str, Any]], Any]:
    """``send`` that adds the page headers. An HTML response's start is held until its
    first body message, whose inline scripts the policy then allows by hash."""
    policy = policy_for(path)
    held: MutableMapping[str, Any] | None = None

    async def send_with_headers(message: MutableMapping[str, Any]) -> None:
        nonlocal held
        if held is not None:  # the one test a body message costs
            start, held = held, None
            html = b"" if message.get("more_body") else message.get("body", b"")
            start["headers"] = [*start["headers"], *_FIXED_HEADERS,
                                (b"content-security-policy", render(policy, html))]
            await send(start)
        elif message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if media_type(content_type) == "text/html":
                held = message
                return
            message["headers"] = [*message.get("headers", []), *_FIXED_HEADERS,
                                  (b"content-security-policy", render(policy))]
        await send(message)

    return send_with_headers
