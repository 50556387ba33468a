"""A prompt chain run with the token budget its input asks for.

The budget depends on the input (a "curta" story needs fewer tokens than a "longa" one)
and goes to the model through ``configurable``, where the client's own ``max_tokens``
wins; so the chain is a streaming lambda around the ``prompt | model | parser`` steps.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextlib import aclosing, closing
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel

from ._direct import DirectChain
from ._model import with_budget


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


def budgeted_chain(inner: Runnable[dict[str, str], str],
                   prepare: Callable[[Any], tuple[dict[str, str], int]],
                   model: BaseChatModel | None, *, name: str,
                   input_type: type[BaseModel]) -> Runnable[Any, str]:
    """``inner`` run on ``prepare(input)``'s values, asking for its budget of tokens.

    ``inner``'s configurable fields stay the chain's (langchain-core finds them among
    the lambda's closure variables). Closing the stream early closes ``inner``'s
    stream, and with it the upstream request.
    """

    def run_config(value: Any, config: RunnableConfig) -> tuple[dict[str, str], RunnableConfig]:
        values, budget = prepare(value)
        return values, with_budget(config, budget, model)

    def run(value: Any, config: RunnableConfig) -> Iterator[str]:
        yield from stream_closed(inner, *run_config(value, config))

    async def arun(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
        async for chunk in astream_closed(inner, *run_config(value, config)):
            yield chunk

    # RunnableLambda streams what generator functions yield; its type hints say otherwise
    chain = cast(Runnable[Any, str], DirectChain(run, arun, name=name, inner=inner,  # type: ignore[arg-type]
                                                 prepare=run_config))
    return chain.with_types(input_type=input_type, output_type=str)
