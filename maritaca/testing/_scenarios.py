"""Scenarios: what the emulator does to the next ``/chat/completions`` request.

Queue them with ``emu.enqueue(...)``; each applies to exactly one request, in FIFO order,
after which the emulator goes back to its default behaviour::

    emu.enqueue(Scenario.rate_limit(retry_after=1.5), Scenario.ok())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..models import DEFAULT_MODEL, MODELS

__all__ = ["ERROR_SCENARIOS", "FAULTS", "Scenario", "context_detail"]

# Scenarios answered with an HTTP error before any auth or body validation.
ERROR_SCENARIOS = frozenset(
    {"unauthorized", "bad_request", "context_too_long", "rate_limit", "server_error", "http_error"}
)
# Names accepted in ``MaritacaEmulator(faults=...)``.
FAULTS = ("rate_limit", "server_error", "drop", "error_event", "slow_first_token")


@dataclass(frozen=True)
class Scenario:
    """One scripted behaviour. Build it with a constructor, not the fields.

    Error scenarios (``unauthorized``, ``bad_request``, ``context_too_long``, ``rate_limit``,
    ``server_error``, ``http_error``) answer at once, whatever the request; the others
    (``ok``, ``slow_first_token``, ``token_delay``, ``drop``, ``error_event``) run after the
    normal auth and body checks.
    """

    name: str = "ok"
    status: int | None = None
    detail: str | None = None
    body: Any = None
    retry_after: float | str | None = None
    delay: float | None = None
    after_chunks: int | None = None
    message: str | None = None
    reply: str | None = None
    reply_tokens: int | None = None

    # --- success -----------------------------------------------------------------------
    @classmethod
    def ok(cls, reply: str | None = None, reply_tokens: int | None = None) -> Scenario:
        """A normal answer; optionally a fixed ``reply`` or another derived length."""
        return cls("ok", reply=reply, reply_tokens=reply_tokens)

    @classmethod
    def slow_first_token(cls, delay: float = 2.0) -> Scenario:
        """Headers at once, then ``delay`` seconds before the first chunk (timeouts, TTFT)."""
        return cls("slow_first_token", delay=delay)

    @classmethod
    def token_delay(cls, delay: float) -> Scenario:
        """A normal answer with ``delay`` seconds between content chunks."""
        return cls("token_delay", delay=delay)

    # --- HTTP errors ---------------------------------------------------------------------
    @classmethod
    def unauthorized(cls) -> Scenario:
        """401 ``{"detail": "Invalid API key"}``."""
        return cls("unauthorized", status=401, detail="Invalid API key")

    @classmethod
    def bad_request(cls, detail: str = "Invalid request parameters", status: int = 400) -> Scenario:
        """400 (or 422) ``{"detail": detail}``."""
        return cls("bad_request", status=status, detail=detail)

    @classmethod
    def context_too_long(cls) -> Scenario:
        """400 saying the prompt exceeds the model's context length."""
        limit = MODELS[DEFAULT_MODEL].context_length
        return cls("context_too_long", status=400,
                   detail=context_detail(limit + limit // 2, limit))

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = None) -> Scenario:
        """429 ``{"detail": "Rate limit exceeded: ..."}``; ``Retry-After`` when given
        (a float of seconds, or a string sent as is, e.g. an HTTP-date)."""
        return cls(
            "rate_limit",
            status=429,
            detail="Rate limit exceeded: too many requests per minute for this key",
            retry_after=retry_after,
        )

    @classmethod
    def server_error(cls, status: int = 500) -> Scenario:
        """A 5xx with the ``{"message": "..."}`` body variant."""
        return cls("server_error", status=status, message="Internal server error")

    @classmethod
    def http_error(cls, status: int, body: Any = None, retry_after: float | str | None = None
                   ) -> Scenario:
        """Any status with any JSON ``body`` (default ``{"detail": "HTTP <status>"}``)."""
        return cls("http_error", status=status, body=body, retry_after=retry_after)

    # --- broken streams ------------------------------------------------------------------
    @classmethod
    def drop(cls, after_chunks: int = 5) -> Scenario:
        """Close the connection after ``after_chunks`` content chunks: no finish_reason,
        no ``[DONE]``. A non-streaming request gets the connection closed, no response."""
        return cls("drop", after_chunks=after_chunks)

    @classmethod
    def error_event(cls, after_chunks: int = 5, message: str = "The model failed mid-stream"
                    ) -> Scenario:
        """After ``after_chunks`` chunks send ``data: {"error": {...}}`` and end the body
        (no ``[DONE]``). A non-streaming request gets a 500 with that message."""
        return cls("error_event", after_chunks=after_chunks, message=message)

    # --- plumbing ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used by the subprocess emulator's control routes)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Scenario fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def fault(cls, name: str) -> Scenario:
        """The scenario a fault name stands for, with its default parameters."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; choose from {FAULTS}")
        made: Scenario = getattr(cls, name)()
        return made


def context_detail(prompt_tokens: int, limit: int) -> str:
    """The 400 detail for a prompt of ``prompt_tokens`` over a context of ``limit``."""
    return (
        f"This model's maximum context length is {limit} tokens. However, your prompt has "
        f"{prompt_tokens} tokens, which exceeds the model's context length."
    )
