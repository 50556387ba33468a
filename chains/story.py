"""The story chain: a short original story about a topic.

    from chains import story_chain
    for chunk in story_chain.stream({"topic": "Brasil"}):
        print(chunk, end="", flush=True)

Its words, and the tokens each length may take, are in ``prompts/story.yaml``.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field

from ._inputs import Language, Text, coerce_input
from ._model import configurable_model
from ._parsers import InlineStrOutputParser
from ._prompts import load_prompt
from ._run import budgeted_chain


class StoryInput(BaseModel):
    """What the story is about, and how to tell it."""

    model_config = ConfigDict(extra="forbid")

    topic: Text = Field(min_length=1, max_length=500, description="What the story is about.",
                        examples=["Brasil", "um sabiá que aprendeu a programar"])
    style: Text = Field(default="livre", min_length=1, max_length=100,
                        description="Style or genre, e.g. cordel, fábula, ficção científica.")
    length: Literal["curta", "média", "longa"] = Field(
        default="curta", description="How long the story is (and how many tokens it may take).")
    language: Text = Language


def build_story_chain(model: BaseChatModel | None = None, *,
                      context_tokens: int | None = None) -> Runnable[Any, str]:
    """``StoryInput | prompt | model | str``; ``model`` defaults to ``ChatMaritaca()``.

    ``context_tokens`` is accepted like every chain builder's; a story does not need it.
    """
    prompt = load_prompt("story")
    inner = (prompt.template() | configurable_model(model, max_tokens=prompt.largest_budget())
             | InlineStrOutputParser())

    def prepare(value: Any) -> tuple[dict[str, str], int]:
        story = coerce_input(StoryInput, value)
        return prompt.values(story), prompt.budget(story)

    return budgeted_chain(inner, prepare, model, name="story", input_type=StoryInput)
