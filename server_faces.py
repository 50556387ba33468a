"""The chains' other streaming faces: plain text over HTTP, a WebSocket, and a Gradio UI.

``server.create_app`` mounts them with ``mount_faces(app, chains, guard)``, behind the same
access guard as the LangServe routes. For every chain ``<name>``:

``POST /<name>/text``
    Body: the chain's input as JSON (the object LangServe takes as ``input``), sent with
    ``content-type: application/json``. Answer: ``text/plain; charset=utf-8``, the text as
    the model writes it::

        curl -N -X POST localhost:8000/story/text -H 'content-type: application/json' \\
             -d '{"topic": "Brasil"}'

    Bad input is a 422 naming the field (415 without the JSON content type). An upstream
    failure before the first byte is a JSON error with its status, like the other routes
    (``{"detail", "type"[, "retry_after"]}``); after it, the text ends with the line
    ``\\n[ERROR] <message>``. Hanging up stops the run and its upstream request.

``WebSocket /<name>/ws``
    One connection, many runs. Client frames (text):

    - a JSON object (first non-blank character ``{``): the chain input, e.g.
      ``{"topic": "Brasil", "style": "cordel"}``;
    - ``stop`` or ``{"action": "stop"}``: stop the run now streaming (ignored when idle);
    - any other text: the chain's main field (story ``topic``, qa ``question``,
      summarize ``text``), e.g. ``Brasil``.

    For every input, in the order received, the server sends the answer's chunks as text
    frames, then ``[STOPPED]`` if a stop ended it or ``[ERROR] {"type", "status_code",
    "message"[, "retry_after", "errors"]}`` if it failed, then always ``[END]``. Inputs
    sent during a run wait their turn; the connection stays open after errors; closing it
    stops the run. Refused connections get the guard's HTTP 401/403 (403 too for a
    browser ``Origin`` other than this server, so other sites cannot drive it)::

        async with websockets.connect("ws://127.0.0.1:8000/story/ws") as ws:
            await ws.send("Brasil")
            while (frame := await ws.recv()) != "[END]":
                print(frame, end="", flush=True)

``/ui``
    A Gradio chat (when gradio is installed): pick the chain, type the main field's text;
    Stop cancels the run and its upstream request. Each message is a fresh run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, suppress
from typing import Any, cast
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from chains import CHAINS
from maritaca._upstream import closing_upstreams

__all__ = ["END", "ERROR", "STOPPED", "TEXT_MEDIA_TYPE", "chat_fn", "mount_faces"]

logger = logging.getLogger("maritaca_chains.faces")

TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
END, STOPPED, ERROR = "[END]", "[STOPPED]", "[ERROR]"

Guard = DependsParam | Callable[..., Any]


def _describe(exc: BaseException) -> dict[str, Any]:
    from server import describe_error  # lazy: server imports this module

    return describe_error(exc)


class _Face:
    """One chain, with its input type and main field."""

    def __init__(self, name: str, chain: Runnable[Any, str]) -> None:
        self.name, self.chain = name, chain
        self.input_type = cast(type[BaseModel], chain.get_input_schema())
        spec = CHAINS.get(name)
        self.main_field = spec.main_field if spec and spec.main_field else next(
            n for n, f in self.input_type.model_fields.items() if f.is_required())

    def parse(self, text: str) -> BaseModel:
        """A WebSocket/UI message as the chain input (ValueError/ValidationError if bad)."""
        if text.lstrip().startswith("{"):
            return self.input_type.model_validate_json(text)
        return self.input_type.model_validate({self.main_field: text})

    async def chunks(self, value: BaseModel) -> AsyncGenerator[str, None]:
        """The run's non-empty chunks; the upstream stream is closed however this ends
        (also when a cancellation strands langchain-core's inner generators, as Gradio's
        Stop can: ``closing_upstreams`` closes what the run opened)."""
        stream = cast(AsyncGenerator[str, None], self.chain.astream(value))  # an async gen
        with closing_upstreams():
            async with aclosing(stream):
                async for chunk in stream:
                    if chunk:
                        yield chunk


# ------------------------------------------------------------------------ plain text


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


async def _text_with_error_line(face: _Face, value: BaseModel) -> AsyncGenerator[str, None]:
    """``face.chunks``; once a chunk went out, an error ends the text with an [ERROR] line."""
    started = False
    try:
        async with aclosing(face.chunks(value)) as chunks:
            async for chunk in chunks:
                started = True
                yield chunk
    except Exception as exc:
        if not started:
            raise
        logger.error("/%s/text failed mid-stream: %s: %s", face.name, type(exc).__name__, exc)
        yield f"\n{ERROR} {_describe(exc)['message']}\n"


def _error_response(exc: Exception) -> JSONResponse:
    error = _describe(exc)
    body = {"detail": error["message"], "type": error["type"]}
    headers = None
    if "retry_after" in error:
        body["retry_after"] = error["retry_after"]
        headers = {"Retry-After": f"{error['retry_after']:g}"}
    return JSONResponse(body, status_code=error["status_code"], headers=headers)


def _text_endpoint(face: _Face) -> Callable[[Request], Any]:
    async def text(request: Request) -> StreamingResponse | JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise HTTPException(415, "Send the chain input as JSON with "
                                     "content-type: application/json")
        try:
            value = face.input_type.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                          for e in exc.errors(include_url=False)]) from exc
        chunks = _text_with_error_line(face, value)
        try:
            first = await anext(chunks, "")
        except Exception as exc:
            logger.error("/%s/text failed: %s: %s", face.name, type(exc).__name__, exc)
            return _error_response(exc)
        return _ClosingStreamingResponse(first, chunks)

    text.__doc__ = (f"The {face.name} chain's answer as plain text, streamed "
                    f"(``curl -N``). Body: the chain input as JSON.")
    return text


# ------------------------------------------------------------------------- WebSocket


async def _admit(ws: WebSocket, check: Callable[..., Any]) -> bool:
    """Run the HTTP access guard on the handshake; refuse with its status if it fails.

    Browsers send ``Origin`` and do not apply CORS to WebSockets: a page from another site
    must not drive this server with the user's loopback address or cookie.
    """
    try:
        origin = ws.headers.get("origin")
        if origin and urlsplit(origin).netloc != ws.headers.get("host"):
            raise HTTPException(403, "Cross-site WebSocket refused: Origin is not this server")
        result = check(Request({**ws.scope, "type": "http", "method": "GET"}))
        if inspect.isawaitable(result):
            await result
    except HTTPException as exc:
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers))
        else:
            await ws.close(1008, str(exc.detail).encode()[:120].decode(errors="ignore"))
        return False
    return True


def _error_frame(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False)
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}"
                          for e in errors)
        error: dict[str, Any] = {"type": "invalid_input", "status_code": 422,
                                 "message": f"Invalid input: {where}", "errors": errors}
    elif isinstance(exc, ValueError):  # JSON that is no object, and the like
        error = {"type": "invalid_input", "status_code": 422, "message": str(exc)}
    else:
        error = _describe(exc)
    return f"{ERROR} {json.dumps(error, ensure_ascii=False, default=str)}"


async def _answer(ws: WebSocket, face: _Face, text: str) -> None:
    """One run: its chunks, or an [ERROR] frame. Send failures propagate (client gone)."""
    try:
        value = face.parse(text)
    except ValueError as exc:
        await ws.send_text(_error_frame(exc))
        return
    async with aclosing(face.chunks(value)) as chunks:
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except Exception as exc:
                logger.error("/%s/ws run failed: %s: %s", face.name, type(exc).__name__, exc)
                await ws.send_text(_error_frame(exc))
                return
            await ws.send_text(chunk)


def _is_stop(text: str) -> bool:
    if text.strip().lower() == "stop":
        return True
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("action") == "stop"


async def _session(ws: WebSocket, face: _Face) -> None:
    """Read frames; a worker answers inputs in order; ``stop`` cancels the current run."""
    inputs: asyncio.Queue[str] = asyncio.Queue()
    running: list[asyncio.Task[None]] = []

    async def work() -> None:
        while True:
            run = asyncio.create_task(_answer(ws, face, await inputs.get()))
            running[:] = [run]
            try:
                await asyncio.wait({run})
            finally:
                running.clear()
                if not run.done():  # the session ends: stop the run before returning
                    run.cancel()
                    await asyncio.wait({run})
            stopped = run.cancelled()
            failed = not stopped and run.exception() is not None  # a send failed
            # Drop the task at once: a cancelled task keeps its traceback, whose frames keep
            # the chain's generators, and so the upstream request, alive.
            del run
            if failed:
                with suppress(Exception):  # the client is most likely gone already
                    await ws.close(1011, "internal error")
                return
            if stopped:
                await ws.send_text(STOPPED)
            await ws.send_text(END)

    worker = asyncio.create_task(work())
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            if _is_stop(text):
                if running:  # (no local name: it would keep the cancelled task alive)
                    running[0].cancel()
            else:
                inputs.put_nowait(text)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


def _socket_endpoint(face: _Face, check: Callable[..., Any]
                     ) -> Callable[[WebSocket], Any]:
    async def socket(ws: WebSocket) -> None:
        if await _admit(ws, check):
            await ws.accept()
            await _session(ws, face)

    return socket


# -------------------------------------------------------------------------------- UI


def chat_fn(chains: dict[str, Runnable[Any, str]]
            ) -> Callable[[str, list[Any], str], AsyncIterator[str]]:
    """The streaming function the Gradio chat calls: ``(message, history, chain_name)``
    yields the growing answer. Gradio's Stop cancels it, which closes the upstream stream."""
    faces = {name: _Face(name, chain) for name, chain in chains.items()}

    async def respond(message: str, history: list[Any], chain_name: str) -> AsyncIterator[str]:
        import gradio as gr

        face = faces[chain_name]
        answer = ""
        try:
            async with aclosing(face.chunks(face.parse(message))) as chunks:
                async for chunk in chunks:
                    answer += chunk
                    yield answer
        except Exception as exc:
            logger.error("/ui run failed: %s: %s", type(exc).__name__, exc)
            raise gr.Error(_describe(exc)["message"]) from exc

    return respond


def _mount_ui(app: FastAPI, chains: dict[str, Runnable[Any, str]],
              check: Callable[..., Any]) -> None:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: no phoning home
    try:
        import gradio as gr
    except ImportError:
        logger.warning("gradio is not installed: /ui not mounted "
                       "(pip install 'maritaca-chains[ui]')")
        return
    choices = [(CHAINS[n].title if n in CHAINS else n, n) for n in chains]
    demo = gr.ChatInterface(
        chat_fn(chains), title="maritaca-chains",
        description="Each message is a fresh run of the chosen chain; Stop stops it.",
        additional_inputs=[gr.Dropdown(choices, value=choices[0][1], label="Chain")],
        additional_inputs_accordion=gr.Accordion("Chain", open=True),
        analytics_enabled=False, concurrency_limit=None, api_name="chat")
    gr.mount_gradio_app(app, demo, path="/ui", ssr_mode=False,
                        app_kwargs={"dependencies": [Depends(check)]})


# ----------------------------------------------------------------------------- mount


def mount_faces(app: FastAPI, chains: dict[str, Runnable[Any, str]], guard: Guard, *,
                ui: bool = True) -> None:
    """Add ``/<name>/text`` and ``/<name>/ws`` for every chain, and (``ui``) the Gradio ``/ui``.

    ``guard`` is the access dependency (``Depends(...)`` or the callable itself) that
    protects the LangServe routes; it protects these too, WebSocket handshakes included.
    """
    check = guard.dependency if isinstance(guard, DependsParam) else guard
    if check is None:
        raise ValueError("mount_faces needs a guard dependency")
    for name, chain in chains.items():
        face = _Face(name, chain)
        app.add_api_route(f"/{name}/text", _text_endpoint(face), methods=["POST"],
                          dependencies=[Depends(check)], tags=[name],
                          summary=f"The {name} answer as streamed plain text",
                          response_class=StreamingResponse, response_model=None,
                          openapi_extra={"requestBody": {"required": True, "content": {
                              "application/json": {
                                  "schema": face.input_type.model_json_schema()}}}},
                          responses={200: {"content": {TEXT_MEDIA_TYPE: {}}}})
        app.add_api_websocket_route(f"/{name}/ws", _socket_endpoint(face, check))
    if chains and ui:
        _mount_ui(app, chains, check)
