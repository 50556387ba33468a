"""ChatMaritaca's ``stream`` and ``astream`` as one chat-model run with cheap per-token work.

langchain-core's ``BaseChatModel.stream``/``astream`` do two costly things per token:

- they tell every callback handler about it through the generic dispatcher (async: a
  coroutine per handler and an ``asyncio.gather`` per token, even for the handlers
  that ignore tokens, which is most of them: they watch runs start and end);
- they keep every chunk until the run ends, to add them up for ``on_llm_end``. Ten
  thousand live chunk objects make the cyclic garbage collector walk them again and
  again: more than half of ``stream()``'s CPU per chunk (bench/bench_core_stream.py).

``stream_run``/``astream_run`` are the same run: the same ``on_chat_model_start``
(serialized model, messages, invocation params, options, metadata), the same chunks with
the run's message id and metadata, the same ``on_llm_end``/``on_llm_error`` results. The
token event goes only to the handlers that define ``on_llm_new_token`` (sync: through
langchain-core's dispatcher; async: called as that dispatcher calls them), and the
chunks are added up as they come, ``_MERGE_EVERY`` at a time (the same sum).

``eligible`` says when this path applies; any other call (v1 output, a rate limiter,
structured output, content blocks) takes langchain-core's own method. So does every
call when ``DIRECT`` is false: it is checked once, at import, that langchain-core's
private members (``maritaca._langchain_private``) are there and that a direct run on
a probe model reports exactly what langchain-core's reports.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.utils.utils import LC_ID_PREFIX

from . import _langchain_private as private
from ._model_run_probe import probe_matches
from .run_end import report_end

if TYPE_CHECKING:
    from .chat_model import ChatMaritaca

__all__ = ["DIRECT", "astream_run", "eligible", "stream_run"]

logger = logging.getLogger("langchain_core.callbacks.manager")  # where langchain-core logs these

_STRUCTURED = ("ls_structured_output_format", "structured_output_format")
_NO_TOKEN_EVENT = (BaseCallbackHandler.on_llm_new_token, AsyncCallbackHandler.on_llm_new_token)
# How many chunks wait before they are added up: few enough that the garbage collector
# never has many to walk, enough that adding up costs next to nothing per chunk.
_MERGE_EVERY = 128


def eligible(model: BaseChatModel, messages: list[BaseMessage], kwargs: dict[str, Any], *,
             async_api: bool) -> bool:
    """Whether the direct run reproduces langchain-core's run for this call."""
    return (model.output_version != "v1" and model.rate_limiter is None
            and not any(key in kwargs for key in _STRUCTURED)
            and all(isinstance(message.content, str) for message in messages)
            and private.streams(model, kwargs, async_api=async_api))


def stream_run(model: ChatMaritaca, input: LanguageModelInput, config: RunnableConfig | None,
               stop: list[str] | None, kwargs: dict[str, Any],
               langchain_stream: Callable[..., Iterator[AIMessageChunk]],
               ) -> Iterator[AIMessageChunk]:
    """``BaseChatModel.stream`` (``langchain_stream``, which takes the calls that are not
    ``eligible``, and all of them unless ``DIRECT``), see the module docstring."""
    messages = _messages(model, input)
    if messages is not None and eligible(model, messages, kwargs, async_api=False):
        return _stream(model, messages, config, stop, kwargs)
    return langchain_stream(input, config, stop=stop, **kwargs)


def astream_run(model: ChatMaritaca, input: LanguageModelInput, config: RunnableConfig | None,
                stop: list[str] | None, kwargs: dict[str, Any],
                langchain_astream: Callable[..., AsyncIterator[AIMessageChunk]],
                ) -> AsyncIterator[AIMessageChunk]:
    """``BaseChatModel.astream``, as ``stream_run`` is ``stream``."""
    messages = _messages(model, input)
    if messages is not None and eligible(model, messages, kwargs, async_api=True):
        return _astream(model, messages, config, stop, kwargs)
    return langchain_astream(input, config, stop=stop, **kwargs)


def _messages(model: BaseChatModel, input: LanguageModelInput) -> list[BaseMessage] | None:
    """The input's messages when the direct run is on; None otherwise, and for input
    langchain-core refuses (its own generator then raises, when iterated)."""
    if not DIRECT:
        return None
    try:
        return private.input_messages(model, input)
    except Exception:  # noqa: BLE001 - langchain-core's generator raises it, as it would
        return None


# _stream and _astream are deliberate sync/async twins: the same run, line for line; a
# change to one is a change to both.
def _stream(model: BaseChatModel, messages: list[BaseMessage], config: RunnableConfig | None,
            stop: list[str] | None, kwargs: dict[str, Any]) -> Iterator[AIMessageChunk]:
    config = ensure_config(config)
    start = private.run_start(model, config, stop, kwargs)
    manager = CallbackManager.configure(*start.configure,
                                        langsmith_inheritable_metadata=start.langsmith_metadata)
    (run,) = manager.on_chat_model_start(
        start.serialized, [messages], invocation_params=start.params, options=start.options,
        name=config.get("run_name"), run_id=config.pop("run_id", None), batch_size=1)
    on_token = run.on_llm_new_token if _token_takers(run.handlers) else None
    message_id = f"{LC_ID_PREFIX}-{run.run_id}"
    generation = _Generation()
    try:
        chunk = None
        for chunk in model._stream(messages, stop=stop, **kwargs):
            message = _with_run_metadata(chunk, message_id)
            if on_token is not None:
                on_token(message.content, chunk=chunk)
            generation.add(chunk)
            yield message  # type: ignore[misc]
        if (closing := _closing_chunk(chunk, message_id)) is not None:
            if on_token is not None:
                on_token("", chunk=closing)
            yield closing.message  # type: ignore[misc]
    except BaseException as error:
        run.on_llm_error(error, response=generation.failed(error))
        raise
    if (result := generation.result()) is None:
        empty = ValueError("No generation chunks were returned")
        run.on_llm_error(empty, response=LLMResult(generations=[]))
        raise empty
    run.on_llm_end(result)


async def _astream(model: BaseChatModel, messages: list[BaseMessage],
                   config: RunnableConfig | None, stop: list[str] | None,
                   kwargs: dict[str, Any]) -> AsyncIterator[AIMessageChunk]:
    config = ensure_config(config)
    start = private.run_start(model, config, stop, kwargs)
    manager = AsyncCallbackManager.configure(
        *start.configure, langsmith_inheritable_metadata=start.langsmith_metadata)
    (run,) = await manager.on_chat_model_start(
        start.serialized, [messages], invocation_params=start.params, options=start.options,
        name=config.get("run_name"), run_id=config.pop("run_id", None), batch_size=1)
    on_token = _async_token_event(run)
    message_id = f"{LC_ID_PREFIX}-{run.run_id}"
    generation = _Generation()
    try:
        chunk = None
        async for chunk in model._astream(messages, stop=stop, **kwargs):
            message = _with_run_metadata(chunk, message_id)
            if on_token is not None:
                await on_token(message.content, chunk)
            generation.add(chunk)
            yield message  # type: ignore[misc]
        if (closing := _closing_chunk(chunk, message_id)) is not None:
            if on_token is not None:
                await on_token("", closing)
            yield closing.message  # type: ignore[misc]
    except BaseException as error:
        await report_end(run.on_llm_error, error, response=generation.failed(error))
        raise
    if (result := generation.result()) is None:
        empty = ValueError("No generation chunks were returned")
        await report_end(run.on_llm_error, empty, response=LLMResult(generations=[]))
        raise empty
    await report_end(run.on_llm_end, result)


def _with_run_metadata(chunk: ChatGenerationChunk, message_id: str) -> BaseMessage:
    """The chunk's message with the run's id (if it has none) and the chunk's
    generation info in its response metadata, as langchain-core yields it."""
    message = chunk.message
    if message.id is None:
        message.id = message_id
    if chunk.generation_info:  # else langchain-core's merge is an equal copy: skipped
        message.response_metadata = {**chunk.generation_info, **message.response_metadata}
    return message


def _closing_chunk(chunk: ChatGenerationChunk | None,
                   message_id: str) -> ChatGenerationChunk | None:
    """The empty closing chunk langchain-core adds when the last one was not marked
    last (ChatMaritaca's always is); None when no chunk came or none is needed."""
    if chunk is None or not isinstance(chunk.message, AIMessageChunk) \
            or chunk.message.chunk_position:
        return None
    return ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last",
                                                      id=message_id))


def _calls_tools(messages: Iterable[BaseMessage]) -> bool:
    """Whether a tool call streams in: then the chunks are added up only at the end, as
    langchain-core does (each addition parses the call's arguments so far again)."""
    return any(getattr(message, "tool_call_chunks", None) for message in messages)


class _Generation:
    """The run's chunks, added up ``_MERGE_EVERY`` at a time as they come (unless a tool
    call streams in): the same sum as langchain-core's ``merge_chat_generation_chunks``
    of all of them at the end."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[ChatGenerationChunk] = []

    def add(self, chunk: ChatGenerationChunk) -> None:
        chunks = self.chunks
        chunks.append(chunk)
        if len(chunks) == _MERGE_EVERY and not _calls_tools(chunk.message for chunk in chunks):
            self.chunks = [merge_chat_generation_chunks(chunks)]  # type: ignore[list-item]

    def result(self) -> LLMResult | None:
        """``on_llm_end``'s result; None when no chunk came."""
        merged = merge_chat_generation_chunks(self.chunks)
        return None if merged is None else LLMResult(generations=[[merged]])

    def failed(self, error: BaseException) -> LLMResult:
        """``on_llm_error``'s result: what came, and what the error tells of the HTTP
        response, as langchain-core reports it."""
        merged = merge_chat_generation_chunks(self.chunks)
        failed: list[Any] = _error_generations(error)
        return LLMResult(generations=[[merged], failed] if merged else [failed])


def _token_takers(handlers: list[BaseCallbackHandler]) -> list[BaseCallbackHandler]:
    """The handlers that do something with a token (the others' event is a no-op)."""
    return [h for h in handlers if not h.ignore_llm
            and type(h).on_llm_new_token not in _NO_TOKEN_EVENT]


def _async_token_event(run: AsyncCallbackManagerForLLMRun,
                       ) -> Callable[[Any, ChatGenerationChunk], Awaitable[None]] | None:
    """The run's ``on_llm_new_token``, for only the handlers that define one; None if
    none does. Each is called as langchain-core's dispatcher calls it: in place when
    ``run_inline``, the others together (``gather``), a sync one off the event loop
    unless inline; errors are logged, or raised for ``raise_error`` handlers."""
    handlers = _token_takers(run.handlers)
    if not handlers:
        return None
    ids: dict[str, Any] = {"run_id": run.run_id, "parent_run_id": run.parent_run_id,
                           "tags": run.tags}
    # (handler, its event, whether it is a coroutine function): checked once per run
    inline = [(h, h.on_llm_new_token, inspect.iscoroutinefunction(h.on_llm_new_token))
              for h in handlers if h.run_inline]
    others = [h for h in handlers if not h.run_inline]

    def failed(handler: BaseCallbackHandler, error: Exception) -> None:
        if handler.raise_error:
            raise error
        logger.warning("Error in %s.on_llm_new_token callback: %s",
                       type(handler).__name__, repr(error))

    async def call_other(handler: BaseCallbackHandler, token: Any,
                         chunk: ChatGenerationChunk) -> None:
        try:
            event = handler.on_llm_new_token
            if inspect.iscoroutinefunction(event):
                await event(token, chunk=chunk, **ids)
            else:
                await asyncio.get_running_loop().run_in_executor(None, functools.partial(
                    copy_context().run, event, token, chunk=chunk, **ids))
        except Exception as error:  # noqa: BLE001 - logged or raised, as langchain-core does
            failed(handler, error)

    async def on_token(token: Any, chunk: ChatGenerationChunk) -> None:
        for handler, event, is_coroutine in inline:
            try:
                if is_coroutine:
                    await event(token, chunk=chunk, **ids)
                else:
                    event(token, chunk=chunk, **ids)
            except Exception as error:  # noqa: BLE001 - logged or raised, as langchain-core does
                failed(handler, error)
        if others:
            await asyncio.gather(*(call_other(handler, token, chunk) for handler in others))

    return on_token


def _error_generations(error: BaseException) -> list[ChatGeneration]:
    """What langchain-core reports of a failed call's HTTP response, if it has one."""
    if not hasattr(error, "response"):
        return []
    response = error.response
    metadata: dict[str, Any] = {}
    if hasattr(response, "json"):
        try:
            metadata["body"] = response.json()
        except Exception:  # noqa: BLE001 - as langchain-core: the text, else nothing
            metadata["body"] = getattr(response, "text", None)
    if hasattr(response, "headers"):
        metadata["headers"] = dict(response.headers)
    if hasattr(response, "status_code"):
        metadata["status_code"] = response.status_code
    if hasattr(error, "request_id"):
        metadata["request_id"] = error.request_id
    return [ChatGeneration(message=AIMessage(content="", response_metadata=metadata))]


DIRECT = private.PRESENT and probe_matches(_stream, _astream)
"""Whether ``stream_run``/``astream_run`` take the direct run (checked once, here)."""
