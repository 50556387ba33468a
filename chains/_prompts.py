"""Prompts are data: ``prompts/<chain>.yaml``, validated on load by a strict model.

The files ship inside the ``chains`` package (``chains/prompts`` links to the top-level
``prompts/`` folder they are edited in) and load with ``importlib.resources``, so an
installed wheel finds them as the source tree does.

A chain's words all live in its file: its title and description, the messages, other
message lists it picks between (``variants``), the words an input option stands for
(``choices``) and the answer's token budget. Unknown keys, a missing variable, a
variable no message uses and a choice for a variable that does not exist are all
errors naming the file and the key, so a typo in a prompt fails at import, not
mid-request.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Literal

import yaml
from langchain_core.prompts import ChatPromptTemplate
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .limits import MAX_TOKENS_RANGE

__all__ = ["PromptFile", "PromptFileError", "load_prompt", "prompt_dir", "template_variables"]

_LOW, _HIGH = MAX_TOKENS_RANGE


class PromptFileError(ValueError):
    """A prompt file is missing, unreadable or does not match the prompt schema."""


class PromptMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Choice(BaseModel):
    """What one value of an input option puts in the prompt, and the tokens it adds to
    the answer's budget. Written as plain text when it adds none."""

    model_config = ConfigDict(extra="forbid")

    text: str
    max_tokens: int = Field(default=0, ge=0, le=_HIGH)


class Variant(BaseModel):
    """Another message list of the same chain (e.g. the map step of a summary)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[PromptMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=_LOW, le=_HIGH)


def template_variables(text: str) -> set[str]:
    """The ``{name}`` slots of an f-string template."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def _used(messages: list[PromptMessage]) -> set[str]:
    return set().union(*(template_variables(m.content) for m in messages))


class PromptFile(BaseModel):
    """One chain's words: title, description, example input, messages and budget."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    example: dict[str, Any] = Field(min_length=1)
    variables: list[str]
    max_tokens: int = Field(ge=_LOW, le=_HIGH)
    choices: dict[str, dict[str, Choice]] = Field(default_factory=dict)
    messages: list[PromptMessage] = Field(min_length=1)
    variants: dict[str, Variant] = Field(default_factory=dict)
    _source: str = PrivateAttr(default="<prompt>")

    @field_validator("choices", mode="before")
    @classmethod
    def _plain_text_choices(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {var: {k: {"text": v} if isinstance(v, str) else v for k, v in options.items()}
                if isinstance(options, Mapping) else options for var, options in value.items()}

    @model_validator(mode="after")
    def _variables_match(self) -> PromptFile:
        declared = set(self.variables)
        if missing := _used(self.messages) - declared:
            raise ValueError(f"messages use {sorted(missing)} but `variables` does not list them")
        for name, variant in self.variants.items():
            if extra := _used(variant.messages) - declared:
                raise ValueError(f"variants.{name} uses {sorted(extra)}, not in `variables`")
        used = _used(self.messages).union(*(_used(v.messages) for v in self.variants.values()))
        if unused := declared - used:
            raise ValueError(f"`variables` lists {sorted(unused)} but no message uses them")
        if unknown := set(self.choices) - declared:
            raise ValueError(f"choices for {sorted(unknown)}, not in `variables`")
        return self

    def template(self, variant: str | None = None) -> ChatPromptTemplate:
        """The main messages, or those of ``variant``, as a chat prompt."""
        return ChatPromptTemplate.from_messages(
            [(m.role, m.content) for m in self._variant(variant).messages]
            if variant else [(m.role, m.content) for m in self.messages])

    def values(self, inputs: BaseModel) -> dict[str, str]:
        """The template's variables from a chain's input, each option as its words."""
        values = {}
        for name in self.variables:
            value = getattr(inputs, name)
            values[name] = self.choices[name][value].text if name in self.choices else value
        return values

    def budget(self, inputs: BaseModel, variant: str | None = None) -> int:
        """The answer's max_tokens for these inputs when the client sets none: the
        prompt's ``max_tokens`` plus what each chosen option adds; a variant with its
        own ``max_tokens`` uses that as is."""
        if variant and (own := self._variant(variant).max_tokens):
            return own
        added = sum(options[getattr(inputs, name)].max_tokens
                    for name, options in self.choices.items())
        return min(self.max_tokens + added, _HIGH)

    def largest_budget(self) -> int:
        """The most :meth:`budget` gives: the default max_tokens a config schema shows."""
        added = sum(max(c.max_tokens for c in options.values()) if options else 0
                    for options in self.choices.values())
        return max([min(self.max_tokens + added, _HIGH),
                    *(v.max_tokens or 0 for v in self.variants.values())])

    def _variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise PromptFileError(f"{self._source}: no variants.{name} (the chain needs it)")
        return self.variants[name]


def prompt_dir() -> Traversable:
    """The folder of the prompt files, inside the installed ``chains`` package."""
    return resources.files("chains") / "prompts"


@cache
def load_prompt(name: str, directory: Traversable | None = None) -> PromptFile:
    """Load and validate ``<name>.yaml`` from ``directory`` (default :func:`prompt_dir`)."""
    path = (directory if directory is not None else prompt_dir()) / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PromptFileError(f"{path}: cannot read the prompt file: {exc}") from exc
    try:
        prompt = PromptFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}"
                             for e in exc.errors())
        raise PromptFileError(f"{path}: {problems}") from exc
    prompt._source = str(path)
    return prompt
