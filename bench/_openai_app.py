"""The peer server for the benchmarks: our chains and LangServe routes on ``ChatOpenAI``.

    PYTHONPATH=.:bench uvicorn _openai_app:app_factory --factory --workers 2

Same as ``server.create_app`` (the same chains from ``chains.build_chains``, the same
``add_routes`` options, error middleware, access guard, config check and GC policy
(``full_collections_on_a_timer``)), except that the model is
``ChatOpenAI(base_url=MARITACA_BASE_URL, api_key=MARITACA_API_KEY)``, the way
Maritaca's docs point LangChain users at their API. Settings come from
``ServerSettings`` like the real server's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from langchain_openai import ChatOpenAI
from langserve import add_routes

from chains import build_chains
from server import (
    UpstreamErrorMiddleware,
    _check_config,
    access_guard,
    full_collections_on_a_timer,
)
from server_settings import ServerSettings


def create_openai_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    if settings.api_key is None:
        raise ValueError("set MARITACA_API_KEY (the emulator's key) and MARITACA_BASE_URL")
    model = ChatOpenAI(base_url=settings.base_url, api_key=settings.api_key,
                       model=settings.model, max_retries=2)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with full_collections_on_a_timer(settings.full_gc_seconds):
            yield

    app = FastAPI(title="chains on ChatOpenAI (benchmark peer)", lifespan=lifespan)
    app.add_middleware(UpstreamErrorMiddleware)
    guard = Depends(access_guard(settings))
    for name, chain in build_chains(model).items():
        add_routes(app, chain, path=f"/{name}", dependencies=[guard],
                   per_req_config_modifier=_check_config, config_keys=("configurable",))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "backend": "chatopenai", "model": settings.model}

    return app


def app_factory() -> FastAPI:
    """For ``uvicorn _openai_app:app_factory --factory``."""
    return create_openai_app()
