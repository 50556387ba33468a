"""Conversion between langchain-core objects and Maritaca's wire format: pure functions.

Requests: messages, tools and tool_choice to JSON dicts. Responses: a ``chat.completion``
body to a ``ChatResult``, and a stream of ``chat.completion.chunk`` events to
``ChatGenerationChunk``s through ``StreamAssembler``, which holds the per-stream state
(finish reason, model, id, usage) so the metadata reaches the caller exactly once, on
the last chunk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from .errors import BadRequestError, StreamError
from .models import price_usage

PROVIDER = "maritaca"

# --------------------------------------------------------------------------- requests


def _text_of(content: str | list[Any], *, role: str) -> str | list[dict[str, Any]]:
    """Message content on the wire: a string, or OpenAI content parts when not all text."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "text": block})
        elif block.get("type") == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif block.get("type") == "image_url" and role == "user":
            parts.append({"type": "image_url", "image_url": block["image_url"]})
        elif block.get("type") in ("tool_use", "tool_call", "reasoning", "thinking"):
            continue  # carried by tool_calls, or not sent back to the model
        else:
            raise BadRequestError(
                f"Maritaca messages take text (and images in user messages); got a "
                f"{block.get('type')!r} content block in a {role} message",
                hint="Convert that block to text before calling the model",
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tool_call_to_wire(tc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": tc["id"],
        "type": "function",
        "function": {"name": tc["name"], "arguments": json.dumps(tc["args"], ensure_ascii=False)},
    }


def message_to_wire(message: BaseMessage) -> dict[str, Any]:
    """One langchain message as a Maritaca (OpenAI-style) message dict."""
    if isinstance(message, SystemMessage):
        out: dict[str, Any] = {"role": "system", "content": _text_of(message.content, role="system")}
    elif isinstance(message, HumanMessage):
        out = {"role": "user", "content": _text_of(message.content, role="user")}
    elif isinstance(message, AIMessage):
        out = {"role": "assistant", "content": _text_of(message.content, role="assistant")}
        if message.tool_calls or message.invalid_tool_calls:
            out["tool_calls"] = [_tool_call_to_wire(tc) for tc in message.tool_calls] + [
                {"id": tc["id"], "type": "function",
                 "function": {"name": tc["name"], "arguments": tc["args"]}}
                for tc in message.invalid_tool_calls
            ]
            out["content"] = out["content"] or None
    elif isinstance(message, ToolMessage):
        content = message.content
        text = _text_of(content, role="tool") if not isinstance(content, str) else content
        if not isinstance(text, str):
            text = json.dumps(text, ensure_ascii=False)
        out = {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
    elif isinstance(message, ChatMessage):
        out = {"role": message.role, "content": _text_of(message.content, role=message.role)}
    elif isinstance(message, FunctionMessage):
        out = {"role": "function", "content": message.content, "name": message.name}
    else:
        raise BadRequestError(f"Unsupported message type {type(message).__name__}",
                              hint="Use System, Human, AI or Tool messages")
    if message.name and out["role"] in ("user", "assistant", "system"):
        out["name"] = message.name
    return out


def messages_to_wire(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The ``messages`` field of a request."""
    return [message_to_wire(m) for m in messages]


def tool_choice_to_wire(choice: Any, tool_names: Sequence[str]) -> Any:
    """LangChain's tool_choice spellings to the API's: auto/none/required/{function}."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice is False:
        return "none"
    if isinstance(choice, str):
        if choice not in tool_names:
            raise BadRequestError(
                f"tool_choice {choice!r} names no bound tool (tools: {', '.join(tool_names)})",
                hint="Pass one of the bound tools' names, or 'auto', 'any', 'required', 'none'",
            )
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, dict):
        return choice
    raise BadRequestError(f"Unrecognised tool_choice {choice!r}",
                          hint="Use 'auto', 'any', 'required', 'none' or a tool name")


# -------------------------------------------------------------------------- responses


def usage_to_metadata(usage: Mapping[str, Any]) -> UsageMetadata:
    """The API's ``usage`` object as langchain's UsageMetadata."""
    input_tokens = usage.get("prompt_tokens") or 0
    output_tokens = usage.get("completion_tokens") or 0
    meta = UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=usage.get("total_tokens") or input_tokens + output_tokens,
    )
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is not None:
        meta["input_token_details"] = {"cache_read": cached}
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if reasoning is not None:
        meta["output_token_details"] = {"reasoning": reasoning}
    return meta


def _parse_tool_calls(raw: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    calls, invalid = [], []
    for item in raw:
        fn = item.get("function") or {}
        name, args = fn.get("name", ""), fn.get("arguments") or "{}"
        try:
            parsed = json.loads(args)
            if not isinstance(parsed, dict):
                raise ValueError("arguments are not a JSON object")
            calls.append(tool_call(name=name, args=parsed, id=item.get("id")))
        except ValueError as exc:
            invalid.append(invalid_tool_call(name=name, args=args, id=item.get("id"),
                                             error=str(exc)))
    return calls, invalid


def completion_to_result(body: Mapping[str, Any], requested_model: str | None = None
                         ) -> ChatResult:
    """A non-streaming ``chat.completion`` body as a ChatResult (one generation per choice);
    ``cost_brl`` is priced as the server's model name, else ``requested_model``."""
    usage = usage_to_metadata(body["usage"]) if body.get("usage") else None
    cost = price_usage(usage, body.get("model"), requested_model)
    generations = []
    for choice in body.get("choices") or []:
        raw = choice.get("message") or {}
        calls, invalid = _parse_tool_calls(raw.get("tool_calls") or [])
        metadata = {"model_name": body.get("model"), "model": body.get("model"),
                    "finish_reason": choice.get("finish_reason"), "id": body.get("id"),
                    "model_provider": PROVIDER, "cost_brl": cost}
        message = AIMessage(content=raw.get("content") or "", tool_calls=calls,
                            invalid_tool_calls=invalid, usage_metadata=usage,
                            response_metadata=metadata)
        generations.append(ChatGeneration(message=message,
                                          generation_info={"finish_reason": choice.get("finish_reason")}))
    if not generations:
        raise StreamError("The API answered without any choice", detail=str(body)[:300])
    llm_output = {"model_name": body.get("model"), "id": body.get("id")}
    if body.get("usage"):
        llm_output["token_usage"] = dict(body["usage"])
    return ChatResult(generations=generations, llm_output=llm_output)


def error_event_message(error: Any) -> str:
    """The text of a mid-stream ``{"error": ...}`` event."""
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("detail") or json.dumps(error))
    return str(error)


def _validated_text_chunk(content: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=content))


def _prebuilt_text_chunk(content: str) -> ChatGenerationChunk:
    """The same objects as ``_validated_text_chunk`` without pydantic's validation pass.

    A text delta is a plain ``str`` with every other field at its default, so validating
    it proves nothing, yet costs two thirds of ChatMaritaca's CPU per streamed chunk
    (bench/bench_core_stream.py). ``_fast_path_matches`` checks at import that both paths
    build identical state, and the slow path is used if a langchain-core release differs.
    """
    message = _new_message()
    object.__setattr__(message, "__dict__", {
        "content": content, "additional_kwargs": {}, "response_metadata": {},
        "type": "AIMessageChunk", "name": None, "id": None, "tool_calls": [],
        "invalid_tool_calls": [], "usage_metadata": None, "tool_call_chunks": [],
        "chunk_position": None})
    object.__setattr__(message, "__pydantic_fields_set__", {"content"})
    object.__setattr__(message, "__pydantic_extra__", {})
    object.__setattr__(message, "__pydantic_private__", None)
    chunk = _new_generation()
    object.__setattr__(chunk, "__dict__", {"text": content, "generation_info": None,
                                           "type": "ChatGenerationChunk", "message": message})
    object.__setattr__(chunk, "__pydantic_fields_set__", {"message", "text"})
    object.__setattr__(chunk, "__pydantic_extra__", None)
    object.__setattr__(chunk, "__pydantic_private__", None)
    return chunk


def _new_message() -> AIMessageChunk:
    return AIMessageChunk.__new__(AIMessageChunk)


def _new_generation() -> ChatGenerationChunk:
    return ChatGenerationChunk.__new__(ChatGenerationChunk)


def _state(obj: Any) -> tuple[Any, ...]:
    return (obj.__dict__, obj.__pydantic_fields_set__, obj.__pydantic_extra__,
            obj.__pydantic_private__)


def _fast_path_matches() -> bool:
    try:
        fast, slow = _prebuilt_text_chunk("ç"), _validated_text_chunk("ç")
        return (_state(fast.message) == _state(slow.message)
                and {**fast.__dict__, "message": None} == {**slow.__dict__, "message": None}
                and _state(fast)[1:] == _state(slow)[1:])
    except Exception:  # noqa: BLE001 - any mismatch means: use the validated path
        return False


text_chunk = _prebuilt_text_chunk if _fast_path_matches() else _validated_text_chunk
"""Build the chunk for a text delta (the hot path of every stream)."""


class StreamAssembler:
    """Turns stream events into chunks; keeps what belongs on the last chunk only.

    Use one per streamed response: ``feed`` each parsed event (it returns a chunk to
    yield, or None), then ``last_chunk()`` once the stream ends. ``finished`` says
    whether the server sent a finish_reason, i.e. whether the answer is complete.
    """

    __slots__ = ("finish_reason", "model", "id", "usage", "yielded", "v1", "requested_model")

    def __init__(self, *, output_version_v1: bool = False,
                 requested_model: str | None = None) -> None:
        self.requested_model = requested_model  # prices the call if the server's name is unknown
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.usage: UsageMetadata | None = None
        self.yielded = 0
        self.v1 = output_version_v1

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def feed(self, event: Mapping[str, Any]) -> ChatGenerationChunk | None:
        choices = event.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if self.id is None:
                self.id, self.model = event.get("id"), event.get("model")
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.model = event.get("model") or self.model
            if delta:
                content = delta.get("content")
                tool_calls = delta.get("tool_calls")
                if content or tool_calls:
                    self.yielded += 1
                    if tool_calls:
                        message = AIMessageChunk(content=content or "", tool_call_chunks=[
                            {"name": (tc.get("function") or {}).get("name"),
                             "args": (tc.get("function") or {}).get("arguments"),
                             "id": tc.get("id"), "index": tc.get("index")}
                            for tc in tool_calls])
                    elif not self.v1:
                        return text_chunk(content)
                    else:
                        message = AIMessageChunk(content=content)
                    if self.v1:
                        message.response_metadata["output_version"] = "v1"
                    return ChatGenerationChunk(message=message)
        elif "error" in event:
            raise StreamError("The Maritaca API reported an error mid-stream",
                              detail=error_event_message(event["error"]),
                              chunks_received=self.yielded)
        if event.get("usage"):
            self.usage = usage_to_metadata(event["usage"])
            self.model = event.get("model") or self.model
        return None

    def last_chunk(self) -> ChatGenerationChunk:
        """The closing chunk: finish reason, server model name, id, usage and its BRL
        cost (``cost_brl``: None for a model the catalogue does not price), once."""
        # "model" repeats "model_name" for the streaming guide's tip 2 (.get("model"))
        metadata: dict[str, Any] = {"model_name": self.model, "model": self.model,
                                    "finish_reason": self.finish_reason, "id": self.id,
                                    "model_provider": PROVIDER,
                                    "cost_brl": price_usage(self.usage, self.model,
                                                            self.requested_model)}
        if self.v1:
            metadata["output_version"] = "v1"
        message = AIMessageChunk(content="", usage_metadata=self.usage,
                                 response_metadata=metadata, chunk_position="last")
        return ChatGenerationChunk(message=message,
                                   generation_info={"finish_reason": self.finish_reason})
