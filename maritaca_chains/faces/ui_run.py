"""One UI run of a chain, as a stream of states the page shows (no Gradio in here).

``chat_fn(chains, accounts)`` gives ``respond(chain, fields, model=..., temperature=...,
max_tokens=..., connection=..., thread_id=...)`` (``thread_id``: the conversation a
``history: thread`` chain answers in, see ``threads``): it refuses blank or invalid fields before anything is
sent, then yields a :class:`RunUpdate` per chunk or progress event, and a last one with
how the run ended (cut by the token limit, who answered, tokens, cost when known), read
from the run's ledger (``ledger``), which also logs, counts and charges the run to the key
of ``connection`` (the request that started it). Each run is one request of that key's
quota (``MARITACA_CHAINS_RATE_LIMIT``), admitted here: the page's own calls (loading it,
Parar, Limpar histórico, the conversation list) are not runs, and a key over its quota
reads why on the page, in the same words as every refusal before sending. It never raises
for a failed run: the failure is one pt-BR line in ``error``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, cast

from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from chains import PROGRESS_EVENT
from maritaca import closing_upstreams

from ..error_responses import describe_error
from ..ledger import Ledger, RunAccounts
from ..request_rules import rules_of
from ._face import Face
from .ui_text import blank_field, cut_note, error_line, progress_line

__all__ = ["Respond", "RunUpdate", "chat_fn", "gets_request"]

logger = logging.getLogger("maritaca_chains.faces")


@dataclass(frozen=True)
class RunUpdate:
    """What the page shows of a run at one moment.

    ``sent``: the run reached the chain (false: refused before sending). ``status``:
    the pt-BR line under the answer (progress, a note, or the error). ``cut``: the
    token limit ended the answer. ``tokens`` and ``cost_brl``: summed over the run's
    model calls, when the model reports them.
    """

    answer: str = ""
    status: str = ""
    sent: bool = False
    done: bool = False
    error: str = ""
    cut: bool = False
    model_name: str | None = None
    tokens: int | None = None
    cost_brl: float | None = None


Respond = Callable[..., AsyncIterator[RunUpdate]]


def _fields(face: Face, fields: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The fields to send (blank optional ones left to their defaults), or the
    refusal naming the first blank required field."""
    value: dict[str, Any] = {}
    for name, item in fields.items():
        if isinstance(item, str) and not item.strip():
            field = face.input_type.model_fields.get(name)
            if field is not None and field.is_required():
                return {}, blank_field(face.name, name, face.input_type)
            continue
        value[name] = item
    return value, ""


def _configurable(model: str | None, temperature: float | None,
                  max_tokens: int | None, thread_id: str | None = None) -> RunnableConfig:
    chosen = {"model": model, "temperature": temperature,
              "max_tokens": max_tokens if max_tokens and max_tokens > 0 else None,
              "thread_id": thread_id or None}
    return {"configurable": {k: v for k, v in chosen.items() if v is not None}}


def chat_fn(chains: dict[str, Runnable[Any, str]], accounts: RunAccounts | None = None
            ) -> Respond:
    """The function each UI form calls: see the module docstring. Without ``accounts``
    the runs are not logged, counted nor charged (still measured for the page)."""
    faces = {name: Face(name, chain) for name, chain in chains.items()}
    books = accounts or RunAccounts(backend="custom", model="", quotas=None,
                                    log=False, metrics=False)

    async def respond(chain: str, fields: dict[str, Any], *, model: str | None = None,
                      temperature: float | None = None, max_tokens: int | None = None,
                      connection: HTTPConnection | None = None,
                      thread_id: str | None = None) -> AsyncIterator[RunUpdate]:
        face = faces[chain]
        value, refusal = _fields(face, fields)
        if refusal:
            yield RunUpdate(error=refusal, status=refusal, done=True)
            return
        try:
            inputs = face.input_type.model_validate(value)
        except ValidationError as exc:
            line = error_line(chain, describe_error(exc), face.input_type)
            yield RunUpdate(error=line, status=line, done=True)
            return
        if refusal := await _admitted(connection, chain):
            yield RunUpdate(error=refusal, status=refusal, done=True)
            return
        state = RunUpdate(sent=True, status="Gerando a resposta…")
        yield state
        config = _configurable(model, temperature, max_tokens, thread_id)
        ledger = books.open(connection, chain)
        answer = ""
        events = cast(AsyncGenerator[dict[str, Any], None],  # an async generator
                      face.chain.astream_events(inputs, ledger.config(config), version="v2"))
        try:
            with closing_upstreams():
                async with aclosing(events):
                    async for event in events:
                        kind = event["event"]
                        if kind == "on_chain_stream" and not event["parent_ids"]:
                            if chunk := event["data"].get("chunk"):
                                answer += str(chunk)
                                state = replace(state, answer=answer)
                                yield state
                        elif kind == "on_custom_event" and event["name"] == PROGRESS_EVENT:
                            state = replace(state, status=progress_line(event["data"]))
                            yield state
        except Exception as exc:  # a failed run is a line on the page, not a traceback
            logger.warning("/ui run of %s failed: %s: %s", chain, type(exc).__name__, exc)
            line = error_line(chain, describe_error(exc), face.input_type)
            yield replace(state, answer=answer, error=line, status=line, done=True)
            return
        yield _ended(replace(state, answer=answer), ledger,
                     config["configurable"].get("max_tokens"))

    return respond


async def _admitted(connection: HTTPConnection | None, chain: str) -> str:
    """Room for one run in the quotas of ``connection``'s key (counted), by the app's
    request rules; else the pt-BR line saying why not. Without a connection (a direct
    caller of ``chat_fn``), no quota applies."""
    if connection is None:
        return ""
    refused = await rules_of(connection).refusal(connection)
    return "" if refused is None else error_line(chain, describe_error(refused))


def _ended(state: RunUpdate, ledger: Ledger, asked: int | None) -> RunUpdate:
    """The last update: the run as its ledger tells it (the last model call answers)."""
    run = ledger.last
    if run is None:
        return replace(state, done=True, status="Pronto.")
    return replace(state, done=True, cut=run.cut,
                   status=cut_note(run.max_tokens or asked) if run.cut else "Pronto.",
                   model_name=run.answered_by or run.model or None, tokens=run.tokens or None,
                   cost_brl=run.cost_brl)


def gets_request(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` with its ``request`` parameter annotated ``gr.Request``: how Gradio
    knows to pass the page's request (set here, as gradio is imported lazily)."""
    import gradio as gr

    handler.__annotations__["request"] = gr.Request
    return handler
