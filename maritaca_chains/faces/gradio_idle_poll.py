"""Slows the poll of an idle Gradio queue, which Gradio runs every millisecond on Linux.

Gradio's queue (``gradio/queueing.py``) sleeps ``sleep_when_free`` (0.001 s; 0.05 s on
Windows) between looks at an empty queue, and ``progress_update_sleep_when_free`` (0.01 s;
0.1 s on Windows) between progress sweeps: over a thousand wake-ups a second with nobody
on the page, 5% of a core measured (``bench/bench_idle.py``, BENCHMARKS.md), taken from
every stream the server relays. Gradio has no public setting for them, so this sets the
two attributes of the Blocks' private ``_queue`` to Gradio's own Windows values; a UI run
waits 50 ms at most longer to start. ``tests/test_ui.py`` counts the idle wake-ups with
and without it and fails if Gradio renames or stops reading them; if they are gone, the
UI keeps Gradio's pace and the server logs a warning.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["IDLE_PACE", "slow_idle_poll"]

logger = logging.getLogger("maritaca_chains.faces")

# Gradio's own values on Windows: seconds between looks at an empty queue, and between
# progress sweeps with no run in progress.
IDLE_PACE = {"sleep_when_free": 0.05, "progress_update_sleep_when_free": 0.1}


def slow_idle_poll(demo: Any) -> bool:
    """Give ``demo``'s queue (a ``gradio.Blocks``) the slower idle pace; False (and a
    warning) if this Gradio no longer has the settings."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not all(isinstance(getattr(queue, name, None), float)
                                for name in IDLE_PACE):
        logger.warning("this Gradio's queue has no %s: /ui keeps Gradio's idle poll "
                       "(a wake-up every millisecond)", " or ".join(IDLE_PACE))
        return False
    for name, seconds in IDLE_PACE.items():
        setattr(queue, name, seconds)
    return True
