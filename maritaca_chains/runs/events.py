"""What a run is and how its events look on the wire, shared by the stores and the routes.

Every event is kept as the SSE block a reader receives, already encoded (``id:`` +
``event:`` + ``data:``), so a reader that resumes or follows live writes stored bytes
and never re-serialises. The shape is LangServe's ``/stream``: ``metadata`` first,
``data`` with a JSON chunk, then ``end``, or ``error`` with a JSON cause.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["RETRY_MS", "EventsDropped", "KeyRunsFull", "RunInfo", "RunStatus", "RunsFull", "dropped_block",
           "run_error_data", "sse_block"]

RETRY_MS = 1000  # the reconnection delay suggested to EventSource clients (``retry:``)


class RunStatus(StrEnum):
    """Where a run is: ``running`` until it ends ``done``, ``failed`` or ``cancelled``."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class RunInfo:
    """A run's status record; ``owner`` is the starting access key's label (never shown)."""

    run_id: str
    chain: str
    owner: str
    status: RunStatus = RunStatus.RUNNING
    events: int = 0  # id of the last event so far (ids count from 1)
    usage: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def public(self) -> dict[str, Any]:
        """The status a client sees (``GET /<chain>/runs/<run_id>``)."""
        out = asdict(self)
        del out["owner"]
        out["status"] = str(self.status)
        out["stream_url"] = stream_url(self.chain, self.run_id)
        return out

    def to_fields(self) -> dict[str, str]:
        """Flat string fields (a Redis hash)."""
        return {"run_id": self.run_id, "chain": self.chain, "owner": self.owner,
                "status": str(self.status), "events": str(self.events),
                "usage": json.dumps(self.usage), "created_at": repr(self.created_at),
                "finished_at": json.dumps(self.finished_at)}

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> RunInfo:
        return cls(run_id=raw["run_id"], chain=raw["chain"], owner=raw["owner"],
                   status=RunStatus(raw["status"]), events=int(raw["events"]),
                   usage=json.loads(raw["usage"]), created_at=float(raw["created_at"]),
                   finished_at=json.loads(raw["finished_at"]))


def stream_url(chain: str, run_id: str) -> str:
    return f"/{chain}/runs/{run_id}/stream"


class RunsFull(Exception):
    """No room for another run (``MARITACA_CHAINS_RUN_MAX_RUNS`` in progress): a 503."""


class KeyRunsFull(RunsFull):
    """This access key already holds its share of the runs in progress
    (``MARITACA_CHAINS_RUN_KEY_SHARE``): a 429, so one key cannot lock out the others."""


class EventsDropped(Exception):
    """The events a reader asked for are no longer kept (``MARITACA_CHAINS_RUN_MAX_EVENTS``)."""

    def __init__(self, first_kept: int) -> None:
        super().__init__(f"events before id {first_kept} are no longer kept")
        self.first_kept = first_kept


def sse_block(event_id: int, event: str, data: str | None = None) -> bytes:
    """One SSE event with its id, as sse-starlette writes LangServe's (CRLF lines).
    ``EventSource`` delivers only events with a ``data:`` line (``end``'s may be empty)."""
    if data is None:
        return f"id: {event_id}\r\nevent: {event}\r\n\r\n".encode()
    return f"id: {event_id}\r\nevent: {event}\r\ndata: {data}\r\n\r\n".encode()


def run_error_data(status_code: int, kind: str, message: str) -> str:
    """An ``error`` event's JSON for what is not an exception (a cancelled run, lost
    events), in the same fields as ``error_responses.describe_error``."""
    return json.dumps({"status_code": status_code, "type": kind, "message": message},
                      ensure_ascii=False)


def dropped_block(exc: EventsDropped) -> bytes:
    """The ``error`` event for a reader asking for events no longer kept. It has no
    ``id:`` so the client's last id stays where it was."""
    data = run_error_data(410, "events_dropped",
                          f"This run keeps only its latest events; the first still kept is "
                          f"{exc.first_kept}. Start a new run to read the answer from the start.")
    return f"event: error\r\ndata: {data}\r\n\r\n".encode()
