"""The app factory: every chain (the built-ins and the chain files of
``MARITACA_CHAINS_DIR``) served with LangServe and the faces.

Per chain at ``/<name>``: invoke, batch, stream, stream_log (the playground needs it),
stream_events, schemas, ``/<name>/playground/``, plus ``/<name>/text`` and
``/<name>/ws``; the Gradio UI at ``/ui/``; ``/healthz`` and ``/``. Without
``MARITACA_API_KEY`` the embedded offline model serves (``maritaca.local``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from langchain_core.language_models import BaseChatModel

from chains import ChainSpec, build_chains, chain_specs
from maritaca import errors

from . import langserve_compat, metrics
from .backend import TINY_MODEL_NOTE, serve_model
from .error_responses import error_json
from .faces import mount_faces
from .gc_policy import full_collections_on_a_timer
from .input_limits import BodyLimit, InputLimits
from .ledger import RunAccounts
from .pages import add_pages
from .quotas import Quotas
from .redis_outage import REDIS_DOWN, redis_unavailable_json
from .request_guards import add_request_guards
from .request_rules import RequestRules, admitted_caller
from .runs import add_run_routes
from .security import CallerLabels, access_guard, add_login_route
from .sessions import LoginThrottle, Sessions
from .settings import ServerSettings

__all__ = ["app_factory", "create_app"]

logger = logging.getLogger("maritaca_chains.server")

def create_app(settings: ServerSettings | None = None, *,
               model: BaseChatModel | None = None) -> FastAPI:
    """The FastAPI app. With ``model`` given (any chat model), no backend is started;
    otherwise the settings choose Maritaca's API or the embedded model.

    Raises ``chains.ChainFileError`` (naming the file) when a chain file of
    ``settings.chains_dirs`` is broken: nothing is served half-read."""
    settings = settings or ServerSettings()
    specs = chain_specs(settings.chains_dirs)  # before any backend starts
    served = serve_model(settings, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if served.local_backend is not None:
            await served.local_backend.astart()
        logger.info("maritaca-chains serving %s with backend=%s model=%s%s",
                    ", ".join(f"/{n} ({specs[n].version})" for n in chains), served.backend,
                    served.model_name,
                    f"\n  note: {TINY_MODEL_NOTE}" if served.local_backend else "")
        try:
            async with full_collections_on_a_timer(settings.full_gc_seconds), app.state.runs:
                yield
        finally:
            metrics.mark_process_dead()  # this worker's in-flight gauge stops counting
            await app.state.sessions.aclose()
            if served.local_backend is not None:
                await served.local_backend.astop()

    app = FastAPI(title="maritaca-chains", version="0.1.0", lifespan=lifespan,
                  description="Streaming LCEL chains on Maritaca AI's Sabiá models.",
                  docs_url=None, redoc_url=None)  # pages.py serves them offline
    app.state.input_limits = InputLimits.from_settings(settings)  # for the faces
    chains = build_chains(served.model, context_tokens=served.context_tokens, specs=specs)
    app.state.chain_specs = specs  # name -> ChainSpec: title, input type, version...
    quotas = Quotas.from_settings(settings)  # None: no quota configured
    # every face's runs are kept in ledgers: log line, metrics, token quota (ledger)
    accounts = RunAccounts.from_settings(settings, backend=served.backend,
                                         model=served.model_name, quotas=quotas,
                                         versions=_versions(specs))
    sessions = Sessions.from_settings(settings)  # the browser logins
    app.state.sessions = sessions
    access = access_guard(settings, sessions)
    rules = RequestRules(access, accounts, batch_max_inputs=settings.batch_max_inputs,
                         redis_fail_open=settings.redis_fail_open)
    # innermost: LangServe's error events and bodies
    langserve_compat.install(app, max_json_depth=settings.max_json_depth)
    app.add_middleware(CallerLabels(settings, sessions).middleware)  # security.caller_label
    app.add_middleware(rules.middleware)  # for request_rules' dependencies
    # body sizes, before anything reads a body
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    add_request_guards(app, settings)  # outermost: hosts, origins, content types
    app.add_exception_handler(errors.MaritacaError, _upstream_error_json)
    for down in REDIS_DOWN:  # a named 503 while Redis cannot be reached, never a 500
        app.add_exception_handler(down, redis_unavailable_json)

    admitted = Depends(admitted_caller)  # the key, then the quotas (request_rules)
    for name, chain in chains.items():
        langserve_compat.add_chain_routes(app, name, chain, dependencies=[admitted])
    app.state.chains = chains
    app.state.served = served
    app.state.accounts = accounts
    app.state.quotas = quotas
    mount_faces(app, chains, ui=settings.ui)
    app.state.runs = add_run_routes(app, chains, settings)  # resumable runs
    add_pages(app, served, ui=settings.ui, specs=specs)
    add_login_route(app, settings, sessions, LoginThrottle.from_settings(settings))
    if settings.metrics:
        metrics.serving(chains, served.model_name)
        metrics.add_metrics_route(app, settings, access)
    return app


def _versions(specs: dict[str, ChainSpec]) -> dict[str, str]:
    return {name: spec.version for name, spec in specs.items()}


async def _upstream_error_json(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_json(exc)


def app_factory() -> FastAPI:
    """For ``uvicorn maritaca_chains:app_factory --factory --workers N``."""
    return create_app()
