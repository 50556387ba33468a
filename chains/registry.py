"""The chains a server serves: name, input type and builder of each.

A server iterates over ``CHAINS`` (or calls ``build_chains``); add a chain here, with its
``prompts/<name>.yaml``, and it gets every route. Titles, descriptions and examples
come from the prompt file, in Brazilian Portuguese like the users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import BaseModel

from ._prompts import load_prompt
from .qa import QAInput, build_qa_chain
from .story import StoryInput, build_story_chain
from .summarize import SummarizeInput, build_summarize_chain


class ChainBuilder(Protocol):
    """What every chain builder is: a model (default ``ChatMaritaca()``) and the model's
    context size in tokens (default: the catalogue's), to a streaming chain of text."""

    def __call__(self, model: BaseChatModel | None = None, *,
                 context_tokens: int | None = None) -> Runnable[Any, str]: ...


@dataclass(frozen=True)
class ChainSpec:
    """One served chain: ``name`` is its route; ``main_field`` the input field a plain
    text fills; title, description and example are for people (pt-BR)."""

    name: str
    title: str
    description: str
    input_type: type[BaseModel]
    build: ChainBuilder
    example: dict[str, Any] = field(default_factory=dict)
    main_field: str = ""


def _spec(name: str, input_type: type[BaseModel], build: ChainBuilder,
          main_field: str) -> ChainSpec:
    prompt = load_prompt(name)
    return ChainSpec(name, prompt.title, prompt.description, input_type, build,
                     dict(prompt.example), main_field)


CHAINS: dict[str, ChainSpec] = {
    spec.name: spec for spec in (
        _spec("story", StoryInput, build_story_chain, "topic"),
        _spec("qa", QAInput, build_qa_chain, "question"),
        _spec("summarize", SummarizeInput, build_summarize_chain, "text"),
    )
}


def build_chains(model: BaseChatModel | None = None, *,
                 context_tokens: int | None = None) -> dict[str, Runnable[Any, str]]:
    """Every chain on ``model`` (default ``ChatMaritaca()``); ``context_tokens`` overrides
    the model's context size (e.g. 4096 for the embedded backend)."""
    return {name: spec.build(model, context_tokens=context_tokens)
            for name, spec in CHAINS.items()}
