"""ChatMaritaca's ``astream`` as one chat-model run with a cheap token event.

langchain-core's ``BaseChatModel.astream`` tells every callback handler about every
token through its generic dispatcher: a coroutine per handler, a coroutine check per
call and an ``asyncio.gather`` per token, even for handlers that ignore tokens (most
do: they only watch runs start and end). Relaying hundreds of paced streams, that is
about a seventh of a server's CPU.

``astream_run`` is the same run: the same ``on_chat_model_start`` (serialized model,
messages, invocation params, options, metadata), the same chunks with the run's message
id and metadata, the same ``on_llm_end``/``on_llm_error`` results. Only the token event
differs in cost, not in effect: it goes to the handlers that define ``on_llm_new_token``
(and do not ignore LLM events), called as langchain-core calls them. ``eligible`` says
when this path applies; any other call (v1 output, a rate limiter, structured output,
content blocks) takes langchain-core's own ``astream``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult
from langchain_core.outputs.chat_generation import merge_chat_generation_chunks
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.utils.utils import LC_ID_PREFIX

if TYPE_CHECKING:
    from .chat_model import ChatMaritaca

__all__ = ["astream_run", "eligible"]

logger = logging.getLogger("langchain_core.callbacks.manager")  # where langchain-core logs these

_STRUCTURED = ("ls_structured_output_format", "structured_output_format")
# Fields langchain-core leaves out of the invocation params it traces (large ones).
_NOT_TRACED = frozenset({"tools", "functions", "messages", "response_format"})
_NO_TOKEN_EVENT = (BaseCallbackHandler.on_llm_new_token, AsyncCallbackHandler.on_llm_new_token)


def eligible(model: ChatMaritaca, messages: list[BaseMessage], kwargs: dict[str, Any]) -> bool:
    """Whether ``astream_run`` reproduces langchain-core's run for this call."""
    return (model.output_version != "v1" and model.rate_limiter is None
            and not any(key in kwargs for key in _STRUCTURED)
            and all(isinstance(message.content, str) for message in messages)
            and model._should_stream(async_api=True, **{**kwargs, "stream": True}))


async def astream_run(model: ChatMaritaca, input: LanguageModelInput,
                      config: RunnableConfig | None, stop: list[str] | None,
                      kwargs: dict[str, Any],
                      langchain_astream: Callable[..., AsyncIterator[AIMessageChunk]],
                      ) -> AsyncIterator[AIMessageChunk]:
    """``BaseChatModel.astream`` (``langchain_astream``, which takes the calls that are
    not ``eligible``), see the module docstring."""
    messages = model._convert_input(input).to_messages()
    if not eligible(model, messages, kwargs):
        async for ai_chunk in langchain_astream(input, config, stop=stop, **kwargs):
            yield ai_chunk
        return
    config = ensure_config(config)
    params = model._get_invocation_params(stop=stop, **kwargs)
    options = {"stop": stop, **{key: params[key] for key in kwargs if key in params}}
    manager = AsyncCallbackManager.configure(
        config.get("callbacks"), model.callbacks, model.verbose, config.get("tags"), model.tags,
        {**(config.get("metadata") or {}),
         **model._get_ls_params_with_defaults(stop=stop, **kwargs)},
        model.metadata,
        langsmith_inheritable_metadata={k: v for k, v in params.items() if k not in _NOT_TRACED})
    (run,) = await manager.on_chat_model_start(
        model._serialized, [messages], invocation_params=params, options=options,
        name=config.get("run_name"), run_id=config.pop("run_id", None), batch_size=1)
    on_token = _token_event(run)
    message_id = f"{LC_ID_PREFIX}-{run.run_id}"
    chunks: list[ChatGenerationChunk] = []
    try:
        chunk = None
        async for chunk in model._astream(messages, stop=stop, **kwargs):
            message = chunk.message
            if message.id is None:
                message.id = message_id
            message.response_metadata = {**(chunk.generation_info or {}),
                                         **message.response_metadata}
            if on_token is not None:
                await on_token(message.content, chunk)
            chunks.append(chunk)
            yield message  # type: ignore[misc]
        if chunk is not None and isinstance(chunk.message, AIMessageChunk) \
                and not chunk.message.chunk_position:
            last = AIMessageChunk(content="", chunk_position="last", id=message_id)
            if on_token is not None:
                await on_token("", ChatGenerationChunk(message=last))
            yield last
    except BaseException as error:
        merged = merge_chat_generation_chunks(chunks)
        failed: list[Any] = _error_generations(error)
        await run.on_llm_error(error, response=LLMResult(
            generations=[[merged], failed] if merged else [failed]))
        raise
    generation = merge_chat_generation_chunks(chunks)
    if not generation:
        empty = ValueError("No generation chunks were returned")
        await run.on_llm_error(empty, response=LLMResult(generations=[]))
        raise empty
    await run.on_llm_end(LLMResult(generations=[[generation]]))


def _token_event(run: AsyncCallbackManagerForLLMRun,
                 ) -> Callable[[Any, ChatGenerationChunk], Awaitable[None]] | None:
    """The run's ``on_llm_new_token``, for only the handlers that define one; None if
    none does. Each is called as langchain-core's dispatcher calls it: in place when
    ``run_inline``, the others together (``gather``), a sync one off the event loop
    unless inline; errors are logged, or raised for ``raise_error`` handlers."""
    handlers = [h for h in run.handlers if not h.ignore_llm
                and type(h).on_llm_new_token not in _NO_TOKEN_EVENT]
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
