"""Every LCEL internal the chains' direct streaming path relies on, in one place.

``chains._direct`` reports a chain's run as LCEL's streaming transforms report it, so it
repeats two things langchain-core does not publish:

- the tag ``RunnableSequence`` gives the run of its N-th step, ``seq:step:N``;
- how a run's output is shown to the handler that ``astream_events``/``astream_log``
  attach: the first handler that is a ``_StreamingCallbackHandler`` (a private protocol
  of ``langchain_core.tracers._streaming``) taps the output through its
  ``tap_output_iter``/``tap_output_aiter``.

The handlers of ``astream_events`` and ``astream_log`` are not ``run_inline``, so
langchain-core dispatches each of their events in a task of its own (``astream_events``)
or on a worker thread (``astream_log``'s handler is synchronous): about a dozen per short
answer. ``inline_streaming_handler`` marks the one handler a direct run streams to as
``run_inline`` (a public attribute of every handler), for those two classes only: their
callbacks only record the run and put an event on the handler's own unbounded stream,
never wait, so awaiting them in place changes no event and no order (each dispatch was
awaited to its end anyway) and saves the task or thread hop.

``PRESENT`` says, checked once at import, that the protocol is there, with both taps,
and that the handlers of ``astream_events`` and ``astream_log`` follow it;
``chains._direct`` also checks once that a direct run reports what LCEL's reports (tags
included), and takes LCEL's path if either fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PRESENT", "inline_streaming_handler", "step_tag", "streaming_handler"]


def _protocol() -> Any:
    try:
        from langchain_core.tracers._streaming import _StreamingCallbackHandler
    except ImportError:
        return None
    taps = all(callable(getattr(_StreamingCallbackHandler, tap, None))
               for tap in ("tap_output_iter", "tap_output_aiter"))
    followed = all(issubclass(handler, _StreamingCallbackHandler) for handler in _streamers())
    return _StreamingCallbackHandler if taps and followed and _streamers() else None


def _streamers() -> tuple[type, ...]:
    """The classes of ``astream_events``'s and ``astream_log``'s handlers (none if gone)."""
    try:
        from langchain_core.tracers.event_stream import _AstreamEventsCallbackHandler
        from langchain_core.tracers.log_stream import LogStreamCallbackHandler
    except ImportError:
        return ()
    return _AstreamEventsCallbackHandler, LogStreamCallbackHandler


_STREAMING_HANDLER = _protocol()
PRESENT = _STREAMING_HANDLER is not None
_INLINE_SAFE = frozenset(_streamers())


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
    """Mark the handler a run streams to ``run_inline`` if it is ``astream_events``'s or
    ``astream_log``'s own (see the module's docstring); anyone else's is left as it is."""
    handler = streaming_handler(handlers)
    if handler is not None and type(handler) in _INLINE_SAFE:
        handler.run_inline = True


# A runtime protocol's isinstance walks the protocol's members on every call (a few
# percent of a short request's CPU, issue 26): decided once per handler class. The taps
# are methods, so a class follows the protocol or not, whatever the instance.
_FOLLOWS: dict[type, bool] = {}


def _follows_protocol(cls: type, handler: Any) -> bool:
    follows = _FOLLOWS.get(cls)
    if follows is None:
        follows = isinstance(handler, _STREAMING_HANDLER)
        if len(_FOLLOWS) < 1024:  # handler classes are few; never an unbounded cache
            _FOLLOWS[cls] = follows
    return follows
