"""The chat model inside every chain, with model/temperature/max_tokens configurable.

Only ``chains.limits.CONFIGURABLE_KEYS`` are configurable from outside (LangServe lets
any HTTP client set ``configurable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import ConfigurableField, Runnable, RunnableConfig

from maritaca import ChatMaritaca
from maritaca.models import catalogue_names, get_model_info

from .limits import DEFAULT_TEMPERATURE, MAX_TOKENS_RANGE, TEMPERATURE_RANGE

# The max_tokens a model gets from configurable_model when the caller names none.
DEFAULT_MAX_TOKENS = 2048
# A configured max_tokens of 0 means "the chain's own budget" (the chains' schema default).
AUTO_MAX_TOKENS = 0


def model_choices(model: BaseChatModel | None = None) -> list[str]:
    """The model names a client may choose for ``model`` (default ``ChatMaritaca()``):
    those that really answer. A Maritaca model name (from the catalogue) offers the
    catalogue, its own name first; any other name, e.g. the embedded backend's SmolLM2,
    offers only itself (another name would be answered by the same model, under a
    name that is not its own). A chat model other than ``ChatMaritaca`` offers its name.
    """
    model = model if model is not None else ChatMaritaca()
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    if not isinstance(name, str):
        return [type(model).__name__]
    if isinstance(model, ChatMaritaca) and get_model_info(name) is not None:
        return list(dict.fromkeys([name, *catalogue_names()]))
    return [name]


def configurable_model(model: BaseChatModel | None = None, *,
                       model_names: Sequence[str] | None = None,
                       max_tokens: int = DEFAULT_MAX_TOKENS) -> Runnable[Any, Any]:
    """``model`` (default ``ChatMaritaca()``) with the three configurable fields.

    Use it to build a chain whose model, temperature and max_tokens clients may choose.
    ``model_names`` limits the choice of model (default: :func:`model_choices`, the
    names that really answer; the model's own name always comes first). ``max_tokens``
    and a temperature of 0.7 are what is sent unless the model sets its own; they are
    the defaults the config schema shows (concrete values: LangServe's playground
    renders neither a nullable field nor, with its default, an enum behind a ``$ref``,
    so the model is a ``Literal`` of the names, not an options enum).
    Another chat model than ``ChatMaritaca`` is returned as given.
    """
    model = model if model is not None else ChatMaritaca()
    if not isinstance(model, ChatMaritaca):
        return model
    names = list(dict.fromkeys([model.model_name, *(model_names or model_choices(model))]))
    model = model.model_copy(update={
        "temperature": DEFAULT_TEMPERATURE if model.temperature is None else model.temperature,
        "max_tokens": max_tokens if model.max_tokens is None else model.max_tokens})
    low_t, high_t = TEMPERATURE_RANGE
    low_m, high_m = MAX_TOKENS_RANGE
    return model.configurable_fields(
        model_name=ConfigurableField(
            id="model", name="Modelo", annotation=Literal[tuple(names)],  # type: ignore[valid-type]
            description="Which model answers: " + ", ".join(names) + "."),
        temperature=ConfigurableField(
            id="temperature", name="Temperatura", annotation=float,
            description=f"Sampling temperature, {low_t:g} to {high_t:g}; "
                        f"{low_t:g} is the most deterministic."),
        max_tokens=ConfigurableField(
            id="max_tokens", name="Máximo de tokens (0 = automático)", annotation=int,
            description=f"Longest answer, in tokens ({low_m} to {high_m}). 0 or unset: the "
                        "chain picks one that fits what was asked (e.g. a short story)."),
    )


def with_budget(config: RunnableConfig, max_tokens: int,
                model: BaseChatModel | None) -> RunnableConfig:
    """``config`` asking for at most ``max_tokens``, unless its ``configurable`` (the
    client) or the model itself already sets max_tokens: theirs wins. A configured 0
    (``AUTO_MAX_TOKENS``, the chains' schema default) sets nothing: the budget applies.

    Also refuses (ValueError) a configured model that :func:`model_choices` does not
    offer: the config schema's ``Literal`` is checked by LangServe, not by the chain; and
    a ``thread_id`` (a server's conversation wrapper takes it out before the chain runs:
    one reaching a chain would be silently ignored).
    """
    configurable = config.get("configurable") or {}
    if configurable.get("thread_id"):
        raise ValueError("thread_id names a conversation: only conversation chains "
                         "(history: thread, e.g. chat) take it; this chain answers each "
                         "request alone, remove thread_id")
    chosen = configurable.get("model")
    if chosen is not None and isinstance(model, ChatMaritaca) and chosen != model.model_name:
        names = model_choices(model)
        if chosen not in names:
            raise ValueError(f"model {chosen!r} does not answer here: only "
                             f"{', '.join(names)} can be chosen")
    if configurable.get("max_tokens") not in (None, AUTO_MAX_TOKENS) or (
            isinstance(model, ChatMaritaca) and model.max_tokens is not None):
        return config
    return {**config, "configurable": {**configurable, "max_tokens": max_tokens}}
