"""maritaca: the streaming core of maritaca-chains.

``ChatMaritaca`` is a LangChain chat model for Maritaca AI's Sabiá models::

    from maritaca import ChatMaritaca
    for chunk in ChatMaritaca().stream("Olá!"):
        print(chunk.content, end="", flush=True)

Errors are in ``maritaca.errors``, the model catalogue in ``maritaca.models``, the
embedded offline backend in ``maritaca.local``, an API emulator for offline tests in
``maritaca.testing``, and in ``maritaca.asyncio_http`` the httpx transport ChatMaritaca
relays streams with (usable by any ``httpx.AsyncClient``).

The public names load on first use (PEP 562), so ``import maritaca.models`` or
``import maritaca.testing`` does not pull in langchain-core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._http import aclose_clients, close_clients
    from ._upstream import closing_upstreams, open_upstreams
    from .chat_model import DEFAULT_BASE_URL, ChatMaritaca
    from .errors import MaritacaError
    from .models import MODELS, ModelInfo, get_model_info

__all__ = [
    "DEFAULT_BASE_URL",
    "MODELS",
    "ChatMaritaca",
    "MaritacaError",
    "ModelInfo",
    "aclose_clients",
    "close_clients",
    "closing_upstreams",
    "get_model_info",
    "open_upstreams",
]

# Public name -> the submodule that defines it.
_HOMES = {
    "DEFAULT_BASE_URL": "chat_model",
    "ChatMaritaca": "chat_model",
    "MaritacaError": "errors",
    "MODELS": "models",
    "ModelInfo": "models",
    "get_model_info": "models",
    "aclose_clients": "_http",
    "close_clients": "_http",
    "closing_upstreams": "_upstream",
    "open_upstreams": "_upstream",
}
_SUBMODULES = frozenset({"asyncio_http", "chat_model", "errors", "local", "models", "testing"})


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:  # ``import maritaca; maritaca.errors`` without importing it first
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})
