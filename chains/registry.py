"""The chains the server serves: name, input type and builder of each.

``server.py`` iterates over ``CHAINS``; add a chain here and it gets every route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import BaseModel

from .qa import QAInput, build_qa_chain
from .story import StoryInput, build_story_chain
from .summarize import SummarizeInput, build_summarize_chain


@dataclass(frozen=True)
class ChainSpec:
    name: str
    title: str
    description: str
    input_type: type[BaseModel]
    build: Callable[..., Runnable[Any, str]]
    example: dict[str, Any] = field(default_factory=dict)
    main_field: str = ""


CHAINS: dict[str, ChainSpec] = {
    spec.name: spec for spec in (
        ChainSpec("story", "Histórias", "A short original story about a topic.", StoryInput,
                  build_story_chain, {"topic": "Brasil"}, "topic"),
        ChainSpec("qa", "Perguntas e respostas",
                  "Answers a question, from the given context when there is one.", QAInput,
                  build_qa_chain, {"question": "Qual é a capital do Brasil?"}, "question"),
        ChainSpec("summarize", "Resumos",
                  "Summarises a text; long texts are summarised map-reduce.", SummarizeInput,
                  build_summarize_chain, {"text": "O sabiá é uma ave..."}, "text"),
    )
}


def build_chains(model: BaseChatModel | None = None, *,
                 context_tokens: int | None = None) -> dict[str, Runnable[Any, str]]:
    """Every chain on ``model`` (default ``ChatMaritaca()``)."""
    chains = {}
    for name, spec in CHAINS.items():
        kwargs = {"context_tokens": context_tokens} if name == "summarize" else {}
        chains[name] = spec.build(model, **kwargs)
    return chains
