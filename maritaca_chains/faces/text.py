"""``POST /<name>/text``: the chain's answer as streamed plain text (``curl -N``).

Body (``content-type: application/json``): the chain's input, ``{"topic": "Brasil"}``,
or LangServe's envelope with the run's choices, ``{"input": {"topic": "Brasil"},
"config": {"configurable": {"model": ..., "temperature": 0.3, "max_tokens": 200}}}``
(checked like on LangServe's routes). Answer: ``text/plain; charset=utf-8``, the text as
the model writes it. Bad input or config is a 422 naming the field (415 without the JSON
content type, checked before any route). The caller's key and quota are the
request rules' (``AdmittedCaller``). An upstream failure before the first byte is a JSON error with its
status, like the other routes; after it, the text ends with the line
``\\n[ERROR] <message>``. An answer the token limit cut ends with the line
``\\n[TRUNCATED] a resposta chegou a max_tokens=N e foi cortada; ...`` (the messages in
pt-BR, or English with ``Accept-Language: en``). Hanging up stops the run and its
upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from ..error_responses import error_json, error_line
from ..event_stream import ClientHungUp, before_hang_up
from ..input_limits import limits_of
from ..ledger import Ledger
from ..messages import DEFAULT_LANGUAGE, Language, language
from ..request_rules import AdmittedCaller, RunRequest, rules_of
from ._face import TRUNCATED, Face

__all__ = ["TEXT_MEDIA_TYPE", "text_endpoint"]

logger = logging.getLogger("maritaca_chains.faces")

TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


class _ClosingStreamingResponse(StreamingResponse):
    """Streams ``first`` then ``rest``, and closes ``rest`` however the response ends
    (a client hanging up cancels the send), so the upstream request ends with it."""

    def __init__(self, first: str, rest: AsyncGenerator[str, None]) -> None:
        self.rest = rest
        super().__init__(self._body(first, rest), media_type=TEXT_MEDIA_TYPE)

    @staticmethod
    async def _body(first: str, rest: AsyncGenerator[str, None]) -> AsyncIterator[str]:
        if first:
            yield first
        async for chunk in rest:
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.rest.aclose()


async def _text_with_end_lines(face: Face, request: RunRequest, ledger: Ledger,
                               lang: Language = DEFAULT_LANGUAGE) -> AsyncGenerator[str, None]:
    """``face.chunks``; once a chunk went out, an error ends the text with an [ERROR] line;
    an answer cut by the token limit ends with a [TRUNCATED] line."""
    started = False
    try:
        async with aclosing(face.chunks(request, ledger)) as chunks:
            async for chunk in chunks:
                started = True
                yield chunk
    except Exception as exc:
        if not started:
            raise
        logger.error("/%s/text failed mid-stream: %s: %s", face.name, type(exc).__name__, exc)
        yield error_line(exc, lang)
        return
    if (run := ledger.last) is not None and run.cut:
        yield f"\n{TRUNCATED} {run.cut_note(lang)}\n"


def text_endpoint(face: Face) -> Callable[..., Any]:
    async def text(request: Request, caller: AdmittedCaller) -> Response:
        try:
            parsed = face.parse_json_body(await request.body(),
                                          limits_of(request.app).max_json_depth)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                          for e in exc.errors(include_url=False)]) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        ledger = rules_of(request).accounts.open(request, face.name)
        lang = language(request.headers)
        chunks = _text_with_end_lines(face, parsed, ledger, lang)
        try:
            first = await before_hang_up(anext(chunks, ""), request.receive)
        except ClientHungUp:  # before the first text: the run stopped with the request
            await chunks.aclose()
            return Response(status_code=204)
        except Exception as exc:
            logger.error("/%s/text failed: %s: %s", face.name, type(exc).__name__, exc)
            return error_json(exc, lang)
        return _ClosingStreamingResponse(first, chunks)

    text.__doc__ = (f"The {face.name} chain's answer as plain text, streamed "
                    f"(``curl -N``). Body: the chain input as JSON, or "
                    f'``{{"input": ..., "config": {{"configurable": {{...}}}}}}``.')
    return text
