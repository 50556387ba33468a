"""One UI run streamed into a chat box (the session's history, or a conversation), and
Parar's last step: the Gradio side of :func:`~.ui_run.chat_fn`'s updates, shared by
every tab (``ui``) and the conversation tab (``ui_talk``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from .ui_run import Respond, RunUpdate
from .ui_text import run_footer
from .ui_threads import NOTHING

__all__ = ["buttons", "halt", "run_into", "stopped"]

# the task streaming each page session's run (Gradio runs one event at a time per session)
_RUNNING: dict[str, asyncio.Task[Any]] = {}


def buttons(gr: Any, running: bool, sends: int) -> list[Any]:
    """Parar enabled while a run runs, every Enviar while none does."""
    return [gr.update(interactive=running)] + [gr.update(interactive=not running)] * sends


async def run_into(respond: Respond, name: str, fields: dict[str, Any], history: list[Any],
                   line: str, sends: int, request: Any, model: str | None,
                   temperature: float, max_tokens: float, thread_id: str | None = None
                   ) -> AsyncIterator[list[Any]]:
    """One run streamed into ``history`` (the session's, or a conversation): yields
    ``[history, status, running, Parar, *Enviar]`` updates. ``line``: what was asked."""
    session = getattr(request, "session_hash", None)
    task = asyncio.current_task()
    if session and task is not None:
        _RUNNING[session] = task
    try:
        async for out in _stream(respond, name, fields, history, line, sends, request, model,
                                 temperature, max_tokens, thread_id):
            yield out
    finally:
        if session and _RUNNING.get(session) is task:
            del _RUNNING[session]


async def _stream(respond: Respond, name: str, fields: dict[str, Any], history: list[Any],
                  line: str, sends: int, request: Any, model: str | None,
                  temperature: float, max_tokens: float, thread_id: str | None
                  ) -> AsyncIterator[list[Any]]:
    import gradio as gr

    update, added = RunUpdate(), False
    async for update in respond(name, fields, model=model, temperature=temperature,
                                max_tokens=int(max_tokens or 0) or None,
                                connection=getattr(request, "request", None),
                                thread_id=thread_id):
        if not update.sent:  # refused before sending: the history stays as it was
            yield [gr.update(), f"**Atenção:** {update.error}", "", *buttons(gr, False, sends)]
            return
        if not update.done:
            if not added:  # the run went out: it joins the history
                added = True
                history += [{"role": "user", "content": line},
                            {"role": "assistant", "content": ""}]
            history[-1] = {"role": "assistant", "content": update.answer}
            yield [history, update.status, name, *buttons(gr, True, sends)]
    history[-1] = {"role": "assistant", "content": update.answer or NOTHING}
    footer = (f"Não concluída: {update.error}" if update.error else
              run_footer(update.model_name, update.tokens, update.cost_brl, update.cut))
    history.append({"role": "assistant", "content": f"_{footer}_"})
    status = f"**Atenção:** {update.error}" if update.error else update.status
    yield [history, status, "", *buttons(gr, False, sends)]


async def halt(request: Any) -> None:
    """Parar's first step: the session's run is cancelled and has ended before the next
    step writes where it stopped (else an update it had already sent could land after
    that step and overwrite it)."""
    task = _RUNNING.get(getattr(request, "session_hash", None) or "")
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=5)


def stopped(sends: int, talks: list[str]) -> Callable[..., list[Any]]:
    """Parar's last step: the stopped run's history (the session's, or the conversation
    of the tab that ran) keeps what had arrived and says it was stopped."""
    def stop(history: list[Any] | None, running: str, *chats: list[Any] | None) -> list[Any]:
        import gradio as gr

        keep: list[Any] = [gr.update()] * len(talks)
        if not running:
            return [gr.update(), gr.update(), "", *buttons(gr, False, sends), *keep]
        at = talks.index(running) if running in talks else None
        shown = list((history if at is None else chats[at]) or [])
        if shown and shown[-1].get("role") == "assistant":
            shown[-1] = {"role": "assistant", "content": shown[-1].get("content") or NOTHING}
        shown.append({"role": "assistant", "content": "_interrompida com Parar_"})
        if at is not None:
            keep[at] = shown
        return [shown if at is None else gr.update(),
                "Interrompida: o que já tinha chegado ficou no histórico.", "",
                *buttons(gr, False, sends), *keep]

    return stop
