"""Errors raised by ChatMaritaca: one small tree, each saying what happened and what to do.

Every class also inherits langchain-core's provider-neutral error, so code that catches
``langchain_core.exceptions.ModelRateLimitError`` (say) works with Maritaca too::

    MaritacaError                      (langchain_core ModelError)
    ├── AuthenticationError            401
    │   └── NotConfiguredError         no key, and no embedded model running
    ├── PermissionDeniedError          403
    ├── BadRequestError                400 / 404 / 422
    │   └── ContextTooLongError        the prompt does not fit the model's context
    ├── RateLimitError                 429, with ``retry_after`` seconds when known
    ├── ServerError                    5xx
    ├── ConnectionError                the API could not be reached, or timed out
    │   └── TimeoutError
    └── StreamError                    an ``{"error": ...}`` event mid-stream, or a stream
                                       that broke off before the model finished

Messages never contain the API key: only the status, the server's own text and a hint.
"""

from __future__ import annotations

from langchain_core import exceptions as lc

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConnectionError",
    "ContextTooLongError",
    "MaritacaError",
    "NotConfiguredError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "TimeoutError",
]


class MaritacaError(lc.ModelError):
    """Base of every error ChatMaritaca raises.

    ``status`` is the HTTP status when there was one; ``detail`` the server's own text.
    """

    hint = ""

    def __init__(self, what: str, *, status: int | None = None, detail: str | None = None,
                 hint: str | None = None) -> None:
        self.status = status
        self.detail = detail
        parts = [what]
        if status is not None:
            parts[0] = f"{what} (HTTP {status})"
        if detail:
            parts.append(f"Server said: {detail}")
        hint = self.hint if hint is None else hint
        if hint:
            parts.append(hint)
        super().__init__(". ".join(p.rstrip(". ") for p in parts) + ".")


class AuthenticationError(MaritacaError, lc.ModelAuthenticationError):
    hint = ("Set MARITACA_API_KEY (or pass api_key=...) to a valid key from "
            "https://plataforma.maritaca.ai")


class NotConfiguredError(AuthenticationError):
    """No API key and no embedded model to answer instead: nothing was sent anywhere."""


class PermissionDeniedError(MaritacaError, lc.ModelPermissionDeniedError):
    hint = "Check that your key's plan gives access to this model"


class BadRequestError(MaritacaError, lc.ModelInvalidRequestError):
    hint = "Fix the request parameters named above"


class ContextTooLongError(BadRequestError, lc.ContextOverflowError):
    hint = "Shorten the prompt, lower max_tokens, or split the input (see the summarize chain)"


class RateLimitError(MaritacaError, lc.ModelRateLimitError):
    hint = "Wait and retry, raise max_retries, or lower the request rate"

    def __init__(self, what: str, *, status: int | None = 429, detail: str | None = None,
                 retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        hint = self.hint
        if retry_after is not None:
            hint = f"Retry after {retry_after:g} s; {hint[0].lower()}{hint[1:]}"
        super().__init__(what, status=status, detail=detail, hint=hint)


class ServerError(MaritacaError, lc.ModelAPIError):
    hint = "The Maritaca API failed; retry later (ChatMaritaca already retried max_retries times)"


class ConnectionError(MaritacaError, lc.ModelConnectionError):  # noqa: A001
    hint = "Check the network and base_url (MARITACA_BASE_URL)"


class TimeoutError(ConnectionError, lc.ModelTimeoutError):  # noqa: A001
    hint = "Raise timeout=..., or retry later"


class StreamError(MaritacaError, lc.ModelAPIError):
    hint = "The text streamed before this point is incomplete; retry the request for a full answer"

    def __init__(self, what: str, *, status: int | None = None, detail: str | None = None,
                 chunks_received: int = 0) -> None:
        self.chunks_received = chunks_received
        super().__init__(what, status=status, detail=detail)
