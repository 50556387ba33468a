"""LangServe's ``/<chain>/c/<hash>/...`` routes carry a run's config in the path (the
``config_hash`` path parameter), decoded by a private LangServe function. The request
rules must see that config too, or a client could set ``api_key`` there.
"""

from __future__ import annotations

from typing import Any

from langserve.api_handler import _config_from_hash  # how LangServe reads /c/<hash>/
from starlette.requests import Request

__all__ = ["configurable_in_path"]


def configurable_in_path(request: Request) -> dict[str, Any]:
    """The ``configurable`` of the config in this request's path (``{}`` without one)."""
    config_hash = request.path_params.get("config_hash")
    if not config_hash:
        return {}
    configurable = _config_from_hash(config_hash).get("configurable")
    return configurable if isinstance(configurable, dict) else {}
