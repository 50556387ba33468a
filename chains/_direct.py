"""The chains' direct streaming path: the same run, one generator layer per chunk.

A chain here is ``prepare(input) -> prompt | model | parser``. Streamed the LCEL way,
every token crosses four nested stream transforms (the chain, the sequence, the parser,
the model), and langchain-core wraps each step of each in an asyncio task, tees its
input and adds up its output: about four tasks and a dozen objects per token, most of a
server's CPU when it relays hundreds of slow streams.

``DirectChain.astream`` runs the same steps with the same callbacks and the same run
tree (the chain, its ``RunnableSequence``, the prompt, the model, the parser: names,
tags, inputs and outputs as LCEL reports them), but reads the model's stream in one
loop. It takes the LCEL path whenever something needs to watch every step's stream:
``astream_log``/``astream_events`` and any other streaming callback handler (they tap
each step's output), or extra call kwargs. ``stream``, ``invoke`` and the rest are
LCEL's, unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableSequence
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    patch_config,
)

Prepare = Callable[[Any, RunnableConfig], tuple[dict[str, str], RunnableConfig]]


def direct_steps(inner: Runnable[Any, Any]) -> tuple[Runnable[Any, Any], ...] | None:
    """``inner``'s (prompt, model, parser) when it is a plain three-step sequence."""
    if isinstance(inner, RunnableSequence) and len(inner.steps) == 3:
        return tuple(inner.steps)
    return None


def _watches_streams(config: RunnableConfig) -> bool:
    """Whether a handler taps each step's stream (astream_log, astream_events)."""
    manager = get_async_callback_manager_for_config(config)
    return any(hasattr(handler, "tap_output_aiter") for handler in manager.handlers)


class DirectChain(RunnableLambda):  # type: ignore[type-arg]
    """A chain lambda whose ``astream`` relays the model's stream directly.

    ``inner`` is the ``prompt | model | parser`` sequence the lambda's functions run;
    ``prepare(input, config)`` gives its values and the config to run it with.
    """

    def __init__(self, func: Callable[..., Any], afunc: Callable[..., Any], *, name: str,
                 inner: Runnable[Any, Any], prepare: Prepare) -> None:
        super().__init__(func, afunc=afunc, name=name)
        self._inner = inner
        self._steps = direct_steps(inner)
        self._prepare = prepare

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        config = ensure_config(config)
        if kwargs or self._steps is None or _watches_streams(config):
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
            return
        async for text in self._direct(input, config):
            yield text

    async def _direct(self, input: Any, config: RunnableConfig) -> AsyncIterator[str]:
        prompt, model, parser = self._steps  # type: ignore[misc]
        root = await get_async_callback_manager_for_config(config).on_chain_start(
            None, {"input": ""}, run_type=None, name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None), defers_inputs=False)
        parts: list[str] = []
        try:
            values, inner_config = self._prepare(
                input, patch_config(config, callbacks=root.get_child(),
                                    recursion_limit=config["recursion_limit"] - 1))
            sequence = await get_async_callback_manager_for_config(inner_config).on_chain_start(
                None, {"input": ""}, run_type=None,
                name=inner_config.get("run_name") or self._inner.get_name(),
                run_id=inner_config.pop("run_id", None), defers_inputs=False)
            try:
                async for text in _sequence(prompt, model, parser, values, inner_config,
                                            sequence, parts):
                    yield text
            except BaseException as error:
                await sequence.on_chain_error(error, inputs=values)
                raise
            await sequence.on_chain_end("".join(parts), inputs=values)
        except BaseException as error:
            await root.on_chain_error(error, inputs=input)
            raise
        await root.on_chain_end("".join(parts), inputs=input)


def _step_config(config: RunnableConfig, run: AsyncCallbackManagerForChainRun,
                 step: int) -> RunnableConfig:
    return patch_config(config, callbacks=run.get_child(f"seq:step:{step}"))


async def _sequence(prompt: Runnable[Any, Any], model: Runnable[Any, Any],
                    parser: Runnable[Any, Any], values: dict[str, str], config: RunnableConfig,
                    sequence: AsyncCallbackManagerForChainRun,
                    parts: list[str]) -> AsyncIterator[str]:
    """The three steps, as LCEL runs them: the prompt, then the model's stream, the
    parser's run opening at the model's first chunk; ``parts`` collects the text."""
    prompt_value = await prompt.ainvoke(values, _step_config(config, sequence, 1))
    stream = model.astream(prompt_value, _step_config(config, sequence, 2))
    messages: list[BaseMessage] = []
    async with aclosing(stream):  # type: ignore[type-var]
        first = await anext(stream, None)
        parser_config = _step_config(config, sequence, 3)
        parsing = await get_async_callback_manager_for_config(parser_config).on_chain_start(
            None, {"input": ""}, run_type="parser",
            name=parser_config.get("run_name") or parser.get_name(),
            run_id=parser_config.pop("run_id", None), defers_inputs=False)
        try:
            if first is not None:
                messages.append(first)
                text = first.text if isinstance(first, BaseMessage) else first
                if text:
                    parts.append(text)
                    yield text
            async for message in stream:
                messages.append(message)
                text = message.text if isinstance(message, BaseMessage) else message
                if text:
                    parts.append(text)
                    yield text
        except BaseException as error:
            # LCEL has added up only the first chunk when a step fails
            await parsing.on_chain_error(error, inputs=messages[0] if messages else None)
            raise
        await parsing.on_chain_end("".join(parts), inputs=_merged(messages))


def _merged(messages: list[BaseMessage]) -> Any:
    """The parser's whole input, as LCEL adds it up: one message (or None)."""
    if not messages:
        return None
    first = messages[0]
    if len(messages) > 1 and isinstance(first, AIMessageChunk):
        return first + messages[1:]  # type: ignore[operator]
    return first
