"""maritaca: the streaming core of maritaca-chains.

``ChatMaritaca`` is a LangChain chat model for Maritaca AI's Sabiá models::

    from maritaca import ChatMaritaca
    for chunk in ChatMaritaca().stream("Olá!"):
        print(chunk.content, end="", flush=True)

Errors are in ``maritaca.errors``, the model catalogue in ``maritaca.models``, the
embedded offline backend in ``maritaca.local`` and an API emulator for offline tests in
``maritaca.testing``.
"""

from ._http import aclose_clients, close_clients
from .chat_model import DEFAULT_BASE_URL, ChatMaritaca
from .errors import MaritacaError
from .models import MODELS, ModelInfo, get_model_info
from ._upstream import closing_upstreams, open_upstreams

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
