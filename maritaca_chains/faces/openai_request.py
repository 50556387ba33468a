"""A Chat Completions request body, checked: what the ``/v1`` face will run, or an
``OpenAIError`` (OpenAI's error shape) naming the parameter that is wrong.

``parse_completion_request(body)`` reads the fields every target shares (``model``,
``messages``, ``stream``, ``stream_options.include_usage``, ``temperature``,
``max_tokens``/``max_completion_tokens``) and refuses, by name, the parameters that
would change the answer and that nothing here honours (``n`` > 1, ``tools``, ``stop``,
``response_format`` other than text, ``logprobs``, ``top_p``, penalties, ``seed``,
``reasoning_effort``...).
Bookkeeping fields (``user``, ``metadata``, ``store``, ``stream_options``...) pass.
``chain_input`` and ``chat_messages`` turn the messages into a chain's input or a
plain chat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from chains import MAX_TOKENS_RANGE, TEMPERATURE_RANGE

from .openai_wire import error_type

__all__ = ["CompletionRequest", "OpenAIError", "chain_input", "chat_messages",
           "parse_completion_request", "request_schema"]


class OpenAIError(HTTPException):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param",
    "code"}}`` with its status (and headers, e.g. ``Retry-After``)."""

    def __init__(self, status_code: int, message: str, code: str | None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, message, headers=headers)
        self.message, self.code, self.param = message, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": error_type(self.status_code),
                          "param": self.param, "code": self.code}}


def invalid(param: str | None, message: str, code: str = "invalid_value") -> OpenAIError:
    """A 422 naming ``param``."""
    return OpenAIError(422, message, code, param)


@dataclass
class CompletionRequest:
    """What a Chat Completions body asks for (checked)."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    configurable: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens
    input: dict[str, Any] | None = None  # a chain's other fields (extra_body)


# parameter -> the values that leave the answer as it is (anything else is refused)
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (None, 1), "tools": (None, []), "functions": (None, []), "stop": (None, [], ""),
    "logprobs": (None, False), "top_logprobs": (None, 0), "top_p": (None, 1, 1.0),
    "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
    "seed": (None,), "logit_bias": (None, {}), "audio": (None,), "prediction": (None,),
    "modalities": (None, ["text"]), "reasoning_effort": (None,), "verbosity": (None,),
    "web_search_options": (None,),
}


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of ``neutral``, of the same JSON type too (``true`` is not
    ``1``, though Python finds them equal)."""
    return any(value == kept and type(value) is type(kept) for kept in neutral)


def _number(body: dict[str, Any], name: str, low: float, high: float, *,
            integer: bool) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # 256.0 is 256 (JSON Schema's integer)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "a whole number" if integer else "a number"
        raise invalid(name, f"{name} must be {what} from {low:g} to {high:g}")
    return value


def parse_completion_request(body: Any) -> CompletionRequest:
    """``body`` (decoded JSON) as a ``CompletionRequest``, or ``OpenAIError`` 422."""
    if not isinstance(body, dict):
        raise invalid(None, "The body must be a JSON object (a Chat Completions request)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "model is required: a chain's name or a model's (GET /v1/models)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise invalid("messages", "messages must be a non-empty list of {role, content}")
    for index, message in enumerate(messages):  # every message well formed, on any target
        if message["role"] not in _ROLES or message.get("tool_calls") not in (None, []):
            raise invalid(f"messages[{index}]", f"only system, developer, user and "
                                                f"assistant text messages are understood "
                                                f"here, not {message['role'][:40]!r} or "
                                                f"tool calls")
        _text(message, index)
    for name, neutral in _NEUTRAL.items():
        if name in body and not _neutral(body[name], neutral):
            raise invalid(name, f"{name} is not supported here; leave it out (the answer "
                                f"can be tuned with temperature and max_tokens)",
                          "unsupported_parameter")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise invalid("response_format", "only text answers: leave response_format out",
                      "unsupported_parameter")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "stream must be true or false")
    options = body.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict) or options.get("include_usage") not in (None, True, False):
        raise invalid("stream_options", "stream_options must be an object; its "
                                        "include_usage true or false")
    configurable: dict[str, Any] = {}
    temperature = _number(body, "temperature", *TEMPERATURE_RANGE, integer=False)
    if temperature is not None:
        configurable["temperature"] = temperature
    limits = [v for name in ("max_completion_tokens", "max_tokens")
              if (v := _number(body, name, *MAX_TOKENS_RANGE, integer=True)) is not None]
    if len(limits) > 1:
        raise invalid("max_tokens", "send one of max_tokens and max_completion_tokens "
                                    "(the same limit), not both")
    if limits:
        configurable["max_tokens"] = limits[0]
    extra = body.get("input")
    if extra is not None and not isinstance(extra, dict):
        raise invalid("input", "input must be an object of the chain's fields")
    return CompletionRequest(model, messages, bool(stream), bool(options.get("include_usage")),
                             configurable, extra)


def _text(message: dict[str, Any], index: int) -> str:
    """A message's text: a string, or its text parts joined (other parts refused)."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise invalid(f"messages[{index}].content", "content must be text or a list of parts")
    texts = []
    for piece in content:
        if not (isinstance(piece, dict) and piece.get("type") == "text"
                and isinstance(piece.get("text"), str)):
            kind = piece.get("type") if isinstance(piece, dict) else type(piece).__name__
            raise invalid(f"messages[{index}].content",
                          f"only text parts are understood here, not {kind!r}")
        texts.append(piece["text"])
    return "\n".join(texts)


def chain_input(request: CompletionRequest, main_field: str) -> dict[str, Any]:
    """The chain's input: the last user message's text as ``main_field``, the other fields
    from ``input``."""
    extra = dict(request.input or {})
    if main_field in extra:
        raise invalid(f"input.{main_field}", f"{main_field} comes from the last user "
                                             f"message; leave it out of input")
    for index in range(len(request.messages) - 1, -1, -1):
        if request.messages[index]["role"] == "user":
            return {**extra, main_field: _text(request.messages[index], index)}
    raise invalid("messages", f"no user message: its text fills the chain's {main_field}")


def earlier_turns(request: CompletionRequest) -> list[tuple[str, str]]:
    """The user and assistant turns before the last user message, oldest first, as a
    conversation chain's ``history`` (the client keeps the conversation; system messages
    are the chain's own)."""
    last = max((i for i, m in enumerate(request.messages) if m["role"] == "user"), default=0)
    return [(m["role"], _text(m, i)) for i, m in enumerate(request.messages[:last])
            if m["role"] in ("user", "assistant")]


_ROLES = {"system": SystemMessage, "developer": SystemMessage, "user": HumanMessage,
          "assistant": AIMessage}


def chat_messages(request: CompletionRequest) -> list[BaseMessage]:
    """The messages of a plain chat with a backend model (text only, no tools)."""
    if request.input is not None:
        raise invalid("input", f"input is for chains; {request.model!r} is a model: "
                               f"send the conversation in messages")
    out: list[BaseMessage] = []
    for index, message in enumerate(request.messages):
        out.append(_ROLES[message["role"]](content=_text(message, index)))
    return out


def request_schema(models: list[str]) -> dict[str, Any]:
    """The JSON schema of what this face reads in a body (for the OpenAPI docs): what
    it refuses with 422 is outside it, except what depends on the model named (a
    chain's input, below)."""
    low_t, high_t = TEMPERATURE_RANGE
    low_m, high_m = MAX_TOKENS_RANGE
    limit = {"anyOf": [{"type": "integer", "minimum": low_m, "maximum": high_m},
                       {"type": "null"}]}
    text_part = {"type": "object", "required": ["type", "text"],
                 "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
    neutral = {name: {"enum": [v for i, v in enumerate(values) if v not in values[:i]]}
               for name, values in _NEUTRAL.items()}  # 1 and 1.0 are one JSON value
    return {"title": "Chat Completions request", "type": "object",
            "description": "With model a chain, the last user message's text fills the "
                           "chain's main field and input its other fields: a value the "
                           "chain refuses (an empty topic, a missing field) is a 422 "
                           "naming it (param). With model a backend model, input is "
                           "refused. The parameters nothing here honours take only their "
                           "neutral values.",
            "required": ["model", "messages"],
            "not": {"required": ["max_tokens", "max_completion_tokens"]},
            "properties": {
                **neutral,
                "model": {"type": "string", "enum": models,
                          "description": "A chain (its main field from the last user "
                                         "message) or a backend model (a plain chat)"},
                "messages": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["role"], "properties": {
                        "role": {"enum": sorted(_ROLES)},
                        "content": {"anyOf": [{"type": "string"}, {"type": "null"},
                                              {"type": "array", "items": text_part}]},
                        "tool_calls": {"anyOf": [{"type": "null"},
                                                 {"type": "array", "maxItems": 0}]}}}},
                "stream": {"type": ["boolean", "null"]},
                "stream_options": {"anyOf": [{"type": "null"}, {
                    "type": "object", "properties": {
                        "include_usage": {"type": ["boolean", "null"]}}}]},
                "response_format": {"anyOf": [{"type": "null"}, {
                    "type": "object", "required": ["type"], "additionalProperties": False,
                    "properties": {"type": {"const": "text"}}}]},
                "temperature": {"anyOf": [{"type": "number", "minimum": low_t,
                                           "maximum": high_t}, {"type": "null"}]},
                "max_tokens": limit, "max_completion_tokens": limit,
                "input": {"type": ["object", "null"],
                          "description": "A chain's other fields (extra_body)"}}}
