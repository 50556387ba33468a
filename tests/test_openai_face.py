"""The OpenAI-compatible face (/v1) driven by the real clients people point at it: the
``openai`` Python SDK and LangChain's ``ChatOpenAI``, against a real uvicorn over the
emulator. (The ``openai`` npm package: tests/test_js_clients.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import SLOW_TOKENS, RunningServer, emulator_model, wait_disconnected
from tests.test_metrics import run_lines

pytestmark = pytest.mark.timeout(90)

KEY = "chave-de-teste-0001"


def client_of(server: RunningServer, key: str = "sem-chave") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def sent(emu: MaritacaEmulator) -> dict:
    body = emu.requests[-1].body
    assert body is not None
    return body


async def test_models_lists_every_chain_then_the_backends_models(live_server, emu):
    models = [m async for m in client_of(live_server).models.list()]
    ids = [m.id for m in models]
    assert ids[:3] == ["story", "qa", "summarize"]
    assert "sabia-4" in ids and "sabiazinho-4" in ids
    assert {m.owned_by for m in models[:3]} == {"maritaca-chains"}
    one = await client_of(live_server).models.retrieve("qa")
    assert one.id == "qa"
    with pytest.raises(openai.NotFoundError):
        await client_of(live_server).models.retrieve("gpt-4o")


async def test_streamed_chain_answer_with_usage_and_cost(live_server, emu):
    stream = await client_of(live_server).chat.completions.create(
        model="story", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "ignored by a chain"},
                  {"role": "user", "content": "um sabiá"}],
        temperature=0, max_tokens=300, extra_body={"input": {"length": "curta"}})
    texts, finish, last = [], None, None
    async for chunk in stream:
        last = chunk
        if chunk.choices:
            if chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
    body = sent(emu)
    assert "".join(texts) == emu.expected_text(body["messages"])
    assert len(texts) == emu.requests[-1].chunks_sent  # one event per chain chunk
    assert finish == "stop"
    # the last user message filled the topic, input the rest; limits went upstream
    assert "um sabiá" in body["messages"][-1]["content"]
    assert (body["temperature"], body["max_tokens"]) == (0, 300)
    assert last is not None and last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == emu.requests[-1].chunks_sent
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.model_extra is not None and last.model_extra["cost_brl"] > 0


async def test_whole_completion_and_max_completion_tokens(live_server, emu):
    completion = await client_of(live_server).chat.completions.create(
        model="qa", messages=[{"role": "user", "content": "Qual é a capital do Brasil?"}],
        max_completion_tokens=5)
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert emu.expected_text(sent(emu)["messages"]).startswith(choice.message.content or "x")
    assert choice.finish_reason == "length" and sent(emu)["max_tokens"] == 5
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert completion.model_extra is not None and completion.model_extra["cost_brl"] > 0


async def test_a_backend_model_is_a_plain_chat_over_the_messages(live_server, emu):
    messages = [{"role": "system", "content": "Responda curto."},
                {"role": "user", "content": "Oi"},
                {"role": "assistant", "content": "Olá!"},
                {"role": "user", "content": [{"type": "text", "text": "Tudo bem?"}]}]
    completion = await client_of(live_server).chat.completions.create(
        model="sabiazinho-4", messages=messages, temperature=0.2)  # type: ignore[arg-type]
    body = sent(emu)
    assert body["model"] == "sabiazinho-4" and body["temperature"] == 0.2
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Responda curto."), ("user", "Oi"), ("assistant", "Olá!"),
        ("user", "Tudo bem?")]
    assert completion.choices[0].message.content == emu.expected_text(body["messages"])


def test_langchains_chatopenai_pointed_at_v1(live_server, emu):
    model = ChatOpenAI(base_url=f"{live_server.url}/v1", api_key="sem-chave",  # type: ignore[arg-type]
                       model="story", max_retries=0)
    chunks = [c.content for c in model.stream("Brasil")]
    assert "".join(chunks) == emu.expected_text(sent(emu)["messages"])  # type: ignore[arg-type]
    assert len([c for c in chunks if c]) == emu.requests[-1].chunks_sent
    chat = ChatOpenAI(base_url=f"{live_server.url}/v1", api_key="sem-chave",  # type: ignore[arg-type]
                      model="sabia-4", max_retries=0)
    answer = chat.invoke([("system", "Seja breve."), ("human", "Oi")])
    assert answer.content == emu.expected_text(sent(emu)["messages"])
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize(("kwargs", "param", "error"), [
    ({"extra_body": {"input": {"length": "enorme"}}}, "input.length", openai.UnprocessableEntityError),
    ({"extra_body": {"input": {"surpresa": 1}}}, "input.surpresa", openai.UnprocessableEntityError),
    ({"messages": [{"role": "user", "content": "x" * 501}]}, "messages", openai.UnprocessableEntityError),
    ({"messages": [{"role": "assistant", "content": "só eu"}]}, "messages", openai.UnprocessableEntityError),
    ({"extra_body": {"input": {"topic": "outro"}}}, "input.topic", openai.UnprocessableEntityError),
    ({"temperature": 7}, "temperature", openai.UnprocessableEntityError),
    ({"n": 2}, "n", openai.UnprocessableEntityError),
    ({"extra_body": {"n": True}}, "n", openai.UnprocessableEntityError),  # not 1 in JSON
    ({"reasoning_effort": "high"}, "reasoning_effort", openai.UnprocessableEntityError),
    ({"max_tokens": 50, "max_completion_tokens": 50}, "max_tokens",
     openai.UnprocessableEntityError),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "Brasil"}]},
     "messages[0]", openai.UnprocessableEntityError),
    ({"messages": [{"role": "system", "content": 5}, {"role": "user", "content": "Brasil"}]},
     "messages[0].content", openai.UnprocessableEntityError),
    ({"model": "gpt-4o"}, "model", openai.NotFoundError),
])
async def test_bad_requests_are_openai_errors_naming_the_parameter(live_server, emu, kwargs,
                                                                   param, error):
    request = {"model": "story", "messages": [{"role": "user", "content": "Brasil"}], **kwargs}
    with pytest.raises(error) as raised:
        await client_of(live_server).chat.completions.create(**request)
    assert raised.value.param == param
    assert isinstance(raised.value.body, dict) and raised.value.body["message"]
    assert emu.requests == []


async def test_refusals_before_any_route_are_openai_errors_too(emu):
    """A body over its cap, a body that is not JSON, JSON that does not parse, a Host the
    server does not answer to: refused before the /v1 route runs, and still in OpenAI's
    shape, which is what the SDKs read (``error.message``)."""
    app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False,  # type: ignore[call-arg]
                                    MARITACA_CHAINS_MAX_BODY_BYTES=1024),
                     model=emulator_model(emu))
    with RunningServer(app) as live_server:
        with pytest.raises(openai.APIStatusError) as raised:  # over the cap: 413
            await client_of(live_server).chat.completions.create(
                model="story", messages=[{"role": "user", "content": "x" * 2000}])
        assert raised.value.status_code == 413
        assert raised.value.code == "body_too_large"
        assert "MARITACA_CHAINS_MAX_BODY_BYTES" in raised.value.message
        _refused_before_the_route(live_server)
    assert emu.requests == []


def _refused_before_the_route(live_server: RunningServer) -> None:
    url = f"{live_server.url}/v1/chat/completions"
    cases = [(httpx.post(url, content=b"model=story", headers={
                 "content-type": "text/plain"}), 415, "json_body_required"),
             (httpx.post(url, content=b'{"model": "story", nope', headers={
                 "content-type": "Application/JSON"}), 422, "json_invalid"),
             (httpx.get(f"{live_server.url}/v1/models", headers={"host": "evil.example"}),
              400, "host_not_allowed")]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == code and error["message"], error
        assert error["type"] == "invalid_request_error"
        assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize(("scenario", "error", "code"), [
    (Scenario.rate_limit(retry_after=2.5), openai.RateLimitError, "rate_limit"),
    (Scenario.server_error(), openai.InternalServerError, "upstream_error"),
    (Scenario.context_too_long(), openai.BadRequestError, "context_too_long"),
])
async def test_upstream_failure_before_any_text_is_an_http_error(live_server, emu, scenario,
                                                                  error, code):
    emu.enqueue(scenario)
    with pytest.raises(error) as raised:
        await client_of(live_server).chat.completions.create(
            model="story", stream=True, messages=[{"role": "user", "content": "Brasil"}])
    assert raised.value.code == code and "test-key" not in str(raised.value.body)
    if code == "rate_limit":
        headers = raised.value.response.headers  # as OpenAI's API sends them
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("3", "2500")


@pytest.mark.parametrize("scenario", [
    Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"),
    Scenario.drop(after_chunks=3),
])
async def test_upstream_failure_mid_stream_is_a_last_chunk_the_sdk_raises_on(live_server, emu,
                                                                             scenario):
    emu.enqueue(scenario)
    stream = await client_of(live_server).chat.completions.create(
        model="story", stream=True, messages=[{"role": "user", "content": "Brasil"}])
    texts = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) and emu.expected_text(sent(emu)["messages"]).startswith("".join(texts))
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "upstream_stream_broken"
    if scenario.message:
        assert scenario.message in raised.value.message


async def test_hanging_up_closes_the_upstream(slow):
    emu, server = slow
    body = {"model": "story", "stream": True, "messages": [{"role": "user", "content": "Brasil"}]}
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 4:
                    break
            record = emu.requests[-1]
            assert record.finished_at is None
        closed_at = time.monotonic()
    await asyncio.to_thread(wait_disconnected, record, closed_at)


async def _hang_up_waiting(url: str, body: dict[str, Any]) -> float:
    """Post ``body`` and hang up after 0.5 s without an answer; when it hung up."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, json=body)
    return time.monotonic()


async def test_hanging_up_on_a_whole_completion_closes_the_upstream(slow):
    """``stream: false`` answers once the run is over: a client that stops waiting (a
    timeout) stops the run and its upstream call, as a streamed answer's hang-up does."""
    emu, server = slow
    body = {"model": "story", "messages": [{"role": "user", "content": "Brasil"}]}
    closed_at = await _hang_up_waiting(f"{server.url}/v1/chat/completions", body)
    record = emu.requests[-1]
    await asyncio.to_thread(wait_disconnected, record, closed_at)
    assert record.chunks_sent < SLOW_TOKENS // 2  # stopped, not read to its end


async def test_hanging_up_before_the_first_token_closes_the_upstream(slow):
    emu, server = slow
    emu.enqueue(Scenario.slow_first_token(delay=5))
    body = {"model": "story", "stream": True, "messages": [{"role": "user", "content": "Brasil"}]}
    closed_at = await _hang_up_waiting(f"{server.url}/v1/chat/completions", body)
    await asyncio.to_thread(wait_disconnected, emu.requests[-1], closed_at)


def keyed_app(emu: MaritacaEmulator, **env: str):
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_API_KEYS=KEY, **env)  # type: ignore[call-arg]
    return create_app(settings, model=emulator_model(emu))


async def test_access_keys_quotas_and_the_run_log(emu, caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    app = keyed_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100/minute")
    with RunningServer(app) as server:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client_of(server, "chave-errada").models.list()
        assert refused.value.code == "invalid_api_key" and emu.requests == []
        good = client_of(server, KEY)
        assert [m.id async for m in good.models.list()][0] == "story"
        answer = await good.chat.completions.create(
            model="story", messages=[{"role": "user", "content": "Brasil"}])
        assert answer.usage is not None and 50 < answer.usage.total_tokens < 100
        await good.chat.completions.create(  # a plain chat is logged as "chat"
            model="sabia-4", messages=[{"role": "user", "content": "Oi"}])
        # the budget is spent: the next request is refused before any upstream call
        upstream = len(emu.requests)
        with pytest.raises(openai.RateLimitError) as limited:
            await good.chat.completions.create(
                model="story", messages=[{"role": "user", "content": "Brasil"}])
        assert limited.value.code == "rate_limit_exceeded"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert len(emu.requests) == upstream
    lines = run_lines(caplog)
    assert [(line["chain"], line["outcome"]) for line in lines] == [("story", "ok"), ("chat", "ok")]
    assert lines[0]["key"].startswith("key-") and KEY not in caplog.text
    assert lines[0]["output_tokens"] == answer.usage.completion_tokens
