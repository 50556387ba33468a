"""The upstream pools are shared by every caller, so they must never keep cookies.

``ChatMaritaca``'s httpx clients are shared by every model with the same connection
settings, whatever its API key (``maritaca._http``). A cookie the API (or a proxy or load
balancer before it) sets in answer to one caller's request would be sent with the next
caller's, under another key. These tests put a real local server that sets a cookie on
every answer in the API's place, and check that no request ever carries one back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import RunningServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from maritaca import ChatMaritaca


class CookieSettingAPI:
    """A chat completions endpoint that sets a cookie naming the caller's key and
    records the ``Cookie`` header of every request it gets."""

    def __init__(self) -> None:
        self.cookies_received: list[str | None] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.complete,
                                           methods=["POST"])])

    async def complete(self, request: Request) -> Response:
        self.cookies_received.append(request.headers.get("cookie"))
        body = await request.json()
        key = request.headers["authorization"].removeprefix("Bearer ")
        cookie = {"set-cookie": f"caller={key}; Path=/"}
        message = {"role": "assistant", "content": "Olá"}
        if not body.get("stream"):
            return JSONResponse({"id": "c1", "object": "chat.completion", "created": 0,
                                 "model": body["model"],
                                 "choices": [{"index": 0, "message": message,
                                              "finish_reason": "stop"}]}, headers=cookie)

        async def events() -> Iterator[str]:  # type: ignore[misc]
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                     "model": body["model"],
                     "choices": [{"index": 0, "delta": message, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=cookie)


@pytest.fixture
def api() -> Iterator[tuple[CookieSettingAPI, str]]:
    upstream = CookieSettingAPI()
    with RunningServer(upstream.app) as server:
        yield upstream, f"{server.url}/v1"


def _models(base_url: str) -> list[ChatMaritaca]:
    return [ChatMaritaca(base_url=base_url, api_key=key, max_retries=0)  # type: ignore[arg-type]
            for key in ("chave-de-ana", "chave-de-bruno")]


def test_a_cookie_set_for_one_caller_never_reaches_the_next_sync(api) -> None:
    upstream, base_url = api
    ana, bruno = _models(base_url)
    assert ana.invoke("oi").content == "Olá"
    assert "".join(str(c.content) for c in bruno.stream("oi")) == "Olá"
    assert bruno.invoke("oi").content == "Olá"
    assert upstream.cookies_received == [None, None, None]


async def test_a_cookie_set_for_one_caller_never_reaches_the_next_async(api) -> None:
    upstream, base_url = api
    ana, bruno = _models(base_url)
    assert (await ana.ainvoke("oi")).content == "Olá"
    assert "".join([str(c.content) async for c in bruno.astream("oi")]) == "Olá"
    assert (await bruno.ainvoke("oi")).content == "Olá"
    assert upstream.cookies_received == [None, None, None]


async def test_the_shared_clients_cannot_be_given_cookies(api) -> None:
    """A cookie jar set on a shared client by hand would go out with every caller's
    requests: the shared clients refuse one, and keep none from the answers."""
    from maritaca import _http

    upstream, base_url = api
    ana, _ = _models(base_url)
    assert (await ana.ainvoke("oi")).content == "Olá"
    assert ana.invoke("oi").content == "Olá"
    clients = [*_http._sync.values(),
               *(client for per_loop in _http._async.values() for shards in per_loop.values()
                 for client in shards.clients)]
    assert len(clients) >= 2 and all(not client.cookies for client in clients)
    for client in clients:
        with pytest.raises(AttributeError, match="keeps no cookies"):
            client.cookies = {"sessao": "de-ana"}
        with pytest.raises(AttributeError, match="keeps no cookies"):
            client.cookies.set("sessao", "de-ana")
        with pytest.raises(AttributeError, match="keeps no cookies"):
            client.cookies.update({"outra": "1"})
    assert not any(client.cookies for client in clients)
