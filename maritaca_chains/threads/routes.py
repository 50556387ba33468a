"""The threads API: a caller's conversations, per access key.

- ``POST /chat/threads`` (body optional: ``{"title": "..."}``) → 201 ``{"thread_id", ...}``
- ``GET /chat/threads?limit=20&offset=0`` → ``{"threads": [...], "total", "limit",
  "offset"}``: title, created/updated times, message count; most recently updated first
- ``GET /chat/threads/<id>`` → the thread and its ``messages`` (role, text, time,
  ``complete``; an answer's run id, outcome, tokens and cost in BRL)
- ``DELETE /chat/threads/<id>`` → 204

A thread belongs to the key that made it (the browser's login counts as its key):
another key's gets 404, as an unknown one does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..messages import language
from ..refusals import Refusal
from ..security import caller_label
from .store import TITLE_LENGTH, ThreadNotFound, ThreadStore

__all__ = ["OFFSET_LIMIT", "PAGE_LIMIT", "add_thread_routes"]

PAGE_LIMIT = 100
OFFSET_LIMIT = 10**9  # past any real list; the databases' integers end at 2**63
THREADS_PATH = "/chat/threads"


class NewThread(BaseModel):
    """A new conversation: its title, optional."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=TITLE_LENGTH,
                       description="Para as pessoas: o nome da conversa na lista")


def add_thread_routes(app: FastAPI, store: ThreadStore, guard: Depends) -> None:
    """The four routes, behind ``guard`` (the access guard)."""

    @app.post(THREADS_PATH, dependencies=[guard], status_code=201, tags=["threads"])
    async def create_thread(request: Request, body: NewThread) -> JSONResponse:
        """Start a conversation (body ``{}`` or ``{"title": "..."}``); send its
        ``thread_id`` as ``config.configurable.thread_id`` to the chat chain."""
        owner = caller_label(request)
        thread_id = await store.create(owner, body.title.strip())
        thread = await store.get(owner, thread_id)
        thread.pop("messages")
        return JSONResponse(thread, status_code=201,
                            headers={"Location": f"{THREADS_PATH}/{thread_id}"})

    @app.get(THREADS_PATH, dependencies=[guard], tags=["threads"])
    async def list_threads(request: Request, limit: int = 20, offset: int = 0
                           ) -> dict[str, Any]:
        """The caller's conversations, most recently updated first."""
        if not (1 <= limit <= PAGE_LIMIT and 0 <= offset <= OFFSET_LIMIT):
            raise Refusal(422, "threads_page", language(request.headers), limit=PAGE_LIMIT,
                          offset=OFFSET_LIMIT)
        found, total = await store.list(caller_label(request), limit=limit, offset=offset)
        return {"threads": found, "total": total, "limit": limit, "offset": offset}

    @app.get(THREADS_PATH + "/{thread_id}", dependencies=[guard], tags=["threads"])
    async def get_thread(request: Request, thread_id: str) -> dict[str, Any]:
        """One conversation and its messages, oldest first."""
        try:
            return await store.get(caller_label(request), thread_id)
        except ThreadNotFound:
            raise Refusal(404, "thread_not_found", language(request.headers),
                          thread_id=thread_id) from None

    @app.delete(THREADS_PATH + "/{thread_id}", dependencies=[guard], status_code=204,
                tags=["threads"])
    async def delete_thread(request: Request, thread_id: str) -> Response:
        """Remove a conversation and its messages."""
        try:
            await store.delete(caller_label(request), thread_id)
        except ThreadNotFound:
            raise Refusal(404, "thread_not_found", language(request.headers),
                          thread_id=thread_id) from None
        return Response(status_code=204)
