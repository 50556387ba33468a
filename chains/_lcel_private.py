"""Every LCEL internal the chains' direct streaming path relies on, in one place.

``chains._direct`` reports a chain's run as LCEL's streaming transforms report it, so it
repeats two things langchain-core does not publish:

- the tag ``RunnableSequence`` gives the run of its N-th step, ``seq:step:N``;
- how a run's output is shown to the handler that ``astream_events``/``astream_log``
  attach: the first handler with both taps, ``tap_output_iter`` and ``tap_output_aiter``,
  taps the output through them. (langchain-core picks it with ``isinstance`` against a
  runtime-checkable protocol of those two methods, kept in a private module; a runtime
  protocol's ``isinstance`` only asks whether the members are there, so the same question
  is asked here without importing that module.)

The handlers of ``astream_events`` and ``astream_log`` are not ``run_inline``, so
langchain-core dispatches each of their events in a task of its own (``astream_events``)
or on a worker thread (``astream_log``'s handler is synchronous): about a dozen per short
answer. ``inline_streaming_handler`` marks the one handler a direct run streams to as
``run_inline`` (a public attribute of every handler), for those two classes only: their
callbacks only record the run and put an event on the handler's own unbounded stream,
never wait, so awaiting them in place changes no event and no order (each dispatch was
awaited to its end anyway) and saves the task or thread hop.

``events_handler`` builds ``astream_events``' (v2) handler with its events sent to a sink
of the caller's instead of its own stream (``chains.events``): that handler's class is
private, and so is where it sends its events, its ``send_stream`` attribute (whose
``send_nowait`` each event goes to, and whose ``aclose`` ``astream_events`` calls when
the run has ended).

A prompt template's ``invoke``/``ainvoke`` is LCEL's ``_call_with_config`` around the
template's own formatting. LCEL looks at the formatting function's signature on every
call, and async, runs it in a task of its own and reports its end through another
(``shielded``): two tasks and two trips through the event loop per run.
``chains._direct`` re-does that run for the templates ``plain_prompt_template`` accepts
(langchain-core's ``ChatPromptTemplate`` of plain text messages and placeholders, and
``PromptTemplate``, exactly those classes: their async formatting is their sync
formatting, which never waits), with two private members of the template:
``_serialized`` (what ``on_chain_start`` is told) and
``_format_prompt_with_error_handling`` (the formatting, input validation included).

``PRESENT`` says, checked once at import, that the handlers of ``astream_events`` and
``astream_log`` have both taps (and ``plain_prompt_template`` says no to every step if
prompt templates lack one of those two members);
``chains._direct`` also checks once that a direct run reports what LCEL's reports (tags
included), and takes LCEL's path if either fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import (
    AIMessagePromptTemplate,
    BasePromptTemplate,
    ChatMessagePromptTemplate,
    ChatPromptTemplate,
    HumanMessagePromptTemplate,
    MessagesPlaceholder,
    PromptTemplate,
    SystemMessagePromptTemplate,
)

__all__ = ["PRESENT", "events_handler", "format_prompt",
           "inline_streaming_handler", "plain_prompt_template", "prompt_serialized", "step_tag",
           "streaming_handler"]


_TAPS = ("tap_output_iter", "tap_output_aiter")


def _taps(cls: type) -> bool:
    """Whether ``cls`` has both taps, as langchain-core's protocol check asks it."""
    return all(callable(getattr(cls, tap, None)) for tap in _TAPS)


_PROMPT_MEMBERS = ("_serialized", "_format_prompt_with_error_handling")
# the message templates of a plain chat template: one text template each, or a placeholder
_TEXT_MESSAGES = frozenset({SystemMessagePromptTemplate, HumanMessagePromptTemplate,
                            AIMessagePromptTemplate, ChatMessagePromptTemplate})


def _present() -> bool:
    """Whether ``astream_events``'s and ``astream_log``'s handlers still tap output."""
    streamers = _streamers()
    return bool(streamers) and all(_taps(handler) for handler in streamers)


def _streamers() -> tuple[type, ...]:
    """The classes of ``astream_events``'s and ``astream_log``'s handlers (none if gone)."""
    try:
        from langchain_core.tracers.event_stream import _AstreamEventsCallbackHandler
        from langchain_core.tracers.log_stream import LogStreamCallbackHandler
    except ImportError:
        return ()
    return _AstreamEventsCallbackHandler, LogStreamCallbackHandler


PRESENT = _present()
_STREAMERS = _streamers()  # (astream_events', astream_log's) handler classes, or ()
_INLINE_SAFE = frozenset(_STREAMERS)


def _prompts_present() -> bool:
    """Whether prompt templates still have the members ``chains._direct`` reads."""
    return all(hasattr(BasePromptTemplate, member) for member in _PROMPT_MEMBERS)


_PROMPTS_PRESENT = _prompts_present()


def events_handler(sink: Any, filters: dict[str, Any]) -> Any:
    """``astream_events``' (v2) callback handler, filtering as ``filters`` (its keyword
    arguments, ``include_names`` and the rest) say, each event it lets through sent to
    ``sink.send_nowait``; ``sink`` is also what ``send_stream.aclose()`` then closes."""
    if not _STREAMERS:
        raise LookupError("astream_events' handler is gone")
    handler = _STREAMERS[0](**filters)
    if not hasattr(handler, "send_stream"):
        raise LookupError("astream_events' handler sends its events elsewhere")
    handler.send_stream = sink
    return handler


def plain_prompt_template(step: Any) -> bool:
    """Whether ``step`` is a template whose run ``chains._direct`` re-does: a
    ``PromptTemplate``, or a ``ChatPromptTemplate`` of messages, placeholders and text
    message templates (those classes exactly: a subclass may format otherwise, or wait)."""
    if not _PROMPTS_PRESENT:
        return False
    if type(step) is PromptTemplate:
        return True
    return type(step) is ChatPromptTemplate and all(
        isinstance(message, BaseMessage) or type(message) is MessagesPlaceholder
        or (type(message) in _TEXT_MESSAGES
            and type(getattr(message, "prompt", None)) is PromptTemplate)
        for message in step.messages)


def prompt_serialized(prompt: BasePromptTemplate) -> dict[str, Any] | None:
    """What a template's ``invoke`` tells ``on_chain_start`` the template is."""
    return prompt._serialized  # type: ignore[no-any-return]


def format_prompt(prompt: BasePromptTemplate, values: dict[str, Any]) -> PromptValue:
    """The template's formatting of ``values`` (validated first), as ``invoke`` runs it
    (and, for a plain template, as ``ainvoke`` does)."""
    return prompt._format_prompt_with_error_handling(values)


def step_tag(step: int) -> str:
    """The tag of the run of a ``RunnableSequence``'s ``step``-th step (from 1)."""
    return f"seq:step:{step}"


def streaming_handler(handlers: Sequence[Any]) -> Any | None:
    """The handler a run's output is shown to, as LCEL picks it; None if none."""
    for handler in handlers:
        if _follows_protocol(type(handler), handler):
            return handler
    return None


def inline_streaming_handler(handlers: Sequence[Any]) -> None:
    """Mark the handler a run streams to ``run_inline`` (and ``ends_in_place``, for
    ``maritaca.run_end``) if it is ``astream_events``'s or ``astream_log``'s own (see the
    module's docstring); anyone else's is left as it is."""
    handler = streaming_handler(handlers)
    if handler is not None and type(handler) in _INLINE_SAFE:
        handler.run_inline = True
        handler.ends_in_place = True  # nor do its end callbacks wait (maritaca.run_end)


# Asking for the taps on every run cost a few percent of a short request's CPU (issue 26):
# decided once per handler class. The taps are methods, so a class has them or not,
# whatever the instance.
_FOLLOWS: dict[type, bool] = {}


def _follows_protocol(cls: type, handler: Any) -> bool:
    follows = _FOLLOWS.get(cls)
    if follows is None:
        follows = all(getattr(handler, tap, None) is not None for tap in _TAPS)
        if len(_FOLLOWS) < 1024:  # handler classes are few; never an unbounded cache
            _FOLLOWS[cls] = follows
    return follows
