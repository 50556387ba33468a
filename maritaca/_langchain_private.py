"""Every private member of langchain-core that ChatMaritaca's direct streaming run reads.

``maritaca._model_run`` runs ``BaseChatModel.stream``/``astream`` again with cheaper
per-token work. To report exactly what they report (the same ``on_chat_model_start``,
the same chunks), it needs what langchain-core computes in members it keeps private:
``_convert_input``, ``_should_stream``, ``_get_invocation_params``,
``_get_ls_params_with_defaults`` and ``_serialized``. They are read here and nowhere
else. ``PRESENT`` says, checked once at import, that each is there with the parameters
used here; ``maritaca._model_run`` also checks once that a run built from them reports
what langchain-core's own run reports, and takes langchain-core's path if either fails.
"""

from __future__ import annotations

import inspect
from functools import cached_property
from typing import Any, NamedTuple

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from pydantic import SecretStr

__all__ = ["PRESENT", "RunStart", "input_messages", "run_start", "streams"]

# each private method used, and the parameters it is called with
_METHODS = {"_convert_input": ("model_input",), "_should_stream": ("async_api",),
            "_get_invocation_params": ("stop",), "_get_ls_params_with_defaults": ("stop",)}
# Fields langchain-core leaves out of the invocation params it traces (large ones).
_NOT_TRACED = frozenset({"tools", "functions", "messages", "response_format"})


def _present() -> bool:
    try:
        for name, parameters in _METHODS.items():
            method = inspect.getattr_static(BaseChatModel, name)
            if not set(parameters) <= set(inspect.signature(method).parameters):
                return False
        return isinstance(inspect.getattr_static(BaseChatModel, "_serialized"), cached_property)
    except Exception:  # noqa: BLE001 - missing or unreadable: langchain-core's path is used
        return False


PRESENT = _present()


def input_messages(model: BaseChatModel, input: LanguageModelInput) -> list[BaseMessage]:
    """The messages a ``stream`` call's input stands for."""
    return model._convert_input(input).to_messages()


def streams(model: BaseChatModel, kwargs: dict[str, Any], *, async_api: bool) -> bool:
    """Whether langchain-core's ``stream``/``astream`` would stream this call (rather
    than fall back to ``invoke``)."""
    return model._should_stream(async_api=async_api, **{**kwargs, "stream": True})


class RunStart(NamedTuple):
    """What ``stream`` passes to ``CallbackManager.configure`` (``configure`` and
    ``langsmith_metadata``) and to ``on_chat_model_start`` (``serialized``, ``params``,
    ``options``), for a call with plain text messages and no structured output."""

    configure: tuple[Any, ...]
    langsmith_metadata: dict[str, Any]
    serialized: dict[str, Any]
    params: dict[str, Any]
    options: dict[str, Any]


def run_start(model: BaseChatModel, config: RunnableConfig, stop: list[str] | None,
              kwargs: dict[str, Any]) -> RunStart:
    """The chat model run's start, as ``BaseChatModel.stream`` computes it."""
    params = model._get_invocation_params(stop=stop, **kwargs)
    options = {"stop": stop, **{key: params[key] for key in kwargs if key in params}}
    metadata = {**(config.get("metadata") or {}),
                **model._get_ls_params_with_defaults(stop=stop, **kwargs)}
    configure = (config.get("callbacks"), model.callbacks, model.verbose, config.get("tags"),
                 model.tags, metadata, model.metadata)
    return RunStart(configure, {k: v for k, v in params.items() if k not in _NOT_TRACED},
                    _serialized(model), params, options)


# ``_serialized`` is cached per model object, but a chain with configurable fields runs a
# new model object per request (``configurable_fields`` re-creates it with the request's
# values): ``dumpd`` again each time, ~0.1 ms of a short request (issue 26). Models
# whose fields are plain data share it across objects, keyed by class and field values.
_SERIALIZED: dict[tuple[Any, ...], dict[str, Any]] = {}
_SERIALIZED_MAX = 256


class _NotPlain(Exception):
    """A field value the cache key cannot stand for (an object: serialized uncached)."""


def _plain(value: Any) -> Any:
    kind = type(value)
    if value is None or kind in (str, int, float, bool):
        return kind, value
    if kind is dict:
        return kind, tuple((key, _plain(item)) for key, item in value.items())
    if kind in (list, tuple):
        return kind, tuple(_plain(item) for item in value)
    if isinstance(value, SecretStr):  # serialized as a reference to its name, not its value
        return SecretStr, None
    raise _NotPlain


def _serialized(model: BaseChatModel) -> dict[str, Any]:
    """``model._serialized``, shared by models of one class with the same field values."""
    try:
        key = (type(model), *((name, _plain(value)) for name, value in model.__dict__.items()
                              if name != "_serialized"))  # the cached_property's own slot
    except _NotPlain:
        return model._serialized
    serialized = _SERIALIZED.get(key)
    if serialized is None:
        if len(_SERIALIZED) >= _SERIALIZED_MAX:
            _SERIALIZED.clear()
        serialized = _SERIALIZED[key] = model._serialized
    return serialized
