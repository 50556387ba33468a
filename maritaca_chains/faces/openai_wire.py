"""OpenAI's Chat Completions wire, rendered: pure functions, no run plumbing.

Use ``CompletionWire`` per answer for its ``chat.completion.chunk`` SSE events (a chunk
costs one JSON string encoding: the rest of each event is made once) and its
``chat.completion``; ``openai_error`` for ``{"error": {"message", "type", "param",
"code"}}`` bodies, which the ``openai`` SDKs turn into their typed exceptions. What an
exception means (status, cause) comes from ``error_responses.describe_error``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ..error_responses import describe_error, retry_after_header
from ..ledger import RunLedger

__all__ = ["DONE", "CompletionWire", "error_type", "openai_error", "openai_usage"]

DONE = b"data: [DONE]\n\n"

# OpenAI's error ``type`` for each status we answer with
_TYPES = {400: "invalid_request_error", 401: "authentication_error",
          403: "permission_error", 404: "not_found_error", 409: "conflict_error",
          413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (5xx: ``server_error``)."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(status: int, message: str, code: str | None,
                 param: str | None = None) -> dict[str, Any]:
    """The body of an error answer in OpenAI's shape."""
    return {"error": {"message": message, "type": error_type(status), "param": param,
                      "code": code}}


def describe_openai(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of a failed run, the cause named as on every face
    (``code`` is ``error_responses``' type: ``rate_limit``, ``upstream_timeout``...)."""
    error = describe_error(exc)
    headers = {}
    if "retry_after" in error:  # as OpenAI sends it: whole seconds, and the exact wait in ms
        headers = {"Retry-After": retry_after_header(error["retry_after"]),
                   "retry-after-ms": str(round(error["retry_after"] * 1000))}
    param = None
    if error.get("errors"):
        param = ".".join(str(p) for p in error["errors"][0]["loc"]) or None
    return (error["status_code"],
            openai_error(error["status_code"], error["message"], error["type"], param), headers)


def openai_usage(usage: RunLedger) -> dict[str, Any]:
    """A run's tokens as OpenAI's ``usage`` object (every model call of the run)."""
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens}}


class CompletionWire:
    """One answer's id, creation time and model, and its events and body."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        head = orjson.dumps({"id": self.id, "object": "chat.completion.chunk",
                             "created": self.created, "model": self.model})[:-1]
        self._head = b"data: " + head + b',"choices":[{"index":0,"delta":'
        self._text_head = self._head + b'{"content":'
        self._text_tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def _event(self, body: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({"id": self.id, "object": "chat.completion.chunk",
                                         "created": self.created, "model": self.model,
                                         **body}) + b"\n\n"

    def role_chunk(self) -> bytes:
        """The first event: the assistant's role, no text yet (as OpenAI sends it)."""
        return self._head + b'{"role":"assistant","content":""},"logprobs":null,' \
                            b'"finish_reason":null}]}\n\n'

    def text_chunk(self, text: str) -> bytes:
        """One chunk of the answer's text."""
        return self._text_head + orjson.dumps(text) + self._text_tail

    def finish_chunk(self, finish_reason: str) -> bytes:
        """The event that says why the answer ended (``stop``, or ``length`` when cut)."""
        return self._event({"choices": [{"index": 0, "delta": {}, "logprobs": None,
                                         "finish_reason": finish_reason}]})

    def usage_chunk(self, usage: RunLedger) -> bytes:
        """The last event with ``stream_options.include_usage``: no choices, the usage,
        and beside it the run's cost in BRL (``cost_brl``, null when unknown)."""
        return self._event({"choices": [], "usage": openai_usage(usage),
                            "cost_brl": usage.cost_brl})

    @staticmethod
    def error_chunk(exc: BaseException) -> bytes:
        """A failure after the answer began: the SDKs raise on an event with ``error``."""
        _, body, _ = describe_openai(exc)
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def completion(self, text: str, finish_reason: str, usage: RunLedger) -> dict[str, Any]:
        """The whole answer as a ``chat.completion`` (``stream: false``)."""
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None},
                             "logprobs": None, "finish_reason": finish_reason}],
                "usage": openai_usage(usage), "cost_brl": usage.cost_brl}
