"""What the emulator answers to an accepted request, before any bytes are sent.

:func:`plan_reply` turns a validated ``/chat/completions`` body into one :class:`Reply` per
choice: the derived or fixed text cut by ``stop`` and ``max_tokens``, a JSON document for
``response_format``, or a forced tool call with schema-valid arguments. The model limits
come from :mod:`maritaca.models`, the project's one catalogue. ``_responses`` writes a
``Reply`` on the wire.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import DEFAULT_MODEL, MODELS, ModelInfo, get_model_info
from ._schema import sample_json
from ._text import cut_at_stop, derived_tokens, reply_seed, split_fragments, tokenize
from ._validation import find_tool

__all__ = ["Reply", "ToolCall", "model_limits", "plan_reply", "reply_text"]


def model_limits(name: str) -> ModelInfo:
    """The catalogue entry for ``name``; a model the catalogue does not list (the API
    would pass it through) gets the default model's limits."""
    return get_model_info(name) or MODELS[DEFAULT_MODEL]


@dataclass(frozen=True)
class ToolCall:
    """The one tool call of a reply; ``fragments`` are the streamed pieces of ``arguments``."""

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


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``function`` entry of the tool ``tool_choice`` forces, or ``None`` (text reply)."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools:
        return None
    if choice == "required":
        first: Mapping[str, Any] = tools[0].get("function") or {}
        return first
    if isinstance(choice, dict):
        return find_tool(tools, choice["function"]["name"])
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
    tool = _forced_tool(body)
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
        tokens = cut_at_stop(tokens, [stop] if isinstance(stop, str) else stop)
    finish = "stop"
    limit = body.get("max_tokens")
    if limit is not None:  # a larger max_tokens is clamped to what the model can write
        limit = min(limit, model_limits(body["model"]).max_output_tokens)
    if limit is not None and len(tokens) > limit:
        tokens, finish = tokens[:limit], "length"
    return Reply(fragments=tuple(tokens), finish_reason=finish)
