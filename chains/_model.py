"""The chat model inside every chain, with model/temperature/max_tokens configurable.

Only ``chains.limits.CONFIGURABLE_KEYS`` are configurable from outside (LangServe lets
any HTTP client set ``configurable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import (
    ConfigurableField,
    ConfigurableFieldSingleOption,
    Runnable,
    RunnableConfig,
)

from maritaca import ChatMaritaca
from maritaca.models import catalogue_names

from .limits import DEFAULT_TEMPERATURE, MAX_TOKENS_RANGE, TEMPERATURE_RANGE

# The max_tokens a model gets from configurable_model when the caller names none.
DEFAULT_MAX_TOKENS = 2048


def configurable_model(model: BaseChatModel | None = None, *,
                       model_names: Sequence[str] | None = None,
                       max_tokens: int = DEFAULT_MAX_TOKENS) -> Runnable[Any, Any]:
    """``model`` (default ``ChatMaritaca()``) with the three configurable fields.

    Use it to build a chain whose model, temperature and max_tokens clients may choose.
    ``model_names`` limits the choice of model (default: the catalogue, plus the
    model's own name, e.g. the embedded backend's). ``max_tokens`` and a temperature of
    0.7 are what is sent unless the model sets its own; they are the defaults the config
    schema shows (concrete numbers: LangServe's playground cannot render a nullable one).
    Another chat model than ``ChatMaritaca`` is returned as given.
    """
    model = model if model is not None else ChatMaritaca()
    if not isinstance(model, ChatMaritaca):
        return model
    names = list(dict.fromkeys([model.model_name, *(model_names or catalogue_names())]))
    model = model.model_copy(update={
        "temperature": DEFAULT_TEMPERATURE if model.temperature is None else model.temperature,
        "max_tokens": max_tokens if model.max_tokens is None else model.max_tokens})
    low_t, high_t = TEMPERATURE_RANGE
    low_m, high_m = MAX_TOKENS_RANGE
    return model.configurable_fields(
        model_name=ConfigurableFieldSingleOption(
            id="model", name="Model", options={name: name for name in names},
            default=model.model_name,
            description="Which Maritaca model answers (see maritaca.models)."),
        temperature=ConfigurableField(
            id="temperature", name="Temperature", annotation=float,
            description=f"Sampling temperature, {low_t:g} to {high_t:g}; "
                        f"{low_t:g} is the most deterministic."),
        max_tokens=ConfigurableField(
            id="max_tokens", name="Max tokens", annotation=int,
            description=f"Longest answer, in tokens ({low_m} to {high_m}). Unset, the "
                        "chain picks one that fits what was asked (e.g. a short story)."),
    )


def with_budget(config: RunnableConfig, max_tokens: int,
                model: BaseChatModel | None) -> RunnableConfig:
    """``config`` asking for at most ``max_tokens``, unless its ``configurable`` (the
    client) or the model itself already sets max_tokens: theirs wins."""
    configurable = config.get("configurable") or {}
    if configurable.get("max_tokens") is not None or (
            isinstance(model, ChatMaritaca) and model.max_tokens is not None):
        return config
    return {**config, "configurable": {**configurable, "max_tokens": max_tokens}}
