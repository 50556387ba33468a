"""What the emulator saw and did for each request: assert on these in tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["RecordedRequest", "redact_headers"]

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})


def redact_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case header dict with every credential replaced by ``"<redacted>"``."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        out[key] = "<redacted>" if key in _SECRET_HEADERS else value.decode("latin-1")
    return out


@dataclass
class RecordedRequest:
    """One request to the emulator's API routes (control routes are not recorded).

    In-thread emulators hand out the live object: ``chunks_sent``, ``finished_at``,
    ``client_disconnected`` and ``disconnected_at`` change while the response runs.
    Subprocess emulators hand out snapshots: read ``emu.requests`` again to refresh.

    - ``headers``: lower-case names; the API key is never stored (``"<redacted>"``).
    - ``scenario``: ``"ok"``, a scenario or fault name, or ``"unauthorized"`` /
      ``"invalid"`` when the emulator itself refused the request.
    - ``chunks_sent``: content or tool-call chunks handed to the socket so far; it
      stops growing the moment the client disconnects.
    - ``status``: the HTTP status sent; 0 when the connection was dropped without one.
    - Times are ``time.monotonic()`` values (comparable across processes on Linux).
    """

    method: str
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]
    scenario: str = "ok"
    chunks_sent: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    client_disconnected: bool = False
    disconnected_at: float | None = None
    status: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordedRequest:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
