"""The pages that run no model: the landing page ``/`` and ``/healthz``."""

from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from chains import CHAINS
from maritaca import open_upstreams

from .backend import TINY_MODEL_NOTE, ServedModel

__all__ = ["add_pages"]


def add_pages(app: FastAPI, served: ServedModel, *, ui: bool) -> None:
    """``/healthz`` (JSON) and ``/`` (the landing page) for ``app``."""
    health = served.health()

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        """Which backend and model serve (never the key), and how many upstream
        streams this process has open (zero when no stream runs)."""
        return {**health, "open_upstream_streams": open_upstreams()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        rows = "".join(
            f"<li><b>{html.escape(spec.title)}</b> (<code>/{name}</code>): "
            f"{html.escape(spec.description)} "
            f'<a href="/{name}/playground/">playground</a>, plain text at '
            f"<code>POST /{name}/text</code>, WebSocket at <code>/{name}/ws</code></li>"
            for name, spec in CHAINS.items())
        chat = "<a href='/ui/'>chat UI</a> · " if ui else ""
        note = (f"<p><em>{html.escape(TINY_MODEL_NOTE)}</em></p>"
                if served.local_backend else "")
        return (f"<!doctype html><html lang='pt-BR'><head><meta charset='utf-8'>"
                f"<title>maritaca-chains</title></head><body><h1>maritaca-chains</h1>"
                f"<p>Backend: {html.escape(served.backend)}, model "
                f"{html.escape(served.model_name)}.</p>{note}<ul>{rows}</ul>"
                f"<p>{chat}<a href='/docs'>API docs</a> · <a href='/healthz'>health</a></p>"
                f"</body></html>")
