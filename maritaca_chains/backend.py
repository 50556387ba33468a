"""Which model serves the chains: Maritaca's API, the embedded model, or one given.

``serve_model(settings)`` reads the settings (a key means Maritaca's API, no key the
embedded offline model); ``serve_model(settings, model=...)`` serves any chat model as
it is (tests, benchmarks, embedding the server in another app).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel

from chains import model_choices as answering_models
from maritaca import ChatMaritaca, local

from .settings import Backend, ServerSettings

__all__ = ["TINY_MODEL_NOTE", "ServedModel", "serve_model"]

TINY_MODEL_NOTE = ("The embedded model (SmolLM2-135M-Instruct via llama.cpp) is tiny: it shows "
                   "that streaming works, not what Sabiá can do. Set MARITACA_API_KEY for the "
                   "real thing.")


@dataclass
class ServedModel:
    """The chat model behind every chain, and what ``/healthz`` says about it."""

    model: BaseChatModel
    backend: str  # "maritaca", "local" or "custom"
    local_backend: local.LocalBackend | None = None
    context_tokens: int | None = None

    @property
    def model_name(self) -> str:
        for attribute in ("model_name", "model"):
            if isinstance(name := getattr(self.model, attribute, None), str):
                return name
        return type(self.model).__name__

    @property
    def model_choices(self) -> list[str]:
        """The model names a client may pick (``configurable.model``), the served one
        first: those that really answer here (the embedded backend offers only its own
        model). The same list the chains' config schema offers."""
        return answering_models(self.model)

    def health(self) -> dict[str, Any]:
        """Backend, model, the models clients may choose and base URL (never the key)."""
        health: dict[str, Any] = {"status": "ok", "backend": self.backend,
                                  "model": self.model_name, "models": self.model_choices}
        base_url = getattr(self.model, "base_url", None) or getattr(
            self.model, "openai_api_base", None)
        if base_url:
            health["base_url"] = str(base_url)
        if self.local_backend is not None:
            health["note"] = TINY_MODEL_NOTE
        return health


def serve_model(settings: ServerSettings, model: BaseChatModel | None = None) -> ServedModel:
    """The model the settings choose, or ``model`` as given (nothing started)."""
    if model is not None:
        return ServedModel(model, "custom")
    if settings.backend_in_use is Backend.LOCAL:
        backend = local.LocalBackend()  # picks its port now: the chains need the URL
        return ServedModel(ChatMaritaca(base_url=backend.base_url, model=local.MODEL_NAME),
                           "local", backend, backend.n_ctx)
    if settings.api_key is None:
        raise ValueError("MARITACA_BACKEND=maritaca needs MARITACA_API_KEY")
    return ServedModel(ChatMaritaca(api_key=settings.api_key, base_url=settings.base_url,
                                    model=settings.model), "maritaca")
