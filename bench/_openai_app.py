"""The peer server for the benchmarks: the same app on ``ChatOpenAI``.

    uvicorn --app-dir bench _openai_app:app_factory --factory --workers 2

Built by the same factory as the real server (``maritaca_chains.create_app``), so it
has every middleware, guard and setting ours has; only the model differs:
``ChatOpenAI(base_url=MARITACA_BASE_URL, api_key=MARITACA_API_KEY)``, the way Maritaca's
docs point LangChain users at their API.
"""

from __future__ import annotations

from fastapi import FastAPI
from langchain_openai import ChatOpenAI

from maritaca_chains import ServerSettings, create_app


def create_openai_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    if settings.api_key is None:
        raise ValueError("set MARITACA_API_KEY (the emulator's key) and MARITACA_BASE_URL")
    model = ChatOpenAI(base_url=settings.base_url, api_key=settings.api_key,
                       model=settings.model, max_retries=2)
    return create_app(settings, model=model)


def app_factory() -> FastAPI:
    """For ``uvicorn _openai_app:app_factory --factory``."""
    return create_openai_app()
