"""LangServe's playground page is ``<html lang="en">`` titled "Playground" whatever it
serves, and its React app's labels are English. ``PlaygroundInPortuguese`` (pure ASGI)
makes it say ``lang="pt-BR"``, names the chain and adds ``templates/playground-pt.js``
inline (allowed by hash, as the page's own inline script is), which translates the app's
fixed labels ("Start" is "Iniciar", "Output" is "Resposta") as they render. It relies on
those exact bytes of LangServe's page (pinned by ``tests/test_messages.py``) and on the
labels' English text (``tests/test_browser.py`` reads them translated).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from importlib import resources
from typing import Any

__all__ = ["PlaygroundInPortuguese"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_LABELS_IN_PORTUGUESE = (resources.files("maritaca_chains") / "templates"
                         / "playground-pt.js").read_text("utf-8")


class PlaygroundInPortuguese:
    """Pure ASGI: a playground page (``/<chain>/playground/``) says ``lang="pt-BR"`` and is
    titled after its chain (``titles``: chain name -> title). Other responses, and a
    page that does not carry LangServe's markers, pass untouched."""

    _LANG, _TITLE = b'<html lang="en">', b"<title>Playground</title>"

    def __init__(self, app: Any, titles: dict[str, str]) -> None:
        self.app, self.titles = app, titles

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope.get("path", "").strip("/").split("/") if scope["type"] == "http" else []
        if len(parts) != 2 or parts[1] != "playground" or parts[0] not in self.titles:
            await self.app(scope, receive, send)
            return
        title = (f"<title>Playground · {self.titles[parts[0]]} · maritaca-chains</title>"
                 f"\n    <script>{_LABELS_IN_PORTUGUESE}</script>")
        held: Message | None = None

        async def send_in_portuguese(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                held = message
                return
            if held is not None:
                start, held = held, None
                body = message.get("body", b"")
                if not message.get("more_body") and self._TITLE in body:
                    body = body.replace(self._LANG, b'<html lang="pt-BR">', 1).replace(
                        self._TITLE, title.encode(), 1)
                    message["body"] = body
                    start["headers"] = [(k, v) for k, v in start["headers"]
                                        if k.lower() != b"content-length"] + [
                        (b"content-length", str(len(body)).encode())]
                await send(start)
            await send(message)

        await self.app(scope, receive, send_in_portuguese)
