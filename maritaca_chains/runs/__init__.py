"""Resumable runs: answers that survive a dropped connection.

``POST /<chain>/runs`` starts a run in the background; ``GET /<chain>/runs/<id>/stream``
follows it as LangServe-shaped SSE with an ``id:`` on every event, and a reader that
reconnects with ``Last-Event-ID`` (``EventSource`` does it by itself) gets only what it
missed, then the rest live. The upstream model is asked once, however often readers
come and go; runs nobody reads for ``MARITACA_CHAINS_RUN_GRACE_SECONDS`` are cancelled.
Runs live in this process, or in Redis with ``MARITACA_CHAINS_REDIS_URL`` (any replica
resumes any run)::

    manager = add_run_routes(app, chains, settings)  # behind request_rules
    async with manager:  # in the app's lifespan: stops this process's runs at shutdown
        ...

Modules: ``events`` (run record, SSE blocks), ``store`` (interface, in-process store),
``redis_store``, ``runner`` (background tasks, cancellation, grace), ``routes``.
A run belongs to the access key that started it (``security.caller_label``).
"""

from .events import EventsDropped, KeyRunsFull, RunInfo, RunsFull, RunStatus
from .redis_store import RedisRunStore
from .routes import EVENT_STREAM, add_run_routes, store_for
from .runner import RunManager
from .store import MemoryRunStore, RunStore

__all__ = [
    "EVENT_STREAM",
    "EventsDropped",
    "KeyRunsFull",
    "MemoryRunStore",
    "RedisRunStore",
    "RunInfo",
    "RunManager",
    "RunStatus",
    "RunStore",
    "RunsFull",
    "add_run_routes",
    "store_for",
]
