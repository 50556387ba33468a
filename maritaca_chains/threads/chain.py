"""A conversation chain run in a thread: the thread's turns in, the new turn stored.

``threaded_chain(inner, store, ...)`` wraps a ``history: thread`` chain. With
``config.configurable.thread_id`` (an id from ``POST /chat/threads``), a run takes the
thread's lease (a second run at once is refused, 409, naming the running one), stores
the user's message, gives the model the thread's most recent turns that fit the history
budget (langchain-core's ``trim_messages``; older turns stay stored), streams the answer
and stores it when it ends. An answer cut short (the client left, a stop, an upstream
failure) is stored with what was said, marked incomplete (``complete: false`` and its
``outcome``); one whose server was killed stays incomplete with outcome ``running``
(shown as ``interrupted`` once its lease expired). Without a thread id the chain answers
the single message.

Whose thread it is comes from the run's callbacks: the request's ``ledger.Ledger``
(every face opens one, ``RunAccounts.open``) carries the caller's key label. The answer's
tokens and cost are counted by the ledger's own ``RunLedger`` accounting.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableLambda
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import BaseModel

from chains import HISTORY_FIELD

from ..error_responses import describe_error
from ..ledger import Ledger, RunLedger
from ..messages import DEFAULT_LANGUAGE, Language
from ..refusals import Refusal
from .store import ThreadBusy, ThreadNotFound, ThreadStore

__all__ = ["THREAD_ID", "ThreadChain", "caller_of", "check_thread", "threaded_chain"]

logger = logging.getLogger("maritaca_chains.server")

THREAD_ID = "thread_id"
RESERVED_TOKENS = 500  # the system prompt and the messages' own overhead


def caller_of(config: RunnableConfig) -> str | None:
    """The owner a run's callbacks name: its request's ledger's key (None: the run was
    not started by a face)."""
    callbacks = config.get("callbacks")
    handlers: Any = getattr(callbacks, "handlers", callbacks) or []
    return next((h.key for h in handlers if isinstance(h, Ledger)), None)


class _AnswerUsage(AsyncCallbackHandler):
    """Adds up the answer's model calls (tokens, cost)."""

    run_inline = True
    ends_in_place = True  # its end callback never waits (maritaca.run_end)
    ignore_chain = ignore_agent = ignore_retriever = ignore_custom_event = True

    def __init__(self, run_id: str, chain: str, key: str) -> None:
        self.usage = RunLedger(uuid.UUID(run_id) if _is_uuid(run_id) else uuid.uuid4(),
                               chain, key, model="")

    async def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.usage.add_call(response, max_tokens=None, estimate=0)


class ThreadChain(RunnableBinding):  # type: ignore[type-arg]
    """The conversation chain, its config schema offering ``thread_id`` beside the
    inner chain's own fields; ``thread_store``: where its threads are."""

    thread_store: Any = None

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [*super().config_specs, ConfigurableFieldSpec(
            id=THREAD_ID, annotation=str, name="Conversa", default="",
            description="The conversation (POST /chat/threads gives one); empty: answer "
                        "the single message.")]


def _turns(history: list[tuple[str, str]]) -> list[BaseMessage]:
    return [HumanMessage(text) if role == "user" else AIMessage(text) for role, text in history]


def fitting(history: list[tuple[str, str]], budget: int) -> list[BaseMessage]:
    """The most recent turns of ``history`` within ``budget`` tokens (approximate
    count), starting on a user's message."""
    if budget <= 0 or not history:
        return []
    recent: list[tuple[str, str]] = []  # a cheap first cut, a little over the budget
    total = 0
    for role, text in reversed(history):
        recent.append((role, text))
        total += len(text) // 4 + 3
        if total > budget:
            break
    return cast(list[BaseMessage], trim_messages(
        _turns(recent[::-1]), max_tokens=budget, token_counter=count_tokens_approximately,
        strategy="last", start_on="human", allow_partial=False))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _outcome(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
        return "cancelled"
    return str(describe_error(error)["type"])


def threaded_chain(inner: Runnable[Any, str], store: ThreadStore, *,
                   input_type: type[BaseModel], main_field: str, name: str,
                   history_tokens: int | None, context_tokens: int,
                   answer_tokens: int) -> Runnable[Any, str]:
    """``inner`` (a ``history: thread`` chain) run in the thread its config names.
    ``history_tokens``: the turns' budget (None: the model's context less the answer's
    budget, the new message and ``RESERVED_TOKENS``)."""

    def budget(text: str) -> int:
        if history_tokens is not None:
            return history_tokens
        return context_tokens - answer_tokens - RESERVED_TOKENS - \
            count_tokens_approximately([HumanMessage(text)])

    async def arun(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
        configurable = dict(config.get("configurable") or {})
        thread_id = str(configurable.get(THREAD_ID) or "")
        # the inner chain is not a conversation's (it refuses a thread_id): blank it, as
        # configurable merges into the inner runs
        config = {**config, "configurable": {**configurable, THREAD_ID: ""}}
        if not thread_id:
            async with _closing(inner.astream(value, config)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        owner = caller_of(config)
        if owner is None:  # run outside a face: nobody to own the thread
            raise Refusal(404, "thread_not_found", thread_id=thread_id)
        inputs = value if isinstance(value, input_type) else input_type.model_validate(
            value.model_dump() if isinstance(value, BaseModel) else value)
        text = str(getattr(inputs, main_field))
        run_id = str(getattr(config.get("callbacks"), "parent_run_id", None) or uuid.uuid4())
        try:
            turn = await store.begin_turn(owner, thread_id, run_id, text)
        except ThreadNotFound:
            raise Refusal(404, "thread_not_found", thread_id=thread_id) from None
        except ThreadBusy as busy:
            raise Refusal(409, "thread_busy", thread_id=thread_id, run_id=busy.run_id) from None
        counter = _AnswerUsage(run_id, name, owner)
        callbacks = config.get("callbacks")
        if hasattr(callbacks, "add_handler"):
            callbacks = callbacks.copy()  # type: ignore[union-attr]
            callbacks.add_handler(counter, inherit=True)  # type: ignore[union-attr]
        else:
            callbacks = [*(callbacks or []), counter]  # type: ignore[misc]
        run_config: RunnableConfig = {**config, "callbacks": callbacks}
        values = {**inputs.model_dump(), HISTORY_FIELD: fitting(turn.history, budget(text))}
        parts: list[str] = []
        outcome = "ok"
        renewing = asyncio.create_task(_renew(store, turn))
        try:
            async with _closing(inner.astream(values, run_config)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
                    yield chunk
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            renewing.cancel()
            usage = counter.usage
            finish = store.finish_turn(
                turn, "".join(parts), outcome=outcome,
                input_tokens=usage.input_tokens if usage.calls else None,
                output_tokens=usage.output_tokens if usage.calls else None,
                cost_brl=usage.cost_brl, model=usage.answered_by or None)
            try:  # stored even if the run is cancelled again meanwhile
                await asyncio.shield(finish)
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("thread %s: the answer of run %s was not stored",
                                 thread_id, run_id)

    chain = cast(Runnable[Any, str], RunnableLambda(arun, name=name))  # type: ignore[arg-type]
    return ThreadChain(bound=chain, custom_input_type=input_type, custom_output_type=str,
                       thread_store=store)


async def check_thread(chain: Runnable[Any, Any], config: RunnableConfig, owner: str,
                       lang: Language = DEFAULT_LANGUAGE) -> None:
    """Before a run that goes on in the background (resumable runs, the AI SDK face):
    a ``thread_id`` that is not ``owner``'s is refused now (404), not in the run's
    events. Other chains, and runs without a thread, pass (the run itself checks
    the rest: a busy thread is its 409)."""
    thread_id = str((config.get("configurable") or {}).get(THREAD_ID) or "")
    store = chain.thread_store if isinstance(chain, ThreadChain) else None
    if thread_id and store is not None and not await store.owns(owner, thread_id):
        raise Refusal(404, "thread_not_found", lang, thread_id=thread_id)


async def _renew(store: ThreadStore, turn: Any) -> None:
    while True:
        await asyncio.sleep(store.lease_seconds / 3)
        try:
            await store.renew(turn)
        except Exception:  # the next renewal tries again; the answer is not cut
            logger.warning("thread %s: could not renew run %s's lease", turn.thread_id,
                           turn.run_id, exc_info=True)


def _closing(stream: Any) -> Any:
    from contextlib import aclosing

    return aclosing(stream)
