"""The OpenAPI schema tells what the server really answers.

FastAPI and LangServe document a 200 and a 422 per route; the server also answers the
request rules' 400/403/415, the access guard's 401, the input limits' 413, quotas'
429, Redis's or the run cap's 503, upstream failures' 502/504, and streams as
``text/event-stream`` or ``text/plain``. ``document_the_truth(app)`` amends the
generated schema once (on first ``/openapi.json``):

- every operation lists the error statuses it can answer, with their JSON body
  (``ErrorResponse``: ``detail`` and, for named causes, ``type``);
- streams declare their media types; ``POST /<chain>/runs`` declares its body (the
  same as ``/<chain>/stream``'s) and its ``201``;
- ``config.configurable`` lists only what clients may set, within their ranges (the
  rest is refused: ``request_rules.check_configurable``);
- ``/login`` and ``/logout`` (with access keys) and ``/metrics`` are in it;
  LangServe's ``token_feedback`` routes, disabled here (400), are not;
- ``/v1`` (the OpenAI-compatible face) lists its statuses with OpenAI's error body
  (``OpenAIErrorResponse``: ``{"error": {"message", "type", "param", "code"}}``), the
  refusals made before any route runs included (``faces.openai_errors``);
- ``/batch`` says how many inputs it takes (``MARITACA_CHAINS_BATCH_MAX_INPUTS``),
  ``/runs`` that it takes no field but ``input`` and ``config``, and the thread list
  its page's bounds.

``validation_detail_json``: a 422 whose ``detail`` is a sentence (LangServe's batch
check, ``configurable`` refusals) gets FastAPI's documented shape, a list of
``{"type", "loc", "msg"}``; a ``/c/<config_hash>/`` path whose hash names no config
is a 404 (LangServe says 400), like any other path naming nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chains import CONFIGURABLE_KEYS, MAX_TOKENS_RANGE, TEMPERATURE_RANGE

from .threads.routes import PAGE_LIMIT, THREADS_PATH

__all__ = ["OWN_ERROR_SHAPE", "document_the_truth", "validation_detail_json"]

# paths whose errors are not FastAPI's {"detail"}: left as their own routes document them
OWN_ERROR_SHAPE = ("/v1/",)

_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_ERROR_SCHEMA = {
    "title": "ErrorResponse", "type": "object", "required": ["detail"],
    "properties": {"detail": {"type": "string", "title": "Detail"},
                   "type": {"type": "string", "title": "Type",
                            "description": "the named cause, e.g. body_too_large, "
                                           "redis_unavailable, rate_limit"},
                   "retry_after": {"type": "number", "title": "Retry After"}}}
_WHY = {
    "400": "A refused request: a Host this server does not answer to, a key in the URL, "
           "a bad config hash or bad input for the model",
    "401": "Missing or wrong access key",
    "403": "Cross-site request, or a client that is not loopback on a server without keys",
    "404": "No such run, config or conversation (a chat chain's thread_id): unknown, "
           "expired, or another key's",
    "413": "The request body is over its cap (MARITACA_CHAINS_MAX_BODY_BYTES)",
    "415": "The body is not JSON",
    "429": "A quota, the run share of this key, or the upstream's rate limit",
    "502": "The upstream model failed",
    "503": "Redis is unavailable, the run slots are full, or the upstream is unreachable",
    "504": "The upstream model timed out",
}
_OPENAI_ERROR_SCHEMA = {
    "title": "OpenAIErrorResponse", "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}}}}}
_OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIErrorResponse"}
_OPENAI_WHY = {**_WHY, "404": "No such model (GET /v1/models lists them)",
               "422": "A parameter this face refuses, or a chain's input that its chain "
                      "refuses (param names it)", "415": "The body is not JSON"}
_STREAMS = ("/stream", "/stream_log", "/stream_events")
_LANGSERVE_BAD_HASH = "Invalid config hash"  # langserve.api_handler._config_from_hash
_RUN_CREATED = {
    "type": "object", "required": ["run_id", "stream_url", "status_url"],
    "properties": {"run_id": {"type": "string"}, "stream_url": {"type": "string"},
                   "status_url": {"type": "string"}}}


async def validation_detail_json(request: Request, exc: Exception) -> Any:
    """The app's HTTPException handler: FastAPI's, except that a 422 with a sentence for
    ``detail`` gets the list the schema documents."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _LANGSERVE_BAD_HASH:
        return JSONResponse({"detail": "No such config: the config hash in the path does "
                                       "not decode (share links come from the playground)",
                             "type": "config_not_found"}, 404)
    if exc.status_code == 422 and isinstance(exc.detail, str):
        return JSONResponse({"detail": [{"type": "value_error", "loc": ["body"],
                                         "msg": exc.detail}]}, 422, headers=exc.headers)
    return await http_exception_handler(request, exc)


def document_the_truth(app: FastAPI, *, metrics: bool, login: bool,
                       batch_max_inputs: int | None = None) -> None:
    """Amend ``app``'s OpenAPI schema (see the module doc) when it is first built."""
    build: Callable[[], dict[str, Any]] = app.openapi
    amended = False

    def openapi() -> dict[str, Any]:
        nonlocal amended
        schema = build()
        if not amended:
            _amend(schema, metrics=metrics, login=login, batch_max_inputs=batch_max_inputs)
            amended = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error(status: str) -> dict[str, Any]:
    return {"description": _WHY[status], "content": {"application/json": {"schema": _ERROR}}}


def _statuses(path: str, method: str) -> list[str]:
    statuses = ["400", "401", "403", "429", "503"]
    if method in ("post", "put", "patch"):
        statuses += ["413", "415", "422"]
    if "{" in path:
        statuses.append("404")
    chain_run = any(path.endswith(end) for end in (*_STREAMS, "/invoke", "/batch", "/text",
                                                   "/runs", "/ai-sdk"))
    if chain_run:
        statuses += ["502", "504"]
        if "404" not in statuses:
            statuses.append("404")  # a thread_id that names no conversation
    return statuses


def _openai_statuses(path: str, method: str) -> list[str]:
    statuses = ["400", "401", "403", "429", "503"]
    if method == "post":
        statuses += ["404", "413", "415", "422", "502", "504"]
    if "{" in path:
        statuses.append("404")
    return statuses


def _document_openai(paths: dict[str, dict[str, Any]]) -> None:
    """The ``/v1`` face's statuses, each with OpenAI's error body."""
    for path, item in paths.items():
        if not path.startswith(OWN_ERROR_SHAPE):
            continue
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's validation shape: never sent here
            for status in _openai_statuses(path, method):
                responses[status] = {"description": _OPENAI_WHY[status], "content": {
                    "application/json": {"schema": _OPENAI_ERROR}}}


def _amend(schema: dict[str, Any], *, metrics: bool, login: bool,
           batch_max_inputs: int | None = None) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorResponse"] = _ERROR_SCHEMA
    components["OpenAIErrorResponse"] = _OPENAI_ERROR_SCHEMA
    for configurable in _objects_titled("Configurable", schema):
        _only_what_clients_may_set(configurable)
    for name, component in components.items():
        if name.endswith("Request"):
            # "currently ignored" by LangServe: whatever is sent there changes nothing
            component.get("properties", {}).pop("kwargs", None)
        config = component.get("properties", {}).get("config", {})
        inputs = component.get("properties", {}).get("inputs")
        if name.endswith("BatchRequest") and inputs is not None and batch_max_inputs:
            inputs["maxItems"] = batch_max_inputs  # more: 413 (request_rules)
        if name.endswith("BatchRequest") and "anyOf" in config:
            # one config for every input (a list must be as long as inputs, which a
            # schema cannot say: it still works, undocumented)
            config.update(next(s for s in config.pop("anyOf") if "$ref" in s))
        if name.endswith("Request") and "$ref" in config:
            # "config": null is no config (langserve_compat.body_guard)
            config["anyOf"] = [{"$ref": config.pop("$ref")}, {"type": "null"}]
    paths: dict[str, dict[str, Any]] = schema.setdefault("paths", {})
    for path in [p for p in paths if p.endswith("/token_feedback")]:
        del paths[path]
    invalid = {"description": "Validation Error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}
    _document_openai(paths)
    for path, item in paths.items():
        if path.startswith(OWN_ERROR_SHAPE):
            continue  # the OpenAI-compatible face answers errors in OpenAI's shape
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in _statuses(path, method):
                responses.setdefault(status, invalid if status == "422" else _error(status))
            ok = responses.get("200")
            if method == "post" and path.endswith(_STREAMS) and ok is not None:
                ok["content"] = {"text/event-stream": {}}
            if method == "post" and path.endswith("/text") and ok is not None:
                ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
            if method == "get" and path.endswith("/runs/{run_id}/stream"):
                responses["200"] = {"description": "The run's events (SSE), each with an id",
                                    "content": {"text/event-stream": {}}}
                responses["204"] = {"description": "A finished run with nothing more to read"}
            if method == "post" and path.endswith("/runs"):
                stream = paths.get(path.removesuffix("/runs") + "/stream", {}).get("post", {})
                if body := stream.get("requestBody"):
                    operation["requestBody"] = _closed_body(body, components)
                responses["201"] = {"description": "The run started", "content": {
                    "application/json": {"schema": _RUN_CREATED}}}
    _document_thread_page(paths)
    _add_pages(paths, metrics=metrics, login=login)


def _closed_body(body: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """``/<chain>/stream``'s body as ``/<chain>/runs`` takes it: no other field (a run
    refuses them, 422; LangServe's stream ignores them)."""
    ref = body.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if not isinstance(ref, str):
        return body
    name = ref.rsplit("/", 1)[-1]
    closed = name.removesuffix("StreamRequest") + "RunRequest"
    component = components[closed] = {**copy.deepcopy(components[name]), "title": closed,
                                      "additionalProperties": False}
    config = component.get("properties", {}).get("config", {})
    for option in config.get("anyOf", []):  # and only configurable in config
        if isinstance(target := option.get("$ref"), str):
            config_name = target.rsplit("/", 1)[-1]
            components[closed + "Config"] = {**components[config_name],
                                             "title": closed + "Config",
                                             "additionalProperties": False}
            option["$ref"] = f"#/components/schemas/{closed}Config"
    return {**body, "content": {"application/json": {"schema": {
        "$ref": f"#/components/schemas/{closed}"}}}}


def _document_thread_page(paths: dict[str, dict[str, Any]]) -> None:
    """``GET /chat/threads``: its page's bounds, and the 422 (a sentence) past them."""
    operation = paths.get(THREADS_PATH, {}).get("get")
    if operation is None:
        return
    bounds = {"limit": {"minimum": 1, "maximum": PAGE_LIMIT}, "offset": {"minimum": 0}}
    for parameter in operation.get("parameters", []):
        parameter.get("schema", {}).update(bounds.get(parameter.get("name"), {}))
    operation["responses"]["422"] = {
        "description": f"limit from 1 to {PAGE_LIMIT}, offset 0 or more", "content": {
            "application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/HTTPValidationError"}, _ERROR]}}}}


def _objects_titled(suffix: str, node: Any) -> list[dict[str, Any]]:
    """Every schema object in ``node`` whose title ends with ``suffix``."""
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if str(item.get("title", "")).endswith(suffix) and "properties" in item:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _only_what_clients_may_set(configurable: dict[str, Any]) -> None:
    properties = configurable.setdefault("properties", {})
    for name in [n for n in properties if n not in CONFIGURABLE_KEYS]:
        del properties[name]
    configurable["additionalProperties"] = False
    if "temperature" in properties:
        properties["temperature"].update(minimum=TEMPERATURE_RANGE[0],
                                         maximum=TEMPERATURE_RANGE[1])
    if "max_tokens" in properties:  # 0: the chain's own budget (check_configurable)
        limit = properties["max_tokens"]
        for word in ("type", "minimum", "maximum"):
            limit.pop(word, None)
        limit["anyOf"] = [{"type": "integer", "minimum": MAX_TOKENS_RANGE[0],
                           "maximum": MAX_TOKENS_RANGE[1]}, {"const": 0}]


def _add_pages(paths: dict[str, dict[str, Any]], *, metrics: bool, login: bool) -> None:
    html = {"text/html": {"schema": {"type": "string"}}}
    if login:
        _add_login(paths, html)
    if metrics:
        paths["/metrics"] = {
            "get": {"tags": ["meta"], "summary": "Prometheus metrics", "operationId": "metrics",
                    "responses": {"200": {"description": "The text exposition format",
                                          "content": {"text/plain": {"schema": {
                                              "type": "string"}}}},
                                  "400": _error("400"), "401": _error("401"),
                                  "403": _error("403")}}}


def _add_login(paths: dict[str, dict[str, Any]], html: dict[str, Any]) -> None:
    form = {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["key"],
        "properties": {"key": {"type": "string", "description": "an access key"}}}}}
    paths["/login"] = {
        "get": {"tags": ["meta"], "summary": "The browser login form", "operationId": "login_form",
                "responses": {"200": {"description": "The form (pt-BR)", "content": html}}},
        "post": {"tags": ["meta"], "summary": "Log in: a session cookie for a right key",
                 "operationId": "login",
                 "requestBody": {"required": True, "content": form},
                 "responses": {
                     "303": {"description": "Logged in: the session cookie is set"},
                     "400": {"description": "This server has no access keys", "content": html},
                     "401": {"description": "Wrong key", "content": html},
                     "403": _error("403"), "413": _error("413"), "415": _error("415"),
                     "429": {"description": "Too many wrong keys from this address "
                                            "(Retry-After)", "content": html},
                     "503": _error("503")}}}
    paths["/logout"] = {
        "post": {"tags": ["meta"], "summary": "Log out: end the browser's session",
                 "operationId": "logout",
                 "responses": {"303": {"description": "The session ended; to /login"},
                               "400": _error("400"), "403": _error("403"),
                               "413": _error("413"), "415": _error("415"),
                               "503": _error("503")}}}

