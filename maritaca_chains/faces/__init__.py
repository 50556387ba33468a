"""The chains' faces beside LangServe's routes: plain text, WebSocket, and the browser UI.

``mount_faces(app, chains)`` adds, for every chain ``<name>``, ``POST /<name>/text``
(``text``) and ``WebSocket /<name>/ws`` (``websocket``), and the Gradio UI at ``/ui/``
(``ui``), all behind the same request rules as the LangServe routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from langchain_core.runnables import Runnable

from ..error_responses import ERROR_MARK as ERROR
from ._face import TRUNCATED, Face
from .text import TEXT_MEDIA_TYPE, text_endpoint
from .ui import chat_fn, mount_ui
from .websocket import END, STOPPED, socket_endpoint

__all__ = ["END", "ERROR", "STOPPED", "TEXT_MEDIA_TYPE", "TRUNCATED", "chat_fn", "mount_faces"]

def mount_faces(app: FastAPI, chains: dict[str, Runnable[Any, str]], *,
                ui: bool = True) -> None:
    """Add ``/<name>/text`` and ``/<name>/ws`` for every chain, and (``ui``) the Gradio ``/ui``,
    all behind the request rules (``request_rules``: key, quotas) like LangServe's routes."""
    for name, chain in chains.items():
        face = Face(name, chain)
        app.add_api_route(f"/{name}/text", text_endpoint(face), methods=["POST"], tags=[name],
                          summary=f"The {name} answer as streamed plain text",
                          response_class=StreamingResponse, response_model=None,
                          openapi_extra={"requestBody": {"required": True, "content": {
                              "application/json": {
                                  "schema": face.request_schema()}}}},
                          responses={200: {"content": {TEXT_MEDIA_TYPE: {}}}})
        app.add_api_websocket_route(f"/{name}/ws", socket_endpoint(face))
    if chains and ui:
        mount_ui(app, chains)
