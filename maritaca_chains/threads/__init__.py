"""Conversations that remember: the chat chain's threads, stored in a database.

``ThreadStore`` (``store``) keeps threads and messages (SQLite or PostgreSQL, schema
migrated at start: ``schema``); ``threaded_chain`` (``chain``) runs a ``history: thread``
chain in the thread ``config.configurable.thread_id`` names; ``add_thread_routes``
(``routes``) is the ``/chat/threads`` API.
"""

from .chain import THREAD_ID, ThreadChain, caller_of, check_thread, threaded_chain
from .routes import add_thread_routes
from .store import ThreadBusy, ThreadNotFound, ThreadStore

__all__ = ["THREAD_ID", "ThreadBusy", "ThreadChain",
           "ThreadNotFound", "ThreadStore", "add_thread_routes", "caller_of", "check_thread",
           "threaded_chain"]
