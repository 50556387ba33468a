"""The check, run once at import, that ChatMaritaca's direct run is langchain-core's run.

``maritaca._model_run`` re-does what ``BaseChatModel.stream``/``astream`` do, from
langchain-core members that a release may change without notice. ``probe_matches``
streams a probe model (chunks as ChatMaritaca's transport builds them: text, then the
closing chunk with usage; once whole, once broken off) through the direct run and
through langchain-core's, sync and async, and compares every chunk and every callback
(names, run tree, arguments), with a sync handler run in place and an async one that
langchain-core gathers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from . import _langchain_private as private
from ._wire import StreamAssembler
from .run_probe import Recorder, plain, reports_match

__all__ = ["probe_matches"]

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


class _AsyncTokens(AsyncCallbackHandler):
    """An async token handler, which langchain-core gathers (not run in place)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.events.append((token, kwargs))


def _runs(stream: Callable[[BaseChatModel, Any], list[Any]]) -> list[Any]:
    """What ``stream(model, config)`` yields and reports, for a whole answer and for
    one that breaks off."""
    runs = []
    for broken in (False, True):
        recorder, tokens = Recorder(), _AsyncTokens()
        config = {"callbacks": [recorder, tokens], "tags": ["probe"],
                  "metadata": {"probe": 1}, "run_name": "probe"}
        chunks: list[Any] = []
        try:
            chunks.extend(stream(_ProbeModel(broken=broken), config))
        except _Broken as error:
            chunks.append(error)
        runs.append(plain((chunks, recorder.events, tokens.events)))
    return runs


def probe_matches(stream: Callable[..., Iterator[Any]],
                  astream: Callable[..., AsyncIterator[Any]]) -> bool:
    """Whether ``stream``/``astream(model, messages, config, stop, kwargs)`` report
    exactly what ``BaseChatModel.stream``/``astream`` report."""
    def messages(model: BaseChatModel) -> list[BaseMessage]:
        return private.input_messages(model, _INPUT)

    return reports_match(
        _runs,
        lambda model, config: stream(model, messages(model), config, None, {}),
        lambda model, config: BaseChatModel.stream(model, _INPUT, config),
        lambda model, config: astream(model, messages(model), config, None, {}),
        lambda model, config: BaseChatModel.astream(model, _INPUT, config))
