"""Check a ``/chat/completions`` body the way the API does, before anything is answered.

Use :func:`validate` first: every other part of the emulator assumes a body it accepted.
The statuses and details follow Maritaca's API (422 for a malformed field, 400 for a
combination it refuses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["find_tool", "validate"]

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


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
        if isinstance(choice, dict) and find_tool(tools or [], choice["function"]["name"]) is None:
            return 400, f"tool_choice: no tool named {choice['function']['name']!r} in tools"
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return 422, "response_format.type: expected text, json_object or json_schema"
        if kind == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("schema"), dict):
            return 422, "response_format.json_schema.schema: field required"
    return None


def find_tool(tools: Sequence[Any], name: str) -> Mapping[str, Any] | None:
    """The ``function`` entry of the tool called ``name``, or ``None``."""
    for tool in tools:
        fn: Mapping[str, Any] = tool.get("function") or {}
        if fn.get("name") == name:
            return fn
    return None
