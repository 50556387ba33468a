"""LCEL chain templates on ChatMaritaca: story, question answering, summarising, and yours.

    from chains import story_chain
    for chunk in story_chain.stream({"topic": "Brasil"}):
        print(chunk, end="", flush=True)

Every chain is one YAML file (title, typed inputs, messages, token budgets, output,
strategy): the built-ins are ``prompts/story.yaml``, ``qa.yaml`` and ``summarize.yaml``;
``load_chain("minha-cadeia.yaml")`` (or a name found in ``MARITACA_CHAINS_DIR``) builds
yours the same way. Each module-level chain uses ``ChatMaritaca()`` (key from
``MARITACA_API_KEY``); build one on another model with ``build_story_chain(model=...)``
or ``load_chain(name, model=...)``, or change the model per call with
``with_config(configurable={"model": "sabiazinho-4"})``. What a client may configure,
and within which limits, is ``CONFIGURABLE_KEYS``, ``TEMPERATURE_RANGE`` and
``MAX_TOKENS_RANGE``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from ._model import configurable_model, model_choices
from ._prompts import PromptFileError, load_prompt
from .chain_file import ChainFile, ChainFileError, read_chain_file
from .chain_runtime import HISTORY_FIELD, PROGRESS_EVENT, JsonOutputError
from .limits import CONFIGURABLE_KEYS, DEFAULT_TEMPERATURE, MAX_TOKENS_RANGE, TEMPERATURE_RANGE
from .registry import (
    CHAINS,
    ChainBuilder,
    ChainSpec,
    build_chains,
    chain_specs,
    load_chain,
    load_spec,
)

StoryInput = CHAINS["story"].input_type
QAInput = CHAINS["qa"].input_type
SummarizeInput = CHAINS["summarize"].input_type


def build_story_chain(model: BaseChatModel | None = None, *,
                      context_tokens: int | None = None) -> Runnable[Any, str]:
    """The story chain (``prompts/story.yaml``) on ``model`` (default ``ChatMaritaca()``)."""
    return CHAINS["story"].build(model, context_tokens=context_tokens)


def build_qa_chain(model: BaseChatModel | None = None, *,
                   context_tokens: int | None = None) -> Runnable[Any, str]:
    """The question-answering chain (``prompts/qa.yaml``) on ``model``."""
    return CHAINS["qa"].build(model, context_tokens=context_tokens)


def build_summarize_chain(model: BaseChatModel | None = None, *,
                          context_tokens: int | None = None) -> Runnable[Any, str]:
    """The summarize chain (``prompts/summarize.yaml``) on ``model``; ``context_tokens``
    overrides the model's context size its map-reduce splits by."""
    return CHAINS["summarize"].build(model, context_tokens=context_tokens)


story_chain = build_story_chain()
qa_chain = build_qa_chain()
summarize_chain = build_summarize_chain()

__all__ = [
    "CHAINS",
    "CONFIGURABLE_KEYS",
    "DEFAULT_TEMPERATURE",
    "HISTORY_FIELD",
    "MAX_TOKENS_RANGE",
    "PROGRESS_EVENT",
    "TEMPERATURE_RANGE",
    "ChainBuilder",
    "ChainFile",
    "ChainFileError",
    "ChainSpec",
    "JsonOutputError",
    "PromptFileError",
    "QAInput",
    "StoryInput",
    "SummarizeInput",
    "build_chains",
    "build_qa_chain",
    "build_story_chain",
    "build_summarize_chain",
    "chain_specs",
    "configurable_model",
    "load_chain",
    "load_prompt",
    "load_spec",
    "model_choices",
    "qa_chain",
    "read_chain_file",
    "story_chain",
    "summarize_chain",
]
