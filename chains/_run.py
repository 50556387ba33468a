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
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import BaseModel

from ._direct import DirectChain, astream_closed, stream_closed
from ._model import AUTO_MAX_TOKENS, with_budget
from .bindings import PassThroughBinding

__all__ = ["AutoBudgetChain", "astream_closed", "auto_budget", "budgeted_chain",
           "stream_closed"]


class AutoBudgetChain(PassThroughBinding):
    """A chain whose config schema offers ``max_tokens`` 0, "the chain's own budget",
    as its default.

    LangServe fills every ``configurable`` field a client leaves out with the schema's
    default as soon as any config is sent (``{"configurable": {}}``, a temperature,
    ``RemoteRunnable``, the playground's form): with a concrete number there, the
    chain's per-input budget (a short story's 300 tokens) became that number. With 0
    there, every face asks for what the chain file says unless the client names a
    max_tokens of its own.
    """

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [spec._replace(default=AUTO_MAX_TOKENS, description=(
            "Longest answer, in tokens. 0 (the default): the chain's own budget for what "
            "was asked (e.g. a short story's).")) if spec.id == "max_tokens" else spec
            for spec in super().config_specs]


def auto_budget(chain: Runnable[Any, Any], input_type: type[BaseModel],
                output_type: Any = str) -> Runnable[Any, Any]:
    """``chain`` typed as given, with the config schema of :class:`AutoBudgetChain`."""
    return AutoBudgetChain(bound=chain, custom_input_type=input_type,
                           custom_output_type=output_type)


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
    return auto_budget(chain, input_type)
