"""The maritaca-chains server: every chain in ``chains.CHAINS`` served with LangServe.

    python server.py                 # http://127.0.0.1:8000 (make serve)
    python server.py --host 0.0.0.0 --port 8080   # needs MARITACA_CHAINS_API_KEYS

Per chain at ``/<name>``: invoke, batch, stream, stream_log (the playground needs it),
stream_events, schemas and ``/<name>/playground/``. Also ``/healthz`` and ``/``.
Without ``MARITACA_API_KEY`` the embedded offline model serves (``maritaca.local``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import html
import json
import logging
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import orjson
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from langchain_core.callbacks import AsyncCallbackHandler
from langserve import add_routes
from langserve.api_handler import _config_from_hash  # how LangServe reads /c/<hash>/
from pydantic import ValidationError

from chains import CHAINS, build_chains
from chains._model import CONFIGURABLE_KEYS
from maritaca import ChatMaritaca, errors, local
from maritaca._local_process import free_port
from maritaca._upstream import closing_upstreams, open_upstreams
from server_faces import mount_faces
from server_settings import Backend, ServerSettings, is_loopback

logger = logging.getLogger("maritaca_chains.server")

# LangServe rebuilds each request's config through a pydantic model whose `model` field is
# the catalogue enum while its default is the plain name: the value is right, but pydantic
# warns on every request. Silence only that warning.
warnings.filterwarnings("ignore", message=r"Pydantic serializer warnings", category=UserWarning)

TINY_MODEL_NOTE = ("The embedded model (SmolLM2-135M-Instruct via llama.cpp) is tiny: it shows "
                   "that streaming works, not what Sabiá can do. Set MARITACA_API_KEY for the "
                   "real thing.")
ACCESS_COOKIE = "maritaca_chains_key"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


# --------------------------------------------------------------------------- errors

def describe_error(exc: BaseException) -> dict[str, Any]:
    """What a client is told about a failed run: status, cause, message (never the key)."""
    kinds: list[tuple[type[BaseException], int, str]] = [
        (errors.RateLimitError, 429, "rate_limit"),
        (errors.AuthenticationError, 502, "upstream_authentication"),
        (errors.PermissionDeniedError, 502, "upstream_permission"),
        (errors.ContextTooLongError, 400, "context_too_long"),
        (errors.BadRequestError, 400, "bad_request"),
        (errors.TimeoutError, 504, "upstream_timeout"),
        (errors.ConnectionError, 503, "upstream_unavailable"),
        (errors.ServerError, 502, "upstream_error"),
        (errors.StreamError, 502, "upstream_stream_broken"),
    ]
    for kind, status, name in kinds:
        if isinstance(exc, kind):
            payload: dict[str, Any] = {"status_code": status, "type": name,
                                       "message": f"Upstream model failed ({name}): {exc}"}
            if isinstance(exc, errors.RateLimitError) and exc.retry_after is not None:
                payload["retry_after"] = exc.retry_after
            return payload
    if isinstance(exc, ValueError | TypeError):  # e.g. an input a library caller got wrong
        return {"status_code": 422, "type": "invalid_input", "message": str(exc)}
    return {"status_code": 500, "type": "internal", "message": "Internal Server Error"}


class _ErrorBox:
    """Per-request holder for the exception that ended a run."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


class _RecordRunError(AsyncCallbackHandler):
    """Keeps the root run's exception for the error middleware, and logs it with the run id."""

    ignore_llm = ignore_chat_model = ignore_retriever = ignore_agent = ignore_retry = True
    ignore_custom_event = True

    def __init__(self, box: _ErrorBox) -> None:
        self.box = box

    async def on_chain_error(self, error: BaseException, *, run_id: UUID,
                             parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if parent_run_id is not None or self.box.error is not None:
            return
        if isinstance(error, asyncio.CancelledError):  # the client went away: not a failure
            logger.info("run %s cancelled: the client disconnected", run_id)
            return
        self.box.error = error
        logger.error("run %s failed: %s: %s", run_id, type(error).__name__, error)


_GENERIC_ERROR = json.dumps({"status_code": 500, "message": "Internal Server Error"}).encode()


def _only(exc: BaseException, error: BaseException) -> bool:
    """Whether ``exc`` is ``error``, alone or in (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, error) for inner in exc.exceptions)
    return exc is error


class UpstreamErrorMiddleware:
    """Names upstream failures in streams, and closes what a request left open.

    - LangServe hides every mid-stream exception behind one generic SSE error event, then
      re-raises it (uvicorn logs a traceback and cuts the body short). The run's exception
      (caught by ``_RecordRunError``) says whether it was a rate limit, a rejected key or
      an unreachable API: the event says that instead, and the body ends properly.
    - When a request ends (a client hanging up included), every upstream stream it
      opened is closed, even if a framework still holds the abandoned generators.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            with closing_upstreams():
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        box = _ErrorBox()
        scope.setdefault("state", {})["error_box"] = box
        started = ended = False

        async def send_with_cause(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                ended = not message.get("more_body", False)
                if box.error is not None and _GENERIC_ERROR in message.get("body", b""):
                    cause = json.dumps(describe_error(box.error), ensure_ascii=False).encode()
                    message["body"] = message["body"].replace(_GENERIC_ERROR, cause)
            await send(message)

        with closing_upstreams():
            try:
                await self.app(scope, receive, send_with_cause)
            except Exception as exc:
                if not (started and box.error is not None and _only(exc, box.error)):
                    raise
                # already told to the client as an error event, and logged with its run id
                if not ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


MAX_BODY_BYTES = 8 * 1024 * 1024  # the largest input (summarize's 1M characters) fits


class JSONBodyGuard:
    """Answers 422/413 for JSON bodies LangServe would turn into a 500 (and reads
    ``"config": null`` as no config, which LangServe fails on too).

    LangServe and FastAPI parse with the standard library, which accepts NaN/Infinity
    and lone surrogates and then fails to render its own 422 echoing them, and a body
    that is not UTF-8 escapes as a UnicodeDecodeError. orjson refuses all three, so a
    body it cannot parse gets a clear 422 here, before any route runs.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or b"json" not in dict(scope["headers"]).get(b"content-type", b""):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY_BYTES:
                response = JSONResponse({"detail": f"The request body is over "
                                                   f"{MAX_BODY_BYTES // 2**20} MiB."}, 413)
                await response(scope, receive, send)
                return
        body = b"".join(chunks)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            # FastAPI's own shape for a body that does not parse
            response = JSONResponse({"detail": [{
                "type": "json_invalid", "loc": ["body"],
                "msg": f"The request body is not valid JSON (UTF-8, no NaN/Infinity, "
                       f"no lone surrogates): {exc}"}]}, 422)
            await response(scope, receive, send)
            return
        if scope["path"].endswith("/batch") and isinstance(parsed, dict) \
                and not isinstance(parsed.get("inputs", []), list):
            response = JSONResponse({"detail": [{  # LangServe calls len() on it: a 500
                "type": "list_type", "loc": ["body", "inputs"],
                "msg": "inputs must be a list of the chain's inputs"}]}, 422)
            await response(scope, receive, send)
            return
        if isinstance(parsed, dict) and "config" in parsed and parsed["config"] is None:
            del parsed["config"]  # "config": null means no config (LangServe: a 500)
            body = orjson.dumps(parsed)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


# ------------------------------------------------------------------- access control

def access_guard(settings: ServerSettings) -> Callable[[Request], None]:
    """A dependency: with access keys configured, every chain route needs one; without,
    only loopback clients are served unless the settings allow public access."""
    keys = [k.get_secret_value().encode() for k in settings.access_keys]

    def guard(request: Request) -> None:
        if not keys:
            client = request.client.host if request.client else ""
            if settings.allow_public or not client or is_loopback(client) \
                    or client == "testclient":
                return
            raise HTTPException(403, "This server only serves loopback clients; set "
                                     "MARITACA_CHAINS_API_KEYS to serve others")
        auth = request.headers.get("authorization", "")
        supplied = (request.headers.get("x-api-key")
                    or (auth[7:] if auth.lower().startswith("bearer ") else "")
                    or request.cookies.get(ACCESS_COOKIE, ""))
        if not any(hmac.compare_digest(supplied.encode(), key) for key in keys):
            raise HTTPException(401, "Missing or wrong access key: send it as X-API-Key or "
                                     "Authorization: Bearer, or open /login?key=... once in "
                                     "a browser", headers={"WWW-Authenticate": "Bearer"})

    return guard


def _check_configurable(configurable: dict[str, Any]) -> None:
    if refused := sorted(set(configurable) - CONFIGURABLE_KEYS):
        raise HTTPException(422, f"config.configurable may only set "
                                 f"{sorted(CONFIGURABLE_KEYS)}; refused: {refused}")
    temperature = configurable.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float)
                                        and 0 <= temperature <= 2):
        raise HTTPException(422, "config.configurable.temperature must be 0 to 2")
    max_tokens = configurable.get("max_tokens")
    if max_tokens is not None and not (isinstance(max_tokens, int) and 1 <= max_tokens <= 32_000):
        raise HTTPException(422, "config.configurable.max_tokens must be 1 to 32000")


async def _check_config(config: dict[str, Any], request: Request) -> dict[str, Any]:
    """LangServe's per-request hook: refuse unknown ``configurable`` keys (api_key,
    base_url...) and out-of-range values; record the run's error for the middleware."""
    if config_hash := request.path_params.get("config_hash"):  # /<chain>/c/<hash>/...
        _check_configurable(_config_from_hash(config_hash).get("configurable") or {})
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = {}
        configs = body.get("config") if isinstance(body, dict) else None
        for one in configs if isinstance(configs, list) else [configs]:
            if isinstance(one, dict) and isinstance(one.get("configurable"), dict):
                _check_configurable(one["configurable"])
    box = request.scope.get("state", {}).get("error_box")
    if box is not None:
        config["callbacks"] = [*(config.get("callbacks") or []), _RecordRunError(box)]
    return config


# ------------------------------------------------------------------------------ app

@asynccontextmanager
async def full_collections_on_a_timer(seconds: float) -> AsyncIterator[None]:
    """Run the cyclic GC's full collections every ``seconds`` instead of by allocation count.

    A full collection stops every stream for as long as it walks the long-lived objects;
    under a few hundred 30 tokens/s streams they stalled streams past the 100 ms budget
    at 150-200 streams, and with this timer 400-500 hold (BENCHMARKS.md). Young
    generations still collect as usual; the few cycles that outlive them wait for the
    timer. Start-up objects are frozen out of every walk. ``seconds`` <= 0 (the default
    setting) keeps Python's own policy: the timer holds more streams but lets garbage
    from hung-up and failed streams, and some of their sockets, wait for it.
    """
    gc.freeze()  # start-up objects live forever: keep them out of the collector's walk
    if seconds <= 0:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], 1_000_000)  # no full collection by count

    async def collect() -> None:
        while True:
            await asyncio.sleep(seconds)
            gc.collect()

    timer = asyncio.create_task(collect())
    try:
        yield
    finally:
        timer.cancel()
        gc.set_threshold(*before)


def create_app(settings: ServerSettings | None = None, *,
               model: ChatMaritaca | None = None) -> FastAPI:
    """The FastAPI app. With ``model`` given, no backend is started (tests, embedding);
    otherwise the settings choose Maritaca's API or the embedded model."""
    settings = settings or ServerSettings()
    backend: local.LocalBackend | None = None
    context_tokens: int | None = None
    if model is not None:
        backend_name = "custom"
    elif settings.backend_in_use is Backend.LOCAL:
        # the chains need the URL now: pick the port before the child starts
        backend = local.LocalBackend(port=free_port("127.0.0.1"))
        model = ChatMaritaca(base_url=backend.base_url, model=local.MODEL_NAME)
        backend_name, context_tokens = "local", backend.n_ctx
    else:
        if settings.api_key is None:
            raise ValueError("MARITACA_BACKEND=maritaca needs MARITACA_API_KEY")
        model = ChatMaritaca(api_key=settings.api_key, base_url=settings.base_url,
                             model=settings.model)
        backend_name = "maritaca"
    health = {"status": "ok", "backend": backend_name, "model": model.model_name,
              "base_url": model.base_url}
    if backend_name == "local":
        health["note"] = TINY_MODEL_NOTE

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backend is not None:
            await backend.astart()
        logger.info("maritaca-chains serving %s with backend=%s model=%s%s",
                       ", ".join(f"/{n}" for n in CHAINS), backend_name, model.model_name,
                       f"\n  note: {TINY_MODEL_NOTE}" if backend is not None else "")
        try:
            async with full_collections_on_a_timer(settings.full_gc_seconds):
                yield
        finally:
            if backend is not None:
                await backend.astop()

    app = FastAPI(title="maritaca-chains", version="0.1.0", lifespan=lifespan,
                  description="Streaming LCEL chains on Maritaca AI's Sabiá models.")
    app.add_middleware(UpstreamErrorMiddleware)
    app.add_middleware(JSONBodyGuard)
    guard = Depends(access_guard(settings))
    chains = build_chains(model, context_tokens=context_tokens)
    for name, chain in chains.items():
        add_routes(app, chain, path=f"/{name}", dependencies=[guard],
                   per_req_config_modifier=_check_config, config_keys=("configurable",))
    app.state.chains = chains
    mount_faces(app, chains, guard, ui=settings.ui)

    @app.exception_handler(errors.MaritacaError)
    async def _maritaca_error(request: Request, exc: errors.MaritacaError) -> JSONResponse:
        payload = describe_error(exc)
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        headers = {"Retry-After": f"{payload['retry_after']:g}"} if "retry_after" in payload \
            else None
        return JSONResponse({"detail": payload["message"], "type": payload["type"],
                             **({"retry_after": payload["retry_after"]}
                                if "retry_after" in payload else {})},
                            status_code=payload["status_code"], headers=headers)

    @app.exception_handler(ValidationError)
    async def _invalid_input(request: Request, exc: ValidationError) -> JSONResponse:
        # LangServe's /batch validates its inputs without catching the error (a 500)
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors(include_url=False)]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        """Which backend and model serve (never the key), and how many upstream
        streams this process has open (zero when no stream runs)."""
        return {**health, "open_upstream_streams": open_upstreams()}

    @app.get("/login", include_in_schema=False)
    async def login(key: str) -> RedirectResponse:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(ACCESS_COOKIE, key, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        rows = "".join(
            f"<li><b>{html.escape(spec.title)}</b> (<code>/{name}</code>): "
            f"{html.escape(spec.description)} "
            f'<a href="/{name}/playground/">playground</a>, plain text at '
            f"<code>POST /{name}/text</code>, WebSocket at <code>/{name}/ws</code></li>"
            for name, spec in CHAINS.items())
        chat = "<a href='/ui/'>chat UI</a> · " if settings.ui else ""
        note = f"<p><em>{html.escape(TINY_MODEL_NOTE)}</em></p>" if backend else ""
        return (f"<!doctype html><html lang='pt-BR'><head><meta charset='utf-8'>"
                f"<title>maritaca-chains</title></head><body><h1>maritaca-chains</h1>"
                f"<p>Backend: {html.escape(backend_name)}, model "
                f"{html.escape(model.model_name)}.</p>{note}<ul>{rows}</ul>"
                f"<p>{chat}<a href='/docs'>API docs</a> · <a href='/healthz'>health</a></p>"
                f"</body></html>")

    return app


def app_factory() -> FastAPI:
    """For ``uvicorn server:app_factory --factory --workers N``."""
    return create_app()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the maritaca-chains chains.")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8000)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (each starts its own embedded model if used)")
    parser.add_argument("--allow-public", action="store_true",
                        help="serve a non-loopback host without access keys")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in {"host": args.host, "port": args.port}.items()
                                 if v is not None}
    if args.allow_public:
        overrides["allow_public"] = True
    settings = ServerSettings(**overrides)
    try:
        settings.check_exposure()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers > 1:
        uvicorn.run("server:app_factory", factory=True, host=settings.host, port=settings.port,
                    workers=args.workers, log_level=settings.log_level)
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=settings.log_level)


if __name__ == "__main__":
    main()
