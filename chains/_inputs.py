"""Shared pieces of the chains' typed inputs."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field

M = TypeVar("M", bound=BaseModel)


def _not_blank(value: str) -> str:
    if value and not value.strip():  # "" is left to min_length (or allowed, if optional)
        raise ValueError("must not be only whitespace")
    return value


# A text field: whitespace-only is refused with an error naming the field (LangServe
# turns the input type's validation error into a 422). Its JSON schema says so too
# (empty, or some character that is not whitespace), so clients and schema-driven
# tools know before they send.
Text = Annotated[str, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": (
    # empty (no "$": it also matches before a final newline), or some character that is
    # not str.strip()'s whitespace, spelled out: regex engines disagree on what \s covers
    r"^(?![\s\S])|[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f"
    r"\u205f\u3000]")})]

Language = Field(
    default="auto", min_length=2, max_length=40,
    description='Language of the answer, e.g. "português", "English"; "auto" answers in '
                "the language of the input.")


def coerce_input(model: type[M], value: Any) -> M:
    """The chain's input as its pydantic model: validates dicts (and another model's
    fields), passes the model's own instances through."""
    if isinstance(value, model):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_unset=True)
    return model.model_validate(value)
