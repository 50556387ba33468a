"""Shared pieces of the chains' typed inputs."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field

M = TypeVar("M", bound=BaseModel)

Language = Field(
    default="auto", min_length=2, max_length=40,
    description='Language of the answer, e.g. "português", "English"; "auto" answers in '
                "the language of the input.")


def coerce_input(model: type[M], value: Any) -> M:
    """The chain's input as its pydantic model: validates dicts, passes models through."""
    return value if isinstance(value, model) else model.model_validate(value)
