"""The app factory: every chain in ``chains.CHAINS`` served with LangServe and the faces.

Per chain at ``/<name>``: invoke, batch, stream, stream_log (the playground needs it),
stream_events, schemas, ``/<name>/playground/``, plus ``/<name>/text`` and
``/<name>/ws``; the Gradio UI at ``/ui/``; ``/healthz`` and ``/``. Without
``MARITACA_API_KEY`` the embedded offline model serves (``maritaca.local``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from langchain_core.language_models import BaseChatModel

from chains import build_chains
from maritaca import errors

from . import langserve_compat, metrics
from .backend import TINY_MODEL_NOTE, serve_model
from .error_responses import error_json
from .faces import mount_faces
from .gc_policy import full_collections_on_a_timer
from .ledger import RunAccounts
from .pages import add_pages
from .quotas import Quotas
from .request_guards import add_request_guards
from .request_rules import RequestRules, admitted_caller
from .runs import add_run_routes
from .security import CallerLabels, access_guard, add_login_route
from .settings import ServerSettings

__all__ = ["app_factory", "create_app"]

logger = logging.getLogger("maritaca_chains.server")

# LangServe rebuilds each request's config through a pydantic model whose `model` field is
# the catalogue enum while its default is the plain name: the value is right, but pydantic
# warns on every request. Silence only that warning.
warnings.filterwarnings("ignore", message=r"Pydantic serializer warnings", category=UserWarning)


def create_app(settings: ServerSettings | None = None, *,
               model: BaseChatModel | None = None) -> FastAPI:
    """The FastAPI app. With ``model`` given (any chat model), no backend is started;
    otherwise the settings choose Maritaca's API or the embedded model."""
    settings = settings or ServerSettings()
    served = serve_model(settings, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if served.local_backend is not None:
            await served.local_backend.astart()
        logger.info("maritaca-chains serving %s with backend=%s model=%s%s",
                    ", ".join(f"/{n}" for n in chains), served.backend, served.model_name,
                    f"\n  note: {TINY_MODEL_NOTE}" if served.local_backend else "")
        try:
            async with full_collections_on_a_timer(settings.full_gc_seconds), app.state.runs:
                yield
        finally:
            metrics.mark_process_dead()  # this worker's in-flight gauge stops counting
            if served.local_backend is not None:
                await served.local_backend.astop()

    app = FastAPI(title="maritaca-chains", version="0.1.0", lifespan=lifespan,
                  description="Streaming LCEL chains on Maritaca AI's Sabiá models.",
                  docs_url=None, redoc_url=None)  # pages.py serves them offline
    chains = build_chains(served.model, context_tokens=served.context_tokens)
    quotas = Quotas.from_settings(settings)  # None: no quota configured
    # every face's runs are kept in ledgers: log line, metrics, token quota (ledger)
    accounts = RunAccounts.from_settings(settings, backend=served.backend,
                                         model=served.model_name, quotas=quotas)
    access = access_guard(settings)
    rules = RequestRules(access, accounts, batch_max_inputs=settings.batch_max_inputs)
    langserve_compat.install(app)  # innermost: LangServe's error events and bodies
    app.add_middleware(CallerLabels(settings).middleware)  # for security.caller_label
    app.add_middleware(rules.middleware)  # for request_rules' dependencies
    add_request_guards(app, settings)  # outermost: hosts, origins, content types
    app.add_exception_handler(errors.MaritacaError, _upstream_error_json)

    admitted = Depends(admitted_caller)  # the key, then the quotas (request_rules)
    for name, chain in chains.items():
        langserve_compat.add_chain_routes(app, name, chain, dependencies=[admitted])
    app.state.chains = chains
    app.state.served = served
    app.state.accounts = accounts
    app.state.quotas = quotas
    mount_faces(app, chains, ui=settings.ui)
    app.state.runs = add_run_routes(app, chains, settings)  # resumable runs
    add_pages(app, served, ui=settings.ui)
    add_login_route(app, settings)
    if settings.metrics:
        metrics.serving(chains, served.model_name)
        metrics.add_metrics_route(app, settings, access)
    return app


async def _upstream_error_json(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_json(exc)


def app_factory() -> FastAPI:
    """For ``uvicorn maritaca_chains:app_factory --factory --workers N``."""
    return create_app()
