"""A prompt chain run with the token budget its input asks for.

The budget depends on the input (a "curta" story needs fewer tokens than a "longa" one)
and goes to the model through ``configurable``, where the client's own ``max_tokens``
wins; so the chain is a streaming lambda around the ``prompt | model | parser`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel

from ._direct import DirectChain, astream_closed, stream_closed
from ._model import with_budget

__all__ = ["astream_closed", "budgeted_chain", "stream_closed"]


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

    chain = cast(Runnable[Any, str], DirectChain(name=name, inner=inner, prepare=run_config))
    return chain.with_types(input_type=input_type, output_type=str)
