"""The chains' faces beside LangServe's routes: plain text, WebSocket, the browser UI,
and the faces of other people's clients.

``mount_faces(app, chains, guard)`` adds, for every chain ``<name>``, ``POST
/<name>/text`` (``text``) and ``WebSocket /<name>/ws`` (``websocket``), and the Gradio UI
at ``/ui/`` (``ui``), all behind the same access guard as the LangServe routes.
``mount_client_faces`` adds the OpenAI-compatible ``/v1`` (``openai_compat``) and the
Vercel AI SDK's ``/<name>/ai-sdk`` (``ai_sdk``, on the resumable runs).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from ..error_responses import ERROR_MARK as ERROR
from ..runs import RunManager
from ._face import TRUNCATED, Face
from .ai_sdk import add_ai_sdk_routes
from .openai_compat import add_openai_routes
from .text import TEXT_MEDIA_TYPE, text_endpoint
from .ui import chat_fn, mount_ui
from .websocket import END, STOPPED, socket_endpoint

__all__ = ["END", "ERROR", "STOPPED", "TEXT_MEDIA_TYPE", "TRUNCATED", "chat_fn",
           "mount_client_faces", "mount_faces"]

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


def mount_client_faces(app: FastAPI, chains: dict[str, Runnable[Any, str]], *,
                       model: BaseChatModel, model_names: list[str], runs: RunManager) -> None:
    """Add ``/v1/models`` and ``/v1/chat/completions`` (the chains, and ``model_names``
    answered by ``model``) and ``/<name>/ai-sdk`` for every chain (answers kept in
    ``runs``), behind the request rules (key, quotas; as ``mount_faces``)."""
    faces = [Face(name, chain) for name, chain in chains.items()]
    add_openai_routes(app, faces, model, model_names)
    add_ai_sdk_routes(app, faces, runs)
