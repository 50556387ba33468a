"""Each LangServe workaround still has a job: these tests pin the LangServe behaviour each
one works around (``maritaca_chains/langserve_compat``), against a bare LangServe app
without our fixes, and fail if LangServe changes it. When one fails, the workaround may
be obsolete or broken: read its module and decide."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from langchain_core.runnables import RunnableConfig, RunnableGenerator, RunnableLambda
from langserve import add_routes
from langserve.callbacks import AsyncEventAggregatorCallback
from langserve.lzstring import LZString
from sse_starlette import EventSourceResponse

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.langserve_compat import sse_encoding
from maritaca_chains.langserve_compat.config_hash import configurable_in_path
from maritaca_chains.langserve_compat.error_events import GENERIC_ERROR
from maritaca_chains.langserve_compat.served_chain import served_chain
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model, loopback_transport


def bare(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=loopback_transport(app, raise_app_exceptions=False),
                             base_url="http://testserver", timeout=30)


def echo() -> Any:
    """A chain LangServe can serve whatever ran before (typed: string in, string out)."""
    return RunnableLambda(lambda text: text).with_types(input_type=str, output_type=str)


def sse(body: str) -> list[tuple[str, str]]:
    events = []
    for block in body.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            events.append((fields["event"], fields.get("data", "")))
    return events


async def _fails_midway(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    async for _ in chunks:
        pass
    yield "um "
    raise ConnectionError("upstream went away")


async def test_langserve_hides_a_mid_stream_error_behind_these_exact_bytes():
    """error_events replaces this event's data by the named cause."""
    app = FastAPI()
    add_routes(app, RunnableGenerator(_fails_midway).with_types(input_type=str,
                                                                output_type=str),
               path="/broken")
    async with bare(app) as http:
        response = await http.post("/broken/stream", json={"input": "x"})
    errors = [data for event, data in sse(response.text) if event == "error"]
    assert errors == [GENERIC_ERROR.decode()]


@pytest.mark.parametrize("body", [b'{"input": "x", "config": null}', b'{"input": NaN}',
                                  b'{"inputs": 5}'])
async def test_langserve_answers_these_bodies_with_a_500(body):
    """body_guard answers them 422 (or reads null as no config) before LangServe."""
    app = FastAPI()  # a string input: NaN is refused with a 422 that echoes it
    add_routes(app, echo(), path="/echo")
    path = "/echo/batch" if b"inputs" in body else "/echo/invoke"
    async with bare(app) as http:
        response = await http.post(path, content=body,
                                   headers={"content-type": "application/json"})
    assert response.status_code == 500


def test_langserve_reads_the_path_config_with_config_from_hash():
    """config_hash: the routes still take a ``config_hash`` path parameter, and the
    private decoder still reads what LangServe's clients put there."""
    app = FastAPI()
    add_routes(app, echo(), path="/hashed",
               enabled_endpoints=("invoke", "config_hashes"))
    paths = {getattr(route, "path", "") for route in app.routes}
    assert "/hashed/c/{config_hash}/invoke" in paths
    config = {"configurable": {"api_key": "someone-elses"}}
    hashed = LZString.compressToEncodedURIComponent(json.dumps(config))
    request = Request({"type": "http", "path_params": {"config_hash": hashed},
                       "headers": [], "method": "POST"})
    assert configurable_in_path(request) == {"api_key": "someone-elses"}


async def test_the_path_config_is_held_to_the_configurable_policy(emu):
    app = create_app(ServerSettings(_env_file=None, ui=False),  # type: ignore[call-arg]
                     model=emulator_model(emu))
    hashed = LZString.compressToEncodedURIComponent(json.dumps(
        {"configurable": {"base_url": "http://evil.example"}}))
    async with bare(app) as http:
        response = await http.post(f"/story/c/{hashed}/invoke",
                                   json={"input": {"topic": "Brasil"}})
    assert response.status_code == 422 and "base_url" in response.text
    assert not emu.requests


def _callbacks_seen(seen: list[list[type]]) -> Any:
    class Recording(RunnableLambda):  # type: ignore[type-arg]
        async def astream(self, input: Any, config: RunnableConfig | None = None,
                          **kwargs: Any) -> AsyncIterator[Any]:
            callbacks = (config or {}).get("callbacks")
            seen.append([type(h) for h in callbacks] if isinstance(callbacks, list) else [])
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk

    return Recording(lambda text: text).with_types(input_type=str, output_type=str)


async def test_langserve_stream_attaches_an_event_aggregator_it_never_reads():
    """served_chain drops it: the chain it serves no longer sees it."""
    seen: list[list[type]] = []
    app = FastAPI()
    chain = _callbacks_seen(seen)
    add_routes(app, chain, path="/plain")
    add_routes(app, served_chain(chain), path="/served")
    async with bare(app) as http:
        assert (await http.post("/plain/stream", json={"input": "x"})).status_code == 200
        assert (await http.post("/served/stream", json={"input": "x"})).status_code == 200
    plain, served = seen
    assert AsyncEventAggregatorCallback in plain
    assert AsyncEventAggregatorCallback not in served


async def test_langserve_batch_drops_the_callbacks_of_the_per_request_hook():
    """batch_callbacks hands the ledger to /batch's runs another way; the per-request
    hook is called with the request, before the runs, and its config reaches /invoke."""
    calls: list[str] = []

    class Marker(AsyncEventAggregatorCallback):
        async def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
            calls.append("run")

    async def hook(config: dict[str, Any], request: Request) -> dict[str, Any]:
        calls.append(f"hook {request.url.path}")
        return {**config, "callbacks": [Marker()]}

    app = FastAPI()
    add_routes(app, echo(), path="/hooked",  # (LangServe names
               per_req_config_modifier=hook, config_keys=("configurable",))  # models by path)
    async with bare(app) as http:
        assert (await http.post("/hooked/invoke", json={"input": "x"})).status_code == 200
        assert calls == ["hook /hooked/invoke", "run"]
        calls.clear()
        assert (await http.post("/hooked/batch", json={"inputs": ["x", "y"]})).status_code == 200
    assert calls == ["hook /hooked/batch"]  # no run saw the hook's callback


def test_langserve_adds_a_token_feedback_route_that_we_leave_out():
    """feedback_routes: LangServe adds /token_feedback unless told not to (it answers 400
    without LangSmith and a token_feedback_config); ours leaves it out."""
    from maritaca_chains.langserve_compat.feedback_routes import feedback_routes

    app = FastAPI()
    add_routes(app, echo(), path="/plain_fb")
    add_routes(app, echo(), path="/ours_fb", **feedback_routes())
    paths = {getattr(route, "path", "") for route in app.routes}
    assert "/plain_fb/token_feedback" in paths
    assert not any(p.startswith("/ours_fb/") and "feedback" in p for p in paths)


def test_sse_starlette_encodes_every_probe_event_as_our_one_step_encoder_does():
    """sse_encoding's stream_response is installed only while this holds: if sse-starlette
    changes how it encodes or sends events, the server falls back to sse-starlette's own
    (slower) path, and this test says so."""
    assert sse_encoding.matches()
    assert sse_encoding.install()
    assert EventSourceResponse.stream_response is not sse_encoding._ORIGINAL


async def test_events_ready_together_go_out_together_and_none_waits_for_the_next():
    """What the generator has ready is sent in one body message, and sent before the
    stream waits for its next event: a reader gets every event as soon as it exists."""
    assert sse_encoding.install()
    next_token = asyncio.Event()

    async def events() -> AsyncIterator[dict[str, str]]:
        yield {"event": "data", "data": '"Era"'}
        yield {"event": "data", "data": '" uma"'}
        await next_token.wait()  # the upstream's next token is not there yet
        yield {"event": "data", "data": '" vez"'}
        yield {"event": "end"}

    bodies: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            next_token.set()  # only once the first two are out

    await asyncio.wait_for(EventSourceResponse(events()).stream_response(send), 5)
    assert bodies == [b'event: data\r\ndata: "Era"\r\n\r\nevent: data\r\ndata: " uma"\r\n\r\n',
                      b'event: data\r\ndata: " vez"\r\n\r\nevent: end\r\n\r\n', b""]


async def test_a_hang_up_while_ready_events_go_out_reaches_the_generator_where_it_waits():
    """The send that fails (the client is gone) fails where the generator waits for its
    next event, as it would without events sent together: it cleans up (here, where
    the upstream request would be closed) and the failure is raised."""
    assert sse_encoding.install()
    cleaned_up: list[str] = []

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "data", "data": '"Era"'}
            await asyncio.sleep(30)  # the next token
            yield {"event": "end"}
        except BaseException as error:
            cleaned_up.append(type(error).__name__)
            raise

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the client hung up")

    with pytest.raises(OSError, match="hung up"):
        await asyncio.wait_for(EventSourceResponse(events()).stream_response(send), 5)
    assert cleaned_up == ["OSError"]


async def test_a_hang_up_while_ready_events_go_out_cancels_the_task_the_generator_awaits():
    """An LCEL step waits on a task of its own: when the hang-up's cancellation lands in
    the send, that task is cancelled too, as a task's cancellation would cancel it,
    instead of running on (reading its upstream answer to the end) after the response
    has ended."""
    assert sse_encoding.install()
    seen: list[str] = []

    async def next_token() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("the step's task cancelled")
            raise

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "data", "data": '"Era"'}
            await asyncio.create_task(next_token())
            yield {"event": "end"}
        except BaseException as error:
            seen.append(f"the generator: {type(error).__name__}")
            raise

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.sleep(0.05)  # the next step has started meanwhile
            raise asyncio.CancelledError  # the client hung up during the send

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(EventSourceResponse(events()).stream_response(send), 5)
    assert seen == ["the step's task cancelled", "the generator: CancelledError"]


async def test_langserve_streams_the_same_bytes_through_the_one_step_encoder(monkeypatch):
    """Byte for byte what sse-starlette's own encoder sends, multi-line chunks included."""
    async def story(_: AsyncIterator[str]) -> AsyncIterator[str]:
        for text in ("Era uma vez", " duas\nlinhas", "\r\n", "", "fim \"citado\""):
            yield text

    app = FastAPI()
    add_routes(app, RunnableGenerator(story).with_types(input_type=str, output_type=str),
               path="/story")

    async def wire() -> bytes:
        async with bare(app) as http:
            response = await http.post("/story/stream", json={"input": "x"})
            return re.sub(rb"[0-9a-f]{8}-[0-9a-f-]{27}", b"<run>", response.content)

    assert sse_encoding.install()  # else both sides below would be sse-starlette's
    ours = await wire()
    monkeypatch.setattr(EventSourceResponse, "stream_response", sse_encoding._ORIGINAL)
    theirs = await wire()
    assert ours == theirs
    assert b'event: data\r\ndata: " duas\\nlinhas"\r\n\r\n' in ours
    assert ours.endswith(b"event: end\r\n\r\n")


async def test_langserve_invoke_runs_on_after_its_client_hangs_up():
    """whole_answer_hang_up stops the run itself: LangServe's /invoke, served by uvicorn,
    lets a run whose client has gone read its upstream answer on."""
    with MaritacaEmulator(reply_tokens=300, token_delay=0.01) as emu:
        app = FastAPI()
        add_routes(app, emulator_model(emu), path="/model")
        with RunningServer(app) as server:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(f"{server.url}/model/invoke", json={"input": "oi"})
            await asyncio.sleep(1.0)  # a hang-up that reached the run would show by now
            record = emu.requests[-1]
            assert not record.client_disconnected and record.finished_at is None
