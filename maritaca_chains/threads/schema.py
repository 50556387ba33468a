"""The threads' tables, and the versioned migrations the server applies at start.

The tables are SQLAlchemy Core metadata (one definition for SQLite and PostgreSQL: no
per-dialect SQL). ``migrate(engine)`` brings a database to ``SCHEMA_VERSION``: the
version it is at lives in ``maritaca_schema_version``; each step of ``MIGRATIONS`` runs
once, in order, in a transaction of its own. To change the schema, append a step (a
function of a sync ``Connection``, e.g. ``op``-free ``Table.create``/``ALTER`` through
SQLAlchemy constructs) and never edit an applied one. Replicas starting at once on
PostgreSQL race harmlessly: the loser's step fails, it re-reads the version and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "messages", "metadata", "migrate", "threads"]

logger = logging.getLogger("maritaca_chains.server")

metadata = MetaData()

version_table = Table(
    "maritaca_schema_version", metadata,
    Column("id", Integer, primary_key=True),  # always 1: one row
    Column("version", Integer, nullable=False),
)

threads = Table(
    "chat_threads", metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(64), nullable=False),  # the access key's label (security)
    Column("title", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),  # epoch seconds
    Column("updated_at", Float, nullable=False),
    Column("message_count", Integer, nullable=False, default=0),
    # the run answering now, and until when its lease holds (renewed while it runs)
    Column("running_run", String(64), nullable=True),
    Column("running_until", Float, nullable=True),
    Index("ix_chat_threads_owner_updated", "owner", "updated_at"),
)

messages = Table(
    "chat_messages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("thread_id", String(36), ForeignKey("chat_threads.id", ondelete="CASCADE"),
           nullable=False),
    Column("role", String(16), nullable=False),  # user | assistant
    Column("text", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("complete", Boolean, nullable=False, default=True),
    Column("run_id", String(64), nullable=True),
    Column("outcome", String(64), nullable=True),  # an answer's: ok, cancelled, an error type
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("cost_brl", Float, nullable=True),
    Column("model", String(100), nullable=True),  # an answer's: the model that gave it
    Index("ix_chat_messages_thread", "thread_id", "id"),
)


def _v1(connection: Connection) -> None:
    """The first schema: threads and their messages."""
    threads.create(connection)
    messages.create(connection)


def _v2(connection: Connection) -> None:
    """An answer keeps the name of the model that gave it (``chat_messages.model``).
    A database ``_v1`` made after the column was added already has it."""
    if "model" not in {column["name"] for column in inspect(connection).get_columns(
            messages.name)}:
        connection.execute(text(f"ALTER TABLE {messages.name} ADD COLUMN model VARCHAR(100)"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


def _current(connection: Connection) -> int:
    version_table.create(connection, checkfirst=True)
    return connection.execute(select(version_table.c.version)).scalar() or 0


def _step(connection: Connection, to: int) -> bool:
    """Apply migration ``to`` if the database is just before it; False if another
    process is ahead."""
    if _current(connection) != to - 1:
        return False
    MIGRATIONS[to - 1](connection)
    if to == 1:
        connection.execute(insert(version_table).values(id=1, version=1))
    else:
        connection.execute(update(version_table).where(version_table.c.id == 1)
                           .values(version=to))
    return True


async def migrate(engine: AsyncEngine) -> int:
    """Bring the database to ``SCHEMA_VERSION`` (a newer database is refused); the
    version it is at."""
    for _ in range(3 * SCHEMA_VERSION + 3):
        async with engine.connect() as connection:
            version = await connection.run_sync(_current)
            await connection.commit()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"the threads database is at schema version {version}, newer "
                               f"than this server's {SCHEMA_VERSION}: upgrade the server")
        if version == SCHEMA_VERSION:
            return version
        try:
            async with engine.begin() as connection:
                if await connection.run_sync(_step, version + 1):
                    logger.info("threads database migrated to schema version %d", version + 1)
        except DBAPIError as exc:  # another replica migrating at the same moment
            logger.info("threads database migration raced another process (%s); "
                        "re-reading its version", type(exc.orig).__name__)
    raise RuntimeError("the threads database could not be migrated: see the log")
