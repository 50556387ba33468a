"""Request validation and reply planning: what to answer, before any bytes are sent.

Pure functions over the parsed request body; the ASGI app turns a :class:`Reply` into a
JSON body or an SSE stream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._schema import sample_json
from ._text import cut_at_stop, derived_tokens, reply_seed, split_fragments, tokenize

__all__ = ["Reply", "ToolCall", "forced_tool", "plan_reply", "reply_text", "validate"]

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    fragments: tuple[str, ...]


@dataclass(frozen=True)
class Reply:
    """One choice: content fragments (one per chunk/token) or a tool call."""

    fragments: tuple[str, ...]
    finish_reason: str
    tool_call: ToolCall | None = None

    @property
    def completion_tokens(self) -> int:
        if self.tool_call is not None:
            return len(self.tool_call.fragments) + 1
        return len(self.fragments)

    @property
    def content(self) -> str:
        return "".join(self.fragments)


def validate(body: Any) -> tuple[int, str] | None:
    """``(status, detail)`` when the body is unacceptable, else ``None``."""
    if not isinstance(body, dict):
        return 422, "body: expected a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return 422, "model: field required (a non-empty string)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 422, "messages: field required (a non-empty list)"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return 422, f"messages.{i}.role: expected one of system, user, assistant, tool"
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            return 422, f"messages.{i}.content: expected a string, a list of parts or null"
        if m["role"] == "tool" and not isinstance(m.get("tool_call_id"), str):
            return 422, f"messages.{i}.tool_call_id: field required for tool messages"
        calls = m.get("tool_calls")
        if calls is not None and (m["role"] != "assistant" or not isinstance(calls, list)):
            return 422, f"messages.{i}.tool_calls: a list, on assistant messages only"
    for name in ("max_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return 422, f"{name}: expected a positive integer"
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return 422, f"{name}: expected a number"
    if (body.get("n") or 1) > 1 and body.get("stream"):
        return 400, "n>1 is not supported with stream"
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        return 422, "stop: expected a string or a list of strings"
    for name in ("stream_options", "response_format"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            return 422, f"{name}: expected an object"
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance((t.get("function") or {}).get("name"), str)
            for t in tools
        ):
            return 422, "tools: expected a list of {type: function, function: {name, parameters}}"
    choice = body.get("tool_choice")
    if choice is not None:
        if choice not in ("none", "auto", "required") and not (
            isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str)
        ):
            return 422, "tool_choice: expected none, auto, required or a function object"
        if choice == "required" and not tools:
            return 400, "tool_choice: 'required' needs tools"
        if isinstance(choice, dict) and _find_tool(tools or [], choice["function"]["name"]) is None:
            return 400, f"tool_choice: no tool named {choice['function']['name']!r} in tools"
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return 422, "response_format.type: expected text, json_object or json_schema"
        if kind == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("schema"), dict):
            return 422, "response_format.json_schema.schema: field required"
    return None


def _find_tool(tools: Sequence[Any], name: str) -> Mapping[str, Any] | None:
    for tool in tools:
        fn: Mapping[str, Any] = tool.get("function") or {}
        if fn.get("name") == name:
            return fn
    return None


def forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``function`` entry of the tool ``tool_choice`` forces, or ``None`` (text reply)."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools:
        return None
    if choice == "required":
        first: Mapping[str, Any] = tools[0].get("function") or {}
        return first
    if isinstance(choice, dict):
        return _find_tool(tools, choice["function"]["name"])
    return None


def reply_text(messages: Sequence[Mapping[str, Any]], reply: str | None, reply_tokens: int,
               choice: int = 0) -> list[str]:
    """The reply's tokens before ``stop``/``max_tokens``; joined, it is ``expected_text``."""
    if reply is not None:
        return tokenize(reply)
    return list(derived_tokens(reply_seed(messages) + choice, reply_tokens))


def plan_reply(body: Mapping[str, Any], *, reply: str | None, reply_tokens: int,
               choice: int = 0) -> Reply:
    """What choice ``choice`` of a validated request answers."""
    tool = forced_tool(body)
    if tool is not None:
        args = json.dumps(sample_json(tool.get("parameters") or {"type": "object"}),
                          ensure_ascii=False)
        call = ToolCall(id="call_" + os.urandom(12).hex(), name=str(tool.get("name", "")),
                        arguments=args, fragments=tuple(split_fragments(args)))
        return Reply(fragments=(), finish_reason="tool_calls", tool_call=call)
    fmt = body.get("response_format") or {}
    tokens = reply_text(body["messages"], reply, reply_tokens, choice)
    if fmt.get("type") == "json_schema":
        doc = json.dumps(sample_json(fmt["json_schema"]["schema"]), ensure_ascii=False)
        tokens = split_fragments(doc)
    elif fmt.get("type") == "json_object":
        tokens = split_fragments(json.dumps({"resposta": "".join(tokens)}, ensure_ascii=False))
    stop = body.get("stop")
    if stop:
        tokens, _ = cut_at_stop(tokens, [stop] if isinstance(stop, str) else stop)
    finish = "stop"
    limit = body.get("max_tokens")
    if limit is not None and len(tokens) > limit:
        tokens, finish = tokens[:limit], "length"
    return Reply(fragments=tuple(tokens), finish_reason=finish)
