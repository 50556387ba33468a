"""The check, run once at import, that ChatMaritaca's direct run is langchain-core's run.

``maritaca._model_run`` re-does what ``BaseChatModel.stream``/``astream`` do, from
langchain-core members that a release may change without notice. ``probe_matches``
streams a probe model (chunks as ChatMaritaca's transport builds them: text, the
closing chunk with usage; once whole, once broken off) through the direct run and
through langchain-core's, sync and async, and compares every chunk and every callback
(names, run tree, arguments). Tracing to LangSmith is off for these runs; the async ones
run on an event loop of their own, in a short-lived thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langsmith import tracing_context
from pydantic import BaseModel

from . import _langchain_private as private
from ._wire import StreamAssembler

__all__ = ["probe_matches"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INPUT = "Olá"


class _Broken(Exception):
    """The probe stream's failure."""


def _answer(broken: bool) -> Iterator[ChatGenerationChunk]:
    assembler = StreamAssembler(requested_model="probe")
    for text in ("Olá", ", mundo"):
        chunk = assembler.feed({"id": "p1", "model": "probe",
                                "choices": [{"delta": {"content": text}}]})
        assert chunk is not None
        yield chunk
    if broken:
        raise _Broken("broken off")
    assembler.feed({"choices": [{"delta": {}, "finish_reason": "stop"}], "model": "probe"})
    assembler.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    yield assembler.last_chunk()


class _ProbeModel(BaseChatModel):
    broken: bool = False

    @property
    def _llm_type(self) -> str:
        return "maritaca-probe"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        return _answer(self.broken)

    async def _astream(self, messages: list[BaseMessage], stop: Any = None,
                       run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in _answer(self.broken):
            yield chunk


class _Recorder(BaseCallbackHandler):
    """Every model callback and its arguments (a sync handler, run in place)."""

    run_inline = True

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("start", args, kwargs))

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("token", args, kwargs))

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("end", args, kwargs))

    def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("error", args, kwargs))


class _AsyncTokens(AsyncCallbackHandler):
    """An async token handler, which langchain-core gathers (not run in place)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.events.append((token, kwargs))


def _normalised(value: Any, seen: dict[str, int] | None = None) -> Any:
    """``value`` as plain data, each run id replaced by its order of appearance."""
    seen = {} if seen is None else seen
    if isinstance(value, UUID):
        value = str(value)
    if isinstance(value, str):
        return _UUID.sub(lambda m: f"#{seen.setdefault(m.group(), len(seen))}", value)
    if isinstance(value, BaseModel):
        return type(value).__name__, _normalised(dict(value), seen)
    if isinstance(value, dict):
        return {key: _normalised(item, seen) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(item, seen) for item in value]
    if isinstance(value, BaseException):
        return type(value).__name__, str(value)
    return value


def _config() -> tuple[dict[str, Any], _Recorder, _AsyncTokens]:
    recorder, tokens = _Recorder(), _AsyncTokens()
    return ({"callbacks": [recorder, tokens], "tags": ["probe"], "metadata": {"probe": 1},
             "run_name": "probe"}, recorder, tokens)


# _sync_runs and _async_runs are deliberate sync/async twins.
def _sync_runs(stream: Callable[..., Iterator[Any]]) -> list[Any]:
    runs = []
    for broken in (False, True):
        model = _ProbeModel(broken=broken)
        config, recorder, tokens = _config()
        chunks: list[Any] = []
        try:
            with tracing_context(enabled=False):
                chunks.extend(stream(model, config))
        except _Broken as error:
            chunks.append(error)
        runs.append(_normalised((chunks, recorder.events, tokens.events)))
    return runs


async def _async_runs(astream: Callable[..., AsyncIterator[Any]]) -> list[Any]:
    runs = []
    for broken in (False, True):
        model = _ProbeModel(broken=broken)
        config, recorder, tokens = _config()
        chunks: list[Any] = []
        try:
            with tracing_context(enabled=False):
                chunks.extend([chunk async for chunk in astream(model, config)])
        except _Broken as error:
            chunks.append(error)
        runs.append(_normalised((chunks, recorder.events, tokens.events)))
    return runs


def _own_loop(run: Callable[[], Any]) -> Any:
    """``asyncio.run(run())`` in a thread (the importer may be inside a running loop);
    None if it fails."""
    result: list[Any] = [None]

    def target() -> None:
        try:
            result[0] = asyncio.run(run())
        except Exception:  # noqa: BLE001 - a failed probe means: langchain-core's path
            result[0] = None

    thread = threading.Thread(target=target, name="maritaca-probe")
    thread.start()
    thread.join()
    return result[0]


def probe_matches(stream: Callable[..., Iterator[Any]],
                  astream: Callable[..., AsyncIterator[Any]]) -> bool:
    """Whether ``stream``/``astream(model, messages, config, stop, kwargs)`` report
    exactly what ``BaseChatModel.stream``/``astream`` report."""
    try:
        def direct(model: BaseChatModel, config: Any) -> Iterator[Any]:
            return stream(model, private.input_messages(model, _INPUT), config, None, {})

        def adirect(model: BaseChatModel, config: Any) -> AsyncIterator[Any]:
            return astream(model, private.input_messages(model, _INPUT), config, None, {})

        def reference(model: BaseChatModel, config: Any) -> Iterator[Any]:
            return BaseChatModel.stream(model, _INPUT, config)

        def areference(model: BaseChatModel, config: Any) -> AsyncIterator[Any]:
            return BaseChatModel.astream(model, _INPUT, config)

        if _sync_runs(direct) != _sync_runs(reference):
            return False
        direct_runs = _own_loop(lambda: _async_runs(adirect))
        return direct_runs is not None and direct_runs == _own_loop(
            lambda: _async_runs(areference))
    except Exception:  # noqa: BLE001 - a failed probe means: langchain-core's path
        return False
