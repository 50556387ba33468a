"""The chains' direct streaming path: the same run, one generator layer per chunk.

A chain here is ``prepare(input) -> prompt | model | parser``. Streamed the LCEL way,
every token crosses four nested stream transforms (the chain, the sequence, the parser,
the model); langchain-core wraps each step of each in a context switch (and, async, in
an asyncio task), tees its input and adds up its output: about four tasks and a dozen
objects per token, most of a server's CPU when it relays hundreds of slow streams.

``DirectChain.stream``/``astream`` run the same steps with the same callbacks and the
same run tree (the chain, its ``RunnableSequence``, the prompt, the model, the parser:
names, tags, inputs and outputs as LCEL reports them), and show each run's output to a
streaming handler (``astream_events``, ``astream_log``) as LCEL does, but pass each
token through plain generators. Other shapes and calls with extra kwargs take the LCEL
path, as does every call when ``DIRECT`` is false: it is checked once, at import, that
LCEL's internals (``chains._lcel_private``) are there and that a direct run of a probe
chain reports exactly what LCEL's reports. ``invoke`` and the rest are LCEL's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextlib import aclosing, asynccontextmanager, closing
from functools import partial
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableSequence
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
)
from langchain_core.runnables.configurable import DynamicRunnable

from maritaca.run_end import report_end

from . import _lcel_private as lcel
from ._direct_probe import probe_matches
from ._parsers import InlineStrOutputParser, text_of
from ._prompt_step import arun_prompt, invoked, invoked_whole, run_prompt

__all__ = ["DIRECT", "DirectChain", "astream_closed", "direct_steps", "stream_closed"]

# How many messages the parser's run keeps before adding them up (see ``_Parsed``).
_MERGE_EVERY = 128
Prepare = Callable[[Any, RunnableConfig], tuple[dict[str, str], RunnableConfig]]
ChainRun = CallbackManagerForChainRun | AsyncCallbackManagerForChainRun


def stream_closed(runnable: Runnable[Any, str], value: Any,
                  config: RunnableConfig) -> Iterator[str]:
    """``runnable.stream``, closed (upstream request included) when the caller stops."""
    stream = cast(Generator[str, None, None], runnable.stream(value, config))
    with closing(stream) as chunks:
        yield from chunks


async def astream_closed(runnable: Runnable[Any, str], value: Any,
                         config: RunnableConfig) -> AsyncIterator[str]:
    """``runnable.astream``, closed (upstream request included) when the caller stops:
    otherwise the inner generator is left to the garbage collector, its stream open."""
    stream = cast(AsyncGenerator[str, None], runnable.astream(value, config))
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            yield chunk


def direct_steps(inner: Runnable[Any, Any]) -> tuple[Runnable[Any, Any], ...] | None:
    """``inner``'s (prompt, model, parser) when it is a three-step sequence ending in
    ``InlineStrOutputParser`` (whose work ``_texts`` does)."""
    if isinstance(inner, RunnableSequence) and len(inner.steps) == 3 \
            and type(inner.steps[2]) is InlineStrOutputParser:
        return tuple(inner.steps)
    return None


class DirectChain(RunnableLambda):  # type: ignore[type-arg]
    """A streaming lambda that runs ``inner`` (a ``prompt | model | parser`` sequence)
    on ``prepare(input, config)``'s values and config, relaying the model's stream
    directly. Closing its stream early closes ``inner``'s, and the upstream request."""

    def __init__(self, *, name: str, inner: Runnable[Any, Any], prepare: Prepare) -> None:
        def run(value: Any, config: RunnableConfig) -> Iterator[str]:
            yield from stream_closed(inner, *prepare(value, config))

        async def arun(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
            async for chunk in astream_closed(inner, *prepare(value, config)):
                yield chunk

        # RunnableLambda streams what generator functions yield; its type hints say otherwise
        super().__init__(run, afunc=arun, name=name)  # type: ignore[arg-type]
        self._inner = inner
        self._steps = direct_steps(inner)
        self._prepare = prepare
        # A prompt template's run is re-done here (``_prompt_step.run_prompt``); another prompt step
        # that streams as ``Runnable`` does (one ``invoke`` of the whole input) is
        # invoked, without the two generator layers around it.
        prompt = self._steps[0] if self._steps is not None else None
        self._prompt_template = prompt is not None and lcel.plain_prompt_template(prompt)
        self._prompt_invoked = prompt is not None and invoked_whole(prompt)

    def stream(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> Iterator[Any]:
        if kwargs or self._steps is None or not DIRECT:
            return super().stream(input, config, **kwargs)
        return self._direct_stream(input, config)

    def astream(self, input: Any, config: RunnableConfig | None = None,
                **kwargs: Any) -> AsyncIterator[Any]:
        if kwargs or self._steps is None or not DIRECT:
            return super().astream(input, config, **kwargs)
        return self._direct_astream(input, config)

    # _direct_stream and _direct_astream, _sequence and _asequence, _parse and _aparse,
    # _texts and _atexts are deliberate sync/async twins: the same run, line for line;
    # a change to one is a change to both.
    def _direct_stream(self, input: Any, config: RunnableConfig | None) -> Iterator[str]:
        config = ensure_config(config)
        root = _start(config, self.get_name())
        parts: list[str] = []
        try:
            values, inner_config = self._prepare(input, _child_config(config, root))
            yield from _tapped(root, self._sequence(values, inner_config, parts))
        except BaseException as error:
            root.on_chain_error(error, inputs=input)
            raise
        root.on_chain_end("".join(parts), inputs=input)

    async def _direct_astream(self, input: Any,
                              config: RunnableConfig | None) -> AsyncIterator[str]:
        config = ensure_config(config)
        root = await _astart(config, self.get_name())
        parts: list[str] = []
        try:
            values, inner_config = self._prepare(input, _child_config(config, root))
            async with _aclosed(root, self._asequence(values, inner_config, parts)) as texts:
                async for text in texts:
                    yield text
        except BaseException as error:
            await report_end(root.on_chain_error, error, inputs=input)
            raise
        await report_end(root.on_chain_end, "".join(parts), inputs=input)

    def _sequence(self, values: dict[str, str], config: RunnableConfig,
                  parts: list[str]) -> Iterator[str]:
        """The ``RunnableSequence`` run: prompt, then model, then parser."""
        prompt, model, parser = self._steps  # type: ignore[misc]
        sequence = _start(config, self._inner.get_name())
        try:
            prompt_config = _step_config(config, sequence, 1)
            if self._prompt_template:
                prompt_value = invoked(partial(run_prompt, prompt), values, prompt_config)
            elif self._prompt_invoked:
                prompt_value = invoked(prompt.invoke, values, prompt_config)
            else:
                prompt_value = _added_up(prompt.transform(iter([values]), prompt_config))
            stream = model.stream(prompt_value, _step_config(config, sequence, 2))
            with closing(stream):  # type: ignore[type-var]
                yield from _tapped(sequence, _parse(
                    stream, _step_config(config, sequence, 3), parser.get_name(), parts))
        except BaseException as error:
            sequence.on_chain_error(error, inputs=values)
            raise
        sequence.on_chain_end("".join(parts), inputs=values)

    async def _asequence(self, values: dict[str, str], config: RunnableConfig,
                         parts: list[str]) -> AsyncGenerator[str, None]:
        """The ``RunnableSequence`` run: prompt, then model, then parser."""
        prompt, model, parser = self._steps  # type: ignore[misc]
        sequence = await _astart(config, self._inner.get_name())
        try:
            prompt_config = _step_config(config, sequence, 1)
            if self._prompt_template:
                prompt_value = await arun_prompt(prompt, values, prompt_config)
            elif self._prompt_invoked:
                prompt_value = await prompt.ainvoke(values, prompt_config)
            else:
                prompt_value = await _aadded_up(prompt.atransform(_aiter_of(values),
                                                                  prompt_config))
            stream = _model_astream(model, prompt_value, _step_config(config, sequence, 2))
            async with aclosing(stream), _aclosed(sequence, _aparse(  # type: ignore[type-var]
                    stream, _step_config(config, sequence, 3), parser.get_name(), parts)) as texts:
                async for text in texts:
                    yield text
        except BaseException as error:
            await report_end(sequence.on_chain_error, error, inputs=values)
            raise
        await report_end(sequence.on_chain_end, "".join(parts), inputs=values)


def _model_astream(model: Runnable[Any, Any], value: Any,
                   config: RunnableConfig) -> AsyncIterator[Any]:
    """``model.astream``; a configurable model's chosen runnable streamed directly, as its
    ``astream`` streams it, minus its generator layer (a hop per token)."""
    if isinstance(model, DynamicRunnable):
        chosen, config = model.prepare(config)
        return chosen.astream(value, config)
    return model.astream(value, config)


def _added_up(output: Iterator[Any]) -> Any:
    """A step's whole output as LCEL hands it to the model (which waits for all of it):
    its chunks added up, a chunk that cannot be added replacing the rest."""
    final: Any = None
    for index, chunk in enumerate(output):
        final = chunk if index == 0 else _plus(final, chunk)
    return final


async def _aadded_up(output: AsyncIterator[Any]) -> Any:
    """``_added_up`` for async runs."""
    final: Any = None
    index = 0
    async for chunk in output:
        final = chunk if index == 0 else _plus(final, chunk)
        index += 1
    return final


def _plus(final: Any, chunk: Any) -> Any:
    try:
        return final + chunk
    except TypeError:
        return chunk


async def _aiter_of(value: Any) -> AsyncIterator[Any]:
    yield value


def _start(config: RunnableConfig, name: str,
           run_type: str | None = None) -> CallbackManagerForChainRun:
    """A chain run's start, as LCEL's streaming transforms report it."""
    return get_callback_manager_for_config(config).on_chain_start(
        None, {"input": ""}, run_type=run_type, name=config.get("run_name") or name,
        run_id=config.pop("run_id", None), defers_inputs=False)


async def _astart(config: RunnableConfig, name: str,
                  run_type: str | None = None) -> AsyncCallbackManagerForChainRun:
    """``_start`` for async runs; the run's streaming handler, if ``astream_events``'s
    or ``astream_log``'s, is awaited in place from here on (``lcel.inline_streaming_handler``)."""
    manager = get_async_callback_manager_for_config(config)
    lcel.inline_streaming_handler(manager.handlers)
    return await manager.on_chain_start(
        None, {"input": ""}, run_type=run_type, name=config.get("run_name") or name,
        run_id=config.pop("run_id", None), defers_inputs=False)


def _tapped(run: CallbackManagerForChainRun, output: Iterator[str]) -> Iterator[str]:
    """``output``, shown to the run's streaming handler as LCEL shows it, if it has one."""
    handler = lcel.streaming_handler(run.handlers)
    return output if handler is None else handler.tap_output_iter(run.run_id, output)


@asynccontextmanager
async def _aclosed(run: AsyncCallbackManagerForChainRun,
                   output: AsyncGenerator[str, None]) -> AsyncIterator[AsyncIterator[str]]:
    """``_tapped`` for async runs (``astream_events``, ``astream_log``), and both the tap
    and ``output`` closed on the way out: a step whose caller stops ends its run there
    and then (async ``for`` leaves an unfinished generator to the garbage collector,
    whose ``aclose`` runs later in a task of its own, if at all)."""
    handler = lcel.streaming_handler(run.handlers)
    async with aclosing(output):
        if handler is None:
            yield output
            return
        tapped = handler.tap_output_aiter(run.run_id, output)
        async with aclosing(tapped):  # type: ignore[type-var]
            yield tapped


def _child_config(config: RunnableConfig, run: ChainRun) -> RunnableConfig:
    return patch_config(config, callbacks=run.get_child(),
                        recursion_limit=config["recursion_limit"] - 1)


def _step_config(config: RunnableConfig, run: ChainRun, step: int) -> RunnableConfig:
    return patch_config(config, callbacks=run.get_child(lcel.step_tag(step)))


def _parse(stream: Iterator[Any], config: RunnableConfig, name: str,
           parts: list[str]) -> Iterator[str]:
    """The parser's run over the model's stream: it opens at the model's first chunk
    (as in LCEL); ``parts`` collects the text."""
    parsed = _Parsed(parts)
    first = next(stream, None)
    parsing = _start(config, name, "parser")
    try:
        yield from _tapped(parsing, _texts(first, stream, parsed))
    except BaseException as error:
        # LCEL has added up only the first chunk when a step fails
        parsing.on_chain_error(error, inputs=parsed.first)
        raise
    parsing.on_chain_end("".join(parts), inputs=parsed.merged())


async def _aparse(stream: AsyncIterator[Any], config: RunnableConfig, name: str,
                  parts: list[str]) -> AsyncGenerator[str, None]:
    """``_parse`` for async runs."""
    parsed = _Parsed(parts)
    first = await anext(stream, None)
    parsing = await _astart(config, name, "parser")
    try:
        async with _aclosed(parsing, _atexts(first, stream, parsed)) as texts:
            async for text in texts:
                yield text
    except BaseException as error:
        # LCEL has added up only the first chunk when a step fails
        await report_end(parsing.on_chain_error, error, inputs=parsed.first)
        raise
    await report_end(parsing.on_chain_end, "".join(parts), inputs=parsed.merged())


class _Parsed:
    """What went through the parser: its texts (``parts``), the first message, and all
    of them added up ``_MERGE_EVERY`` at a time as they come (the same sum as LCEL's;
    thousands of live messages would make the garbage collector walk them again and
    again), unless a tool call streams in (each addition parses its arguments again)."""

    __slots__ = ("first", "messages", "parts")

    def __init__(self, parts: list[str]) -> None:
        self.first: Any = None
        self.messages: list[Any] = []
        self.parts = parts

    def take(self, message: Any) -> str:
        """The message's text as ``InlineStrOutputParser`` gives it, kept."""
        messages = self.messages
        if not messages:
            self.first = message
        messages.append(message)
        if len(messages) == _MERGE_EVERY and not any(
                getattr(m, "tool_call_chunks", None) for m in messages):
            self.messages = [self.merged()]
        if text := text_of(message):
            self.parts.append(text)
        return text

    def merged(self) -> Any:
        """The parser's whole input, as LCEL adds it up: one message (or None)."""
        messages = self.messages
        if not messages:
            return None
        first = messages[0]
        if len(messages) > 1 and isinstance(first, AIMessageChunk):
            return first + messages[1:]  # type: ignore[operator]
        return first


def _texts(first: Any, stream: Iterator[Any], parsed: _Parsed) -> Iterator[str]:
    """The stream's texts, empty ones left out, ``parsed`` keeping what went through."""
    if first is None:
        return
    take = parsed.take
    if text := take(first):
        yield text
    for message in stream:
        if text := take(message):
            yield text


async def _atexts(first: Any, stream: AsyncIterator[Any],
                  parsed: _Parsed) -> AsyncGenerator[str, None]:
    """``_texts`` for async runs."""
    if first is None:
        return
    take = parsed.take
    if text := take(first):
        yield text
    async for message in stream:
        if text := take(message):
            yield text


DIRECT = lcel.PRESENT and probe_matches(DirectChain)
"""Whether ``DirectChain`` streams directly (checked once, here)."""
