"""Where conversation threads live: ``ThreadStore`` on SQLAlchemy's async engine.

``MARITACA_CHAINS_DATABASE_URL`` picks the database: a SQLite file (the default,
``DEFAULT_DATABASE_URL``), or PostgreSQL (``postgresql://user:pass@host/db``) so replicas
share threads. The schema is migrated at start (``schema.migrate``).

A turn is three writes, each committed before the next step, so a thread is never left
half-written, even if the server is killed: ``begin_turn`` takes the thread's lease (a
conditional UPDATE: one runner at a time, across processes), stores the user's message
and an empty answer marked incomplete; ``renew`` extends the lease while the model
answers; ``finish_turn`` writes the answer (complete or not) and frees the lease. A lease
whose process died expires after ``lease_seconds``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, desc, event, func, insert, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .schema import messages, migrate, threads

__all__ = ["HISTORY_LIMIT", "ThreadBusy", "ThreadNotFound",
           "ThreadStore", "Turn", "async_url"]

HISTORY_LIMIT = 400  # the most recent messages read for a prompt (then trimmed to tokens)
TITLE_LENGTH = 200


class ThreadNotFound(LookupError):
    """No such thread for this caller (unknown, deleted, or another key's)."""


class ThreadBusy(RuntimeError):
    """Another run is answering in this thread: ``run_id`` names it."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(f"thread {thread_id} is answering run {run_id}")
        self.thread_id, self.run_id = thread_id, run_id


def async_url(url: str) -> str:
    """``url`` with the async driver SQLAlchemy needs: ``sqlite+aiosqlite``,
    ``postgresql+asyncpg``; a URL naming its driver is kept."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
              "postgres": "postgresql+asyncpg"}.get(parsed.drivername)
    if driver is None and "+" not in parsed.drivername:
        raise ValueError(f"MARITACA_CHAINS_DATABASE_URL: {parsed.drivername!r} is not a "
                         f"database the threads can use: give sqlite:///PATH or "
                         f"postgresql://USER:PASSWORD@HOST/DB")
    return parsed.set(drivername=driver).render_as_string(hide_password=False) \
        if driver else url


@dataclass
class Turn:
    """A turn in progress: its thread and run, and the earlier messages."""

    thread_id: str
    run_id: str
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, text), oldest first


class ThreadStore:
    """Threads and their messages, per owner (an access key's label)."""

    def __init__(self, url: str, *, lease_seconds: float = 30.0) -> None:
        self.url = async_url(url)
        self.lease_seconds = lease_seconds
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}  # wait for another writer
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._ready = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Create or migrate the schema (at server start; else on first use); a SQLite
        file's folder is made if missing."""
        if self._ready:
            return
        async with self._starting:
            if not self._ready:
                await self._migrate()
                self._ready = True

    async def _migrate(self) -> None:
        url = make_url(self.url)
        if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
            await asyncio.to_thread(_make_folder, url.database)
        await migrate(self.engine)

    async def aclose(self) -> None:
        await self.engine.dispose()

    # ------------------------------------------------------------------ threads
    async def create(self, owner: str, title: str = "") -> str:
        await self.start()
        thread_id, now = str(uuid.uuid4()), time.time()
        async with self.engine.begin() as db:
            await db.execute(insert(threads).values(
                id=thread_id, owner=owner, title=title[:TITLE_LENGTH], created_at=now,
                updated_at=now, message_count=0))
        return thread_id

    async def list(self, owner: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]],
                                                                         int]:
        """The owner's threads, most recently updated first, and how many there are."""
        await self.start()
        async with self.engine.connect() as db:
            rows = (await db.execute(
                select(threads).where(threads.c.owner == owner)
                .order_by(desc(threads.c.updated_at), desc(threads.c.id))
                .limit(limit).offset(offset))).mappings().all()
            total = (await db.execute(select(func.count()).select_from(threads)
                                      .where(threads.c.owner == owner))).scalar_one()
        return [_thread(row) for row in rows], int(total)

    async def get(self, owner: str, thread_id: str) -> dict[str, Any]:
        """The thread with all its messages, oldest first (ThreadNotFound if not the
        owner's)."""
        await self.start()
        async with self.engine.connect() as db:
            row = (await db.execute(select(threads).where(
                threads.c.id == thread_id, threads.c.owner == owner))).mappings().first()
            if row is None:
                raise ThreadNotFound(thread_id)
            rows = (await db.execute(select(messages).where(messages.c.thread_id == thread_id)
                                     .order_by(messages.c.id))).mappings().all()
        thread = _thread(row)
        found = [_message(m) for m in rows]
        for message in found:  # a run whose server died: its lease expired
            if message.get("outcome") == "running" and message["run_id"] != \
                    thread["running_run"]:
                message["outcome"] = "interrupted"
        return {**thread, "messages": found}

    async def owns(self, owner: str, thread_id: str) -> bool:
        """Whether ``thread_id`` is one of the owner's threads (one indexed read)."""
        await self.start()
        async with self.engine.connect() as db:
            found = (await db.execute(select(threads.c.id).where(
                threads.c.id == thread_id, threads.c.owner == owner))).first()
        return found is not None

    async def delete(self, owner: str, thread_id: str) -> None:
        await self.start()
        async with self.engine.begin() as db:
            found = await db.execute(delete(threads).where(
                threads.c.id == thread_id, threads.c.owner == owner))
            if found.rowcount == 0:
                raise ThreadNotFound(thread_id)
            await db.execute(delete(messages).where(messages.c.thread_id == thread_id))

    # ------------------------------------------------------------------- turns
    async def begin_turn(self, owner: str, thread_id: str, run_id: str, text: str) -> Turn:
        """Take the thread's lease for ``run_id``, read its recent messages, store the
        user's ``text`` and an empty answer marked incomplete. ThreadNotFound,
        or ThreadBusy naming the run that holds the lease."""
        await self.start()
        now = time.time()
        async with self.engine.begin() as db:
            taken = await db.execute(update(threads).where(
                threads.c.id == thread_id, threads.c.owner == owner,
                or_(threads.c.running_run.is_(None), threads.c.running_until < now),
            ).values(running_run=run_id, running_until=now + self.lease_seconds,
                     updated_at=now, message_count=threads.c.message_count + 2))
            if taken.rowcount == 0:
                holder = (await db.execute(select(threads.c.running_run).where(
                    threads.c.id == thread_id, threads.c.owner == owner))).first()
                if holder is None:
                    raise ThreadNotFound(thread_id)
                raise ThreadBusy(thread_id, str(holder[0]))
            rows = (await db.execute(
                select(messages.c.role, messages.c.text).where(
                    messages.c.thread_id == thread_id, messages.c.text != "")
                .order_by(desc(messages.c.id)).limit(HISTORY_LIMIT))).all()
            await db.execute(insert(messages), [  # one statement: the question, the answer
                {"thread_id": thread_id, "role": "user", "text": text, "created_at": now,
                 "complete": True, "run_id": run_id, "outcome": None},
                {"thread_id": thread_id, "role": "assistant", "text": "", "created_at": now,
                 "complete": False, "run_id": run_id, "outcome": "running"}])
        return Turn(thread_id, run_id, [(str(r), str(t)) for r, t in reversed(rows)])

    async def renew(self, turn: Turn) -> None:
        """Extend the lease while the model answers."""
        async with self.engine.begin() as db:
            await db.execute(update(threads).where(
                threads.c.id == turn.thread_id, threads.c.running_run == turn.run_id
            ).values(running_until=time.time() + self.lease_seconds))

    async def finish_turn(self, turn: Turn, text: str, *, outcome: str,
                          input_tokens: int | None = None, output_tokens: int | None = None,
                          cost_brl: float | None = None, model: str | None = None) -> None:
        """Write the answer (complete when ``outcome`` is ok; ``model``: the one that gave
        it) and free the lease."""
        now = time.time()
        async with self.engine.begin() as db:
            await db.execute(update(messages).where(
                messages.c.thread_id == turn.thread_id, messages.c.run_id == turn.run_id,
                messages.c.role == "assistant").values(
                text=text, complete=outcome == "ok", outcome=outcome, created_at=now,
                input_tokens=input_tokens, output_tokens=output_tokens, cost_brl=cost_brl,
                model=model))
            await db.execute(update(threads).where(and_(
                threads.c.id == turn.thread_id, threads.c.running_run == turn.run_id)
            ).values(running_run=None, running_until=None, updated_at=now))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL: readers never wait for the writer, and a commit is one append, synced at
    checkpoints (``synchronous=NORMAL``: a power cut may lose the last commits, never
    corrupt the file); several server processes may share the file."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _make_folder(database: str) -> None:
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _thread(row: Any) -> dict[str, Any]:
    running = row["running_run"] if (row["running_until"] or 0) >= time.time() else None
    return {"thread_id": row["id"], "title": row["title"], "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]), "message_count": row["message_count"],
            "running_run": running}


def _message(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": row["role"], "text": row["text"],
                           "created_at": _iso(row["created_at"]), "complete": row["complete"]}
    if row["role"] == "assistant":
        out.update(run_id=row["run_id"], outcome=row["outcome"],
                   input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                   cost_brl=row["cost_brl"], model=row["model"])
    return out
