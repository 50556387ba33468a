"""The app factory: every chain (the built-ins and the chain files of
``MARITACA_CHAINS_DIR``) served with LangServe and the faces.

Per chain at ``/<name>``: invoke, batch, stream, stream_log (the playground needs it),
stream_events, schemas, ``/<name>/playground/``, plus ``/<name>/text`` and
``/<name>/ws``, ``/<name>/ai-sdk`` (the Vercel AI SDK); the OpenAI-compatible ``/v1``;
the Gradio UI at ``/ui/``; ``/healthz`` and ``/``. Without
``MARITACA_API_KEY`` the embedded offline model serves (``maritaca.local``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from langchain_core.language_models import BaseChatModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from chains import ChainSpec, build_chains, chain_specs
from maritaca import errors

from . import langserve_compat, metrics
from .backend import NOTHING_TO_SERVE, TINY_MODEL_NOTE, serve_model
from .error_responses import error_json
from .faces import mount_client_faces, mount_faces
from .faces.openai_errors import OpenAIErrorShape
from .gc_policy import full_collections_on_a_timer
from .input_limits import BodyLimit, InputLimits
from .ledger import RunAccounts
from .lifecycle import add_lifecycle, lifespan_state
from .login_pages import LoginRequired, login_required_html
from .messages import language
from .pages import add_pages
from .quotas import Quotas
from .redis_outage import REDIS_DOWN, redis_unavailable_json
from .refusals import Refusal, refusal_json
from .request_guards import add_request_guards
from .request_rules import RequestRules, admit
from .runs import add_run_routes
from .schema_truth import document_the_truth, validation_detail_json
from .security import CallerLabels, access_guard, add_login_route
from .sessions import LoginThrottle, Sessions
from .settings import ServerSettings
from .threads import ThreadStore, add_thread_routes
from .threads.wiring import with_threads

__all__ = ["app_factory", "create_app"]

logger = logging.getLogger("maritaca_chains.server")

API_DESCRIPTION = (
    "Cadeias LCEL em streaming sobre os modelos Sabiá da Maritaca AI, servidas com "
    "LangServe. Cada cadeia responde por `/invoke`, `/batch`, `/stream`, `/stream_events`, "
    "texto puro (`/<cadeia>/text`) e WebSocket (`/<cadeia>/ws`); escolha modelo, "
    "temperatura e `max_tokens` em `config.configurable`. Os erros trazem `type`, um código "
    "estável em inglês para programas, e a mensagem em português (em inglês com "
    "`Accept-Language: en`).")


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
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if served.local_backend is not None:
            await served.local_backend.astart()
        logger.info("maritaca-chains serving %s with backend=%s model=%s%s",
                    ", ".join(f"/{n} ({specs[n].version})" for n in chains), served.backend,
                    served.model_name,
                    f"\n  note: {TINY_MODEL_NOTE}" if served.local_backend else "")
        if served.backend == "none":
            logger.warning(NOTHING_TO_SERVE)
        await app.state.thread_store.start()  # the conversations' schema, migrated
        try:
            async with full_collections_on_a_timer(settings.full_gc_seconds), \
                    app.state.runs, lifespan_state(app) as state:
                yield state  # the drain, for the server (lifecycle.uvicorn_drain)
        finally:
            metrics.mark_process_dead()  # this worker's in-flight gauge stops counting
            await app.state.accounts.aclose()  # token charges Redis still owes: last try
            await app.state.sessions.aclose()
            await app.state.thread_store.aclose()
            if served.local_backend is not None:
                await served.local_backend.astop()

    app = FastAPI(title="maritaca-chains", version="0.1.0", lifespan=lifespan,
                  description=API_DESCRIPTION,
                  docs_url=None, redoc_url=None)  # pages.py serves them offline
    app.state.input_limits = InputLimits.from_settings(settings)  # for the faces
    chains = build_chains(served.model, context_tokens=served.context_tokens, specs=specs)
    # conversations: the chat chain's threads (threads), in MARITACA_CHAINS_DATABASE_URL
    thread_store = ThreadStore(settings.database_url.get_secret_value(),
                               lease_seconds=settings.thread_lease_seconds)
    app.state.thread_store = thread_store
    chains = with_threads(chains, specs, thread_store, history_tokens=settings.history_tokens,
                          model_name=served.model_name, context_tokens=served.context_tokens)
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
    langserve_compat.install(app, max_json_depth=settings.max_json_depth,
                             titles={name: spec.title for name, spec in specs.items()})
    app.add_middleware(CallerLabels(settings, sessions).middleware)  # security.caller_label
    app.add_middleware(rules.middleware)  # for request_rules' dependencies
    # body sizes, before anything reads a body
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    add_request_guards(app, settings)  # outermost: hosts, origins, content types
    app.add_middleware(OpenAIErrorShape)  # /v1's refusals, those above too: OpenAI's shape
    app.add_exception_handler(errors.MaritacaError, _upstream_error_json)
    app.add_exception_handler(Refusal, refusal_json)
    app.add_exception_handler(LoginRequired, login_required_html)
    app.add_exception_handler(StarletteHTTPException, validation_detail_json)  # 422: a list
    for down in REDIS_DOWN:  # a named 503 while Redis cannot be reached, never a 500
        app.add_exception_handler(down, redis_unavailable_json)

    for name, chain in chains.items():  # the key, then the quotas (request_rules)
        langserve_compat.add_chain_routes(app, name, chain, guard=admit)
    app.state.chains = chains
    app.state.served = served
    app.state.accounts = accounts
    app.state.quotas = quotas
    mount_faces(app, chains, ui=settings.ui)
    app.state.runs = add_run_routes(app, chains, settings)  # resumable runs
    # the OpenAI-compatible /v1 and the AI SDK's /<name>/ai-sdk (answers are resumable runs)
    mount_client_faces(app, chains, model=served.model, model_names=served.model_choices,
                       runs=app.state.runs)
    add_pages(app, served, ui=settings.ui, specs=specs, keys=bool(settings.access_keys))
    add_thread_routes(app, thread_store, Depends(access))  # the key; no model runs
    add_login_route(app, settings, sessions, LoginThrottle.from_settings(settings))
    if settings.metrics:
        metrics.serving(chains, served.model_name)
        metrics.add_metrics_route(app, settings, access)
    # outermost: /livez, /readyz, and every stream registered for the drain at SIGTERM
    add_lifecycle(app, settings, served, app.state.runs)
    document_the_truth(app, metrics=settings.metrics, login=bool(settings.access_keys),
                       batch_max_inputs=settings.batch_max_inputs)
    return app


def _versions(specs: dict[str, ChainSpec]) -> dict[str, str]:
    return {name: spec.version for name, spec in specs.items()}


async def _upstream_error_json(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_json(exc, language(request.headers))


def app_factory() -> FastAPI:
    """For ``uvicorn maritaca_chains:app_factory --factory --workers N``."""
    settings = ServerSettings()
    quiet_http_client_log(settings.log_level)
    return create_app(settings)


def quiet_http_client_log(log_level: str) -> None:
    """httpx logs every request it sends at INFO, a line per model call: the server's log
    would get one for every run on the embedded model. Keep them for ``debug`` only."""
    if log_level.lower() != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)
