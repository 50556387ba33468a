"""The chains' direct streaming path: the same run, one generator layer per chunk.

A chain here is ``prepare(input) -> prompt | model | parser``. Streamed the LCEL way,
every token crosses four nested stream transforms (the chain, the sequence, the parser,
the model), and langchain-core wraps each step of each in an asyncio task, tees its
input and adds up its output: about four tasks and a dozen objects per token, most of a
server's CPU when it relays hundreds of slow streams.

``DirectChain.astream`` runs the same steps with the same callbacks and the same run
tree (the chain, its ``RunnableSequence``, the prompt, the model, the parser: names,
tags, inputs and outputs as LCEL reports them), and shows each run's output to a
streaming handler (``astream_events``, ``astream_log``) as LCEL does, but passes each
token through plain generators, without a task. Other shapes and calls with extra
kwargs take the LCEL path; ``stream``, ``invoke`` and the rest are LCEL's, unchanged.
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

from ._parsers import InlineStrOutputParser, text_of

Prepare = Callable[[Any, RunnableConfig], tuple[dict[str, str], RunnableConfig]]


def direct_steps(inner: Runnable[Any, Any]) -> tuple[Runnable[Any, Any], ...] | None:
    """``inner``'s (prompt, model, parser) when it is a three-step sequence ending in
    ``InlineStrOutputParser`` (whose work ``_texts`` does)."""
    if isinstance(inner, RunnableSequence) and len(inner.steps) == 3 \
            and type(inner.steps[2]) is InlineStrOutputParser:
        return tuple(inner.steps)
    return None


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
        if kwargs or self._steps is None:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
            return
        config = ensure_config(config)
        root = await _start(config, self.get_name())
        parts: list[str] = []
        try:
            values, inner_config = self._prepare(
                input, patch_config(config, callbacks=root.get_child(),
                                    recursion_limit=config["recursion_limit"] - 1))
            async for text in _tapped(root, self._sequence(values, inner_config, parts)):
                yield text
        except BaseException as error:
            await root.on_chain_error(error, inputs=input)
            raise
        await root.on_chain_end("".join(parts), inputs=input)

    async def _sequence(self, values: dict[str, str], config: RunnableConfig,
                        parts: list[str]) -> AsyncIterator[str]:
        """The ``RunnableSequence`` run: prompt, then model, then parser."""
        prompt, model, parser = self._steps  # type: ignore[misc]
        sequence = await _start(config, self._inner.get_name())
        try:
            prompt_value = await prompt.ainvoke(values, _step_config(config, sequence, 1))
            stream = model.astream(prompt_value, _step_config(config, sequence, 2))
            async with aclosing(stream):  # type: ignore[type-var]
                async for text in _tapped(sequence, _parse(
                        stream, _step_config(config, sequence, 3), parser.get_name(), parts)):
                    yield text
        except BaseException as error:
            await sequence.on_chain_error(error, inputs=values)
            raise
        await sequence.on_chain_end("".join(parts), inputs=values)


async def _start(config: RunnableConfig, name: str,
                 run_type: str | None = None) -> AsyncCallbackManagerForChainRun:
    """A chain run's start, as LCEL's streaming transforms report it."""
    return await get_async_callback_manager_for_config(config).on_chain_start(
        None, {"input": ""}, run_type=run_type, name=config.get("run_name") or name,
        run_id=config.pop("run_id", None), defers_inputs=False)


def _tapped(run: AsyncCallbackManagerForChainRun,
            output: AsyncIterator[str]) -> AsyncIterator[str]:
    """``output``, shown to the run's streaming handler (``astream_events``,
    ``astream_log``) as LCEL shows it, if the run has one."""
    handler = next((h for h in run.handlers if hasattr(h, "tap_output_aiter")), None)
    return output if handler is None else handler.tap_output_aiter(run.run_id, output)


def _step_config(config: RunnableConfig, run: AsyncCallbackManagerForChainRun,
                 step: int) -> RunnableConfig:
    return patch_config(config, callbacks=run.get_child(f"seq:step:{step}"))


async def _parse(stream: AsyncIterator[Any], config: RunnableConfig, name: str,
                 parts: list[str]) -> AsyncIterator[str]:
    """The parser's run over the model's stream: it opens at the model's first chunk
    (as in LCEL); ``parts`` collects the text."""
    messages: list[Any] = []
    first = await anext(stream, None)
    parsing = await _start(config, name, "parser")
    try:
        async for text in _tapped(parsing, _texts(first, stream, messages, parts)):
            yield text
    except BaseException as error:
        # LCEL has added up only the first chunk when a step fails
        await parsing.on_chain_error(error, inputs=messages[0] if messages else None)
        raise
    await parsing.on_chain_end("".join(parts), inputs=_merged(messages))


async def _texts(first: Any, stream: AsyncIterator[Any], messages: list[Any],
                 parts: list[str]) -> AsyncIterator[str]:
    """Each message's text (empty ones left out), as ``InlineStrOutputParser`` gives it;
    ``messages`` and ``parts`` keep what went through."""

    def take(message: Any) -> str:
        messages.append(message)
        if text := text_of(message):
            parts.append(text)
        return text

    if first is None:
        return
    if text := take(first):
        yield text
    async for message in stream:
        if text := take(message):
            yield text


def _merged(messages: list[BaseMessage]) -> Any:
    """The parser's whole input, as LCEL adds it up: one message (or None)."""
    if not messages:
        return None
    first = messages[0]
    if len(messages) > 1 and isinstance(first, AIMessageChunk):
        return first + messages[1:]  # type: ignore[operator]
    return first
