"""The story chain: a short original story about a topic.

    from chains import story_chain
    for chunk in story_chain.stream({"topic": "Brasil"}):
        print(chunk, end="", flush=True)
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel, ConfigDict, Field

from ._inputs import Language, coerce_input
from ._model import configurable_model
from ._parsers import InlineStrOutputParser
from ._prompts import load_prompt

LENGTHS = {"curta": "um a dois parágrafos", "média": "três a cinco parágrafos",
           "longa": "seis a oito parágrafos"}


class StoryInput(BaseModel):
    """What the story is about, and how to tell it."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=500, description="What the story is about.",
                       examples=["Brasil", "um sabiá que aprendeu a programar"])
    style: str = Field(default="livre", min_length=1, max_length=100,
                       description="Style or genre, e.g. cordel, fábula, ficção científica.")
    length: Literal["curta", "média", "longa"] = Field(
        default="curta", description="How long the story is.")
    language: str = Language


def _variables(value: Any) -> dict[str, str]:
    story = coerce_input(StoryInput, value)
    return {"topic": story.topic, "style": story.style, "length": LENGTHS[story.length],
            "language": story.language}


def build_story_chain(model: BaseChatModel | None = None) -> Runnable[Any, str]:
    """``StoryInput | prompt | model | str``; ``model`` defaults to ``ChatMaritaca()``."""
    chain = (RunnableLambda(_variables, name="story_input") | load_prompt("story").template()
             | configurable_model(model) | InlineStrOutputParser())
    return chain.with_types(input_type=StoryInput, output_type=str)
