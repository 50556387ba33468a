"""Prompts are data: ``prompts/<chain>.yaml``, validated on load by a strict model.

Unknown keys, a missing variable and a variable the messages never use are all errors
naming the file and the key, so a typo in a prompt fails at import, not mid-request.
"""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


class PromptFileError(ValueError):
    """A prompt file is missing, unreadable or does not match the prompt schema."""


class PromptMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


def template_variables(text: str) -> set[str]:
    """The ``{name}`` slots of an f-string template."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


class PromptFile(BaseModel):
    """One chain's prompt: its messages, and the variables they use (declared)."""

    model_config = ConfigDict(extra="forbid")

    description: str
    variables: list[str]
    messages: list[PromptMessage]
    map_messages: list[PromptMessage] | None = None
    context_template: str | None = None
    no_context: str | None = None

    @model_validator(mode="after")
    def _variables_match(self) -> PromptFile:
        used = set().union(*(template_variables(m.content) for m in self.messages))
        if missing := used - set(self.variables):
            raise ValueError(f"messages use {sorted(missing)} but `variables` does not list them")
        if unused := set(self.variables) - used:
            raise ValueError(f"`variables` lists {sorted(unused)} but no message uses them")
        for m in self.map_messages or []:
            if extra := template_variables(m.content) - set(self.variables):
                raise ValueError(f"map_messages use {sorted(extra)}, not in `variables`")
        return self

    def template(self, which: Literal["messages", "map_messages"] = "messages") -> ChatPromptTemplate:
        messages = self.messages if which == "messages" else (self.map_messages or [])
        return ChatPromptTemplate.from_messages([(m.role, m.content) for m in messages])


@cache
def load_prompt(name: str, directory: Path = PROMPTS_DIR) -> PromptFile:
    """Load and validate ``<directory>/<name>.yaml``."""
    path = directory / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PromptFileError(f"{path}: cannot read the prompt file: {exc}") from exc
    try:
        return PromptFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}"
                             for e in exc.errors())
        raise PromptFileError(f"{path}: {problems}") from exc
