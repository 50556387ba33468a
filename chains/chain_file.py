"""A chain is one YAML file: this module reads it, strictly, into a ``ChainFile``.

Use :func:`read_chain_file` to load a file (a path, or a packaged ``Traversable``);
every problem is a :class:`ChainFileError` naming the file, the key and what to do, so
a typo fails when the file is loaded (``maritaca-chains check``, server start), never
mid-request. The format (README, "Your own chain")::

    title: Tradução                      # for people, in pt-BR
    description: Traduz um texto.
    example: {text: "Bom dia!"}          # a valid input, used by pages and --render
    main: text                           # the field a plain text fills (default: first)
    inputs:                              # typed inputs: text, number, integer, boolean, choice
      text: {type: text, label: Texto, max_length: 4000, description: O texto.}
      tone:
        type: choice
        default: neutro
        choices:                         # each value: the words it puts in the prompt and
          neutro: {text: tom neutro, max_tokens: 0}       # the tokens it adds to the budget
          formal: {text: tom formal, max_tokens: 50}
    max_tokens: 300                      # the answer's budget (plus the choices' additions)
    messages:
      - {role: system, content: "Traduza para o inglês, em {tone}."}
      - {role: user, content: "{text}"}
    variants:                            # other messages, used when inputs match `when`
      vazio: {when: {text: ""}, messages: [...]}
    output: text                         # or {json_schema: {...}}: parsed and validated
    strategy:                            # a field longer than the model's context:
      map_reduce: {field: text, max_tokens: 500, messages: [...]}
    history: thread                      # a conversation: the thread's earlier turns go
                                         # before the last (user) message
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .limits import MAX_TOKENS_RANGE

__all__ = ["ChainFile", "ChainFileError", "InputSpec", "Problem", "read_chain_file",
           "template_variables"]

_LOW, _HIGH = MAX_TOKENS_RANGE
INPUT_TYPES = ("text", "number", "integer", "boolean", "choice")
DEFAULT_TEXT_LIMIT = 10_000  # a text input's max_length when the file sets none


class Problem(BaseModel):
    """One error in a chain file: where (``key``, dotted) and what to do (``message``)."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ChainFileError(ValueError):
    """A chain file is missing, unreadable or breaks the format: ``path`` and each
    ``problems`` entry (key and what to do)."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"{path}: " + "; ".join(map(str, problems)))


class _Problem(ValueError):
    """Raised inside the format's validators: a problem with its own key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Choice(BaseModel):
    """What one value of a choice puts in the prompt, and the tokens it adds to the
    answer's budget (``None``: this choice gives no budget)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    max_tokens: int | None = Field(default=None, ge=0, le=_HIGH)


class InputSpec(BaseModel):
    """One typed input: its type, limits, default and what people read about it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "number", "integer", "boolean", "choice"]
    label: str = ""
    description: str = ""
    placeholder: str = ""
    examples: list[Any] = Field(default_factory=list)
    default: Any = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    minimum: float | None = None
    maximum: float | None = None
    choices: dict[str, Choice] = Field(default_factory=dict)
    lines: int = Field(default=1, ge=1, le=40)
    hidden: bool = False
    _has_default: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_text_choices(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("choices"), Mapping):
            value = {**value, "choices": {
                str(k): {"text": v} if isinstance(v, str) else v
                for k, v in value["choices"].items()}}
        return value

    @model_validator(mode="after")
    def _fits_its_type(self) -> InputSpec:
        only = {"min_length": "text", "max_length": "text", "lines": "text",
                "placeholder": "text", "minimum": "number", "maximum": "number",
                "choices": "choice"}
        for key, kind in only.items():
            if key in self.model_fields_set and self.type != kind and not (
                    kind == "number" and self.type == "integer"):
                raise _Problem(key, f"only {kind} inputs have {key}; remove it or make the "
                                    f"input type: {kind}")
        if self.type == "choice":
            if not self.choices:
                raise _Problem("choices", "a choice input lists its values under choices: "
                                          "add them")
            budgets = [v.max_tokens is not None for v in self.choices.values()]
            if any(budgets) and not all(budgets):
                missing = [k for k, v in self.choices.items() if v.max_tokens is None]
                raise _Problem(f"choices.{missing[0]}",
                               "this choice has no max_tokens while others of the same input "
                               "do (budgets are per choice): add max_tokens (0 adds none)")
        if self.default is not None:
            self._check_value("default", self.default)
        for index, example in enumerate(self.examples):
            self._check_value(f"examples.{index}", example)
        return self

    def _check_value(self, key: str, value: Any) -> None:
        kinds: dict[str, type | tuple[type, ...]] = {"text": str, "choice": str, "boolean": bool,
                                                     "integer": int, "number": (int, float)}
        ok = isinstance(value, kinds[self.type]) and not (
            self.type in ("integer", "number") and isinstance(value, bool))
        if not ok:
            raise _Problem(key, f"{value!r} is not a {self.type}: give a {self.type} value")
        if self.type == "choice" and value not in self.choices:
            raise _Problem(key, f"{value!r} is not one of the choices "
                                f"{sorted(self.choices)}: use one of them")

    @property
    def required(self) -> bool:
        return self.default is None

    def as_words(self, value: Any) -> str:
        """The input's value as the prompt says it."""
        if self.type == "choice":
            return self.choices[value].text
        if self.type == "boolean":
            return "sim" if value else "não"
        if self.type == "number" and isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    def budget(self, value: Any) -> int:
        """The tokens ``value`` adds to the answer's budget."""
        if self.type == "choice":
            return self.choices[value].max_tokens or 0
        return 0


class Variant(BaseModel):
    """Messages used instead of the main ones when the inputs match ``when``."""

    model_config = ConfigDict(extra="forbid")

    when: dict[str, Any] = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)


class JsonOutput(BaseModel):
    """A JSON answer following ``json_schema`` (parsed, validated, streamed as partial
    objects on the faces that take objects)."""

    model_config = ConfigDict(extra="forbid")

    json_schema: dict[str, Any] = Field(min_length=1)


class MapReduce(BaseModel):
    """A ``field`` longer than the model's context is split; each part is summarised
    with ``messages`` (at most ``max_tokens``), and the joined parts go through the main
    messages in its place."""

    model_config = ConfigDict(extra="forbid")

    field: str
    max_tokens: int = Field(ge=_LOW, le=_HIGH)
    messages: list[Message] = Field(min_length=1)


class Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    map_reduce: MapReduce


def template_variables(text: str) -> set[str]:
    """The ``{name}`` slots of an f-string template."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def _used(messages: list[Message]) -> set[str]:
    return set().union(*(template_variables(m.content) for m in messages))


class ChainFile(BaseModel):
    """One chain: what people read, its inputs, messages, budget, output and strategy."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    example: dict[str, Any] = Field(min_length=1)
    main: str | None = None
    inputs: dict[str, InputSpec] = Field(min_length=1)
    max_tokens: int = Field(ge=_LOW, le=_HIGH)
    messages: list[Message] = Field(min_length=1)
    variants: dict[str, Variant] = Field(default_factory=dict)
    output: Literal["text"] | JsonOutput = "text"
    strategy: Strategy | None = None
    history: Literal["none", "thread"] = "none"
    _source: str = PrivateAttr(default="<chain>")
    _version: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _consistent(self) -> ChainFile:
        declared = set(self.inputs)
        for key, messages in self._message_lists():
            for index, message in enumerate(messages):
                for name in sorted(template_variables(message.content) - declared):
                    raise _Problem(f"{key}.{index}.content",
                                   f"uses {{{name}}} but no input declares it: add "
                                   f"inputs.{name} or fix the name (write {{{{ and }}}} "
                                   f"for literal braces)")
        used = set().union(*(_used(m) for _, m in self._message_lists()))
        for name in self.inputs:
            if name not in used:
                raise _Problem(f"inputs.{name}", f"no message uses {{{name}}}: use it in "
                                                 f"a message or remove the input")
        if self.main is not None:
            if self.main not in self.inputs:
                raise _Problem("main", f"{self.main!r} is not an input: name one of "
                                       f"{sorted(self.inputs)}")
            if self.inputs[self.main].type != "text":
                raise _Problem("main", "the main field must be a text input: name one "
                                       "whose type is text")
        elif not any(spec.type == "text" for spec in self.inputs.values()):
            raise _Problem("inputs", "a chain needs a text input (the main field a plain "
                                     "text fills): add one")
        for name, variant in self.variants.items():
            for field, value in variant.when.items():
                if field not in self.inputs:
                    raise _Problem(f"variants.{name}.when.{field}",
                                   "not an input: name one of the inputs")
                try:
                    self.inputs[field]._check_value("", value)
                except _Problem as exc:
                    raise _Problem(f"variants.{name}.when.{field}", str(exc)) from None
        if self.strategy is not None:
            field = self.strategy.map_reduce.field
            if field not in self.inputs or self.inputs[field].type != "text":
                raise _Problem("strategy.map_reduce.field",
                               f"{field!r} is not a text input: name the long text input")
        if self.history == "thread":
            self._check_conversation()
        if isinstance(self.output, JsonOutput):
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(self.output.json_schema)
            except SchemaError as exc:
                raise _Problem("output.json_schema", f"not a valid JSON Schema: "
                                                     f"{exc.message}") from None
        return self

    def _check_conversation(self) -> None:
        """``history: thread`` puts the earlier turns before the last message, which must
        be the user's new one; a map-reduce or a JSON answer has no turns to remember."""
        if self.strategy is not None:
            raise _Problem("history", "a chain with history: thread cannot have a strategy "
                                      "(remove one of them)")
        if self.output != "text":
            raise _Problem("history", "a chain with history: thread answers text: remove "
                                      "output or history")
        for key, messages in self._message_lists():
            if messages[-1].role != "user":
                raise _Problem(f"{key}.{len(messages) - 1}.role",
                               "with history: thread the last message is the user's new one "
                               "(the earlier turns go before it): make it role: user")

    def _message_lists(self) -> list[tuple[str, list[Message]]]:
        lists = [("messages", self.messages)]
        lists += [(f"variants.{n}.messages", v.messages) for n, v in self.variants.items()]
        if self.strategy is not None:
            lists.append(("strategy.map_reduce.messages", self.strategy.map_reduce.messages))
        return lists

    # ------------------------------------------------------------------ reading it
    @property
    def source(self) -> str:
        """Where the file was read from."""
        return self._source

    @property
    def version(self) -> str:
        """A short hash of the file's bytes: which words answered (run log, /healthz)."""
        return self._version

    @property
    def main_field(self) -> str:
        """The input a plain text fills: ``main``, or the first text input."""
        return self.main or next(n for n, s in self.inputs.items() if s.type == "text")

    @property
    def output_kind(self) -> Literal["text", "json"]:
        return "text" if self.output == "text" else "json"

    def largest_budget(self) -> int:
        """The most an answer's budget can be (the map step's included)."""
        added = sum(max((c.max_tokens or 0) for c in spec.choices.values())
                    for spec in self.inputs.values() if spec.type == "choice")
        own = min(self.max_tokens + added, _HIGH)
        return max(own, self.strategy.map_reduce.max_tokens if self.strategy else 0)


def _problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]
               if not str(part).startswith(("function-after", "literal[", "JsonOutput"))]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _Problem):
            problems.append(Problem(key=".".join([*loc, cause.key] if cause.key else loc),
                                    message=str(cause)))
            continue
        key = ".".join(loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key: remove it or fix its spelling"
        elif kind == "missing":
            message = "missing: add it"
        elif key.startswith("output"):
            key, message = "output", ("must be text, or {json_schema: {...}} for a JSON "
                                      "answer")
        else:
            message = f"{error['msg']}: fix the value"
        problems.append(Problem(key=key, message=message))
    # one problem per key (a union's branches may each complain)
    return list({p.key: p for p in problems}.values())


def read_chain_file(path: str | Path | Traversable) -> ChainFile:
    """Read and validate one chain file; :class:`ChainFileError` lists what is wrong."""
    where = str(path)
    try:
        raw = path.read_bytes() if not isinstance(path, str) else Path(path).read_bytes()
    except OSError as exc:
        raise ChainFileError(where, [Problem(key="", message=f"cannot read the file: "
                                                             f"{exc.strerror or exc}")]) from exc
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ChainFileError(where, [Problem(key="", message=f"not valid YAML (UTF-8): {exc}")
                                     ]) from exc
    if not isinstance(data, dict):
        raise ChainFileError(where, [Problem(key="", message="a chain file is a YAML mapping "
                                                             "(title:, inputs:, messages: ...)")])
    try:
        chain = ChainFile.model_validate(data)
    except ValidationError as exc:
        raise ChainFileError(where, _problems(exc)) from exc
    chain._source = where
    chain._version = hashlib.sha256(raw).hexdigest()[:8]
    return chain
