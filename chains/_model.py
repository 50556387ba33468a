"""The chat model inside every chain, with model/temperature/max_tokens configurable.

Only these three are configurable from outside (LangServe lets any HTTP client set
``configurable``): never ``api_key`` or ``base_url``, or a client could send the
server's key to a host of its choosing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import ConfigurableField, ConfigurableFieldSingleOption, Runnable

from maritaca import ChatMaritaca
from maritaca.models import catalogue_names

CONFIGURABLE_KEYS = frozenset({"model", "temperature", "max_tokens"})
# The chains send these unless their model sets its own. Concrete values, not "unset":
# they are the defaults the config schema shows, and LangServe's playground cannot
# render (or validate) a nullable number field.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 2048


def configurable_model(model: BaseChatModel | None = None, *,
                       model_names: Sequence[str] | None = None) -> Runnable[Any, Any]:
    """``model`` (default ``ChatMaritaca()``) with the three configurable fields.

    ``model_names`` limits the choice of model (default: the catalogue, plus the
    model's own name, e.g. the embedded backend's).
    """
    model = model if model is not None else ChatMaritaca()
    if not isinstance(model, ChatMaritaca):
        return model  # another chat model: used as given
    names = list(dict.fromkeys([model.model_name, *(model_names or catalogue_names())]))
    model = model.model_copy(update={
        "temperature": DEFAULT_TEMPERATURE if model.temperature is None else model.temperature,
        "max_tokens": DEFAULT_MAX_TOKENS if model.max_tokens is None else model.max_tokens})
    return model.configurable_fields(
        model_name=ConfigurableFieldSingleOption(
            id="model", name="Model", options={name: name for name in names},
            default=model.model_name,
            description="Which Maritaca model answers (see maritaca.models)."),
        temperature=ConfigurableField(
            id="temperature", name="Temperature", annotation=float,
            description="Sampling temperature, 0 to 2; 0 is the most deterministic."),
        max_tokens=ConfigurableField(
            id="max_tokens", name="Max tokens", annotation=int,
            description="Longest answer, in tokens (1 to 32000)."),
    )
