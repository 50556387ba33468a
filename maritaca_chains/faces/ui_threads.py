"""The UI's "Conversa" tab, its data (no Gradio in here): the caller's saved
conversations as list entries, one conversation as the chat's messages, a new
conversation's title. The threads are ``threads.ThreadStore``'s, per access key (the
login cookie counts as its key: ``security.caller_label``), as on ``/chat/threads``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..brasilia_time import shown
from ..threads import ThreadStore
from .ui_text import run_footer

__all__ = ["LIST_LIMIT", "NOTHING", "conversation", "new_title", "thread_choices",
           "thread_label", "when"]

LIST_LIMIT = 50  # the most recently updated conversations the list shows
TITLE_CHARACTERS = 60
NOTHING = "_(nenhum texto chegou)_"  # an answer that ended before its first word
_CUT = {"cancelled": "interrompida antes do fim",
        "running": "ainda respondendo…",
        "interrupted": "interrompida: o servidor parou no meio da resposta"}


def new_title(message: str) -> str:
    """A new conversation's title: the start of its first message."""
    text = " ".join(message.split())
    return text if len(text) <= TITLE_CHARACTERS else text[:TITLE_CHARACTERS].rstrip() + "…"


def when(iso: str) -> str:
    """A stored time (ISO 8601, UTC) as the list shows it, in Brasília time (the list's
    note says so)."""
    return shown(datetime.fromisoformat(iso))


def thread_label(thread: dict[str, Any]) -> str:
    """A list entry: title, when it was last updated, how many messages."""
    count = thread["message_count"]
    messages = "1 mensagem" if count == 1 else f"{count} mensagens"
    return f"{thread['title'] or 'Sem título'} · {when(thread['updated_at'])} · {messages}"


async def thread_choices(store: ThreadStore, owner: str) -> list[tuple[str, str]]:
    """The owner's conversations, most recently updated first: (label, thread id)."""
    found, _ = await store.list(owner, limit=LIST_LIMIT, offset=0)
    return [(thread_label(t), t["thread_id"]) for t in found]


def _footer(message: dict[str, Any]) -> str:
    if message["complete"]:
        tokens = (message.get("input_tokens") or 0) + (message.get("output_tokens") or 0)
        return run_footer(message.get("model"), tokens or None, message.get("cost_brl"), False)
    outcome = str(message.get("outcome") or "")
    return f"Não concluída: {_CUT.get(outcome, 'o modelo falhou no meio da resposta')}"


def conversation(thread: dict[str, Any]) -> list[dict[str, str]]:
    """A stored conversation as the chat shows it: each message, and under each answer
    the line saying how it ended (its tokens and cost, or why it is incomplete)."""
    shown: list[dict[str, str]] = []
    for message in thread["messages"]:
        if message["role"] == "user":
            shown.append({"role": "user", "content": message["text"]})
            continue
        shown.append({"role": "assistant", "content": message["text"] or NOTHING})
        shown.append({"role": "assistant", "content": f"_{_footer(message)}_"})
    return shown
