"""What clients may configure on a chain, and within which limits: stated once, here.

A server that lets HTTP clients send ``config.configurable`` checks them against these
(LangServe passes ``configurable`` through as given):

    from chains import CONFIGURABLE_KEYS, MAX_TOKENS_RANGE, TEMPERATURE_RANGE

Never ``api_key`` or ``base_url``: a client could send the server's key to a host of
its choosing.
"""

from __future__ import annotations

__all__ = ["CONFIGURABLE_KEYS", "DEFAULT_TEMPERATURE", "MAX_TOKENS_RANGE", "TEMPERATURE_RANGE"]

# thread_id: the conversation a chat chain's run continues (the server's threads)
CONFIGURABLE_KEYS = frozenset({"model", "temperature", "max_tokens", "thread_id"})
TEMPERATURE_RANGE: tuple[float, float] = (0.0, 2.0)
MAX_TOKENS_RANGE: tuple[int, int] = (1, 32_000)  # the catalogue's longest output
# What the chains send unless their model sets its own temperature.
DEFAULT_TEMPERATURE = 0.7
