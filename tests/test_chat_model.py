"""ChatMaritaca against the emulator: streaming, metadata, faults, retries, interruption."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from maritaca import ChatMaritaca, errors
from maritaca.testing import MaritacaEmulator, Scenario, closed_port_url

PROMPT = "Conte uma história sobre o Brasil."


@pytest.fixture
def emu():
    with MaritacaEmulator(reply_tokens=12) as emulator:
        yield emulator


def model_for(emu: MaritacaEmulator, **kwargs) -> ChatMaritaca:
    kwargs.setdefault("max_retries", 0)
    return ChatMaritaca(base_url=emu.base_url, api_key=emu.api_key, **kwargs)


def expected(emu: MaritacaEmulator, text: str = PROMPT) -> str:
    return emu.expected_text([{"role": "user", "content": text}])


def concat(chunks):
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    return full


# ------------------------------------------------------------------- streaming basics


def test_stream_yields_the_text_as_it_arrives_then_metadata_once(emu):
    chunks = list(model_for(emu).stream(PROMPT))
    text_chunks = [c for c in chunks if c.content]
    assert len(text_chunks) == 12
    assert "".join(c.content for c in chunks) == expected(emu)
    with_meta = [c for c in chunks if c.response_metadata]
    with_usage = [c for c in chunks if c.usage_metadata]
    assert with_meta == with_usage == [chunks[-1]]
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.response_metadata["finish_reason"] == "stop"
    assert last.response_metadata["model_name"].startswith("sabia-4")
    assert last.response_metadata["id"].startswith("chatcmpl-")
    assert last.usage_metadata["output_tokens"] == 12
    assert last.usage_metadata["input_tokens"] > 0
    assert "cache_read" in last.usage_metadata["input_token_details"]
    assert emu.requests[-1].body["stream_options"] == {"include_usage": True}


def test_content_null_in_the_first_delta_is_handled(emu):
    # the emulator alternates "" and null as the first delta's content
    texts = ["".join(c.content for c in model_for(emu).stream(PROMPT)) for _ in range(2)]
    assert texts == [expected(emu)] * 2


async def test_astream_matches_stream(emu):
    model = model_for(emu)
    chunks = [c async for c in model.astream(PROMPT)]
    assert "".join(c.content for c in chunks) == expected(emu)
    assert chunks[-1].usage_metadata["output_tokens"] == 12


def test_concatenated_stream_equals_invoke(emu):
    model = model_for(emu, temperature=0)
    streamed = concat(list(model.stream(PROMPT)))
    invoked = model.invoke(PROMPT)
    assert streamed.content == invoked.content
    # (the second call reports cached input tokens, as the real API does for a repeated prompt)
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert streamed.usage_metadata[key] == invoked.usage_metadata[key]
    for key in ("model_name", "finish_reason", "model_provider"):
        assert streamed.response_metadata[key] == invoked.response_metadata[key]


def test_stream_usage_false_does_not_ask_for_usage(emu):
    chunks = list(model_for(emu, stream_usage=False).stream(PROMPT))
    assert "stream_options" not in emu.requests[-1].body
    assert chunks[-1].usage_metadata is None
    assert chunks[-1].response_metadata["finish_reason"] == "stop"


async def test_batch_abatch_and_astream_events(emu):
    model = model_for(emu)
    assert [m.content for m in model.batch(["a", "b"])] == [expected(emu, "a"),
                                                           expected(emu, "b")]
    assert [m.content for m in await model.abatch(["a"])] == [expected(emu, "a")]
    events = [e async for e in model.astream_events(PROMPT, version="v2")]
    streamed = "".join(e["data"]["chunk"].content for e in events
                       if e["event"] == "on_chat_model_stream")
    assert streamed == expected(emu)
    assert events[-1]["event"] == "on_chat_model_end"


def test_messages_and_parameters_reach_the_wire(emu):
    model = model_for(emu, temperature=0, max_tokens=50, top_p=0.9, presence_penalty=0.1,
                      frequency_penalty=0.2, model_kwargs={"seed": 7})
    model.invoke([SystemMessage("Seja breve."), HumanMessage("Oi")], stop=["FIM"],
                 response_format={"type": "json_object"})
    body = emu.requests[-1].body
    assert body["temperature"] == 0 and isinstance(body["temperature"], (int, float))
    assert body["max_tokens"] == 50 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["presence_penalty"] == 0.1 and body["frequency_penalty"] == 0.2
    assert body["stop"] == ["FIM"]
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"] == [{"role": "system", "content": "Seja breve."},
                                {"role": "user", "content": "Oi"}]
    assert emu.requests[-1].headers["authorization"] == "<redacted>"


def test_n_choices_without_streaming(emu):
    result = model_for(emu, n=2).generate([[HumanMessage(PROMPT)]])
    assert len(result.generations[0]) == 2
    with pytest.raises(errors.BadRequestError, match="n=2"):
        list(model_for(emu, n=2).stream(PROMPT))


def test_max_tokens_gives_finish_reason_length(emu):
    chunks = list(model_for(emu, max_tokens=3).stream(PROMPT))
    assert len([c for c in chunks if c.content]) == 3
    assert chunks[-1].response_metadata["finish_reason"] == "length"


def test_model_override_per_call(emu):
    message = model_for(emu).invoke(PROMPT, model="sabiazinho-4")
    assert emu.requests[-1].body["model"] == "sabiazinho-4"
    assert message.response_metadata["model_name"].startswith("sabiazinho-4")


# -------------------------------------------------------------------- tools & structure


class Clima(BaseModel):
    """Consulta o clima de uma cidade."""

    cidade: str = Field(description="Nome da cidade")
    unidade: str = Field(default="celsius", description="celsius ou fahrenheit")


@pytest.mark.parametrize("choice", ["any", "required", "Clima", True])
def test_bind_tools_streams_tool_call_chunks(emu, choice):
    model = model_for(emu).bind_tools([Clima], tool_choice=choice)
    chunks = list(model.stream("Como está o tempo em Manaus?"))
    assert any(c.tool_call_chunks for c in chunks)
    full = concat(chunks)
    assert isinstance(full, AIMessageChunk)
    assert full.tool_calls[0]["name"] == "Clima"
    Clima.model_validate(full.tool_calls[0]["args"])
    assert full.response_metadata["finish_reason"] == "tool_calls"
    invoked = model.invoke("Como está o tempo em Manaus?")
    assert invoked.tool_calls[0]["name"] == "Clima"


def test_tool_choice_none_and_auto_reach_the_wire(emu):
    for choice in ("none", "auto"):
        model_for(emu).bind_tools([Clima], tool_choice=choice).invoke("oi")
        assert emu.requests[-1].body["tool_choice"] == choice
        assert emu.requests[-1].body["tools"][0]["function"]["name"] == "Clima"


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_with_structured_output(emu, method):
    structured = model_for(emu).with_structured_output(Clima, method=method)
    result = structured.invoke("Clima em Natal?")
    assert isinstance(result, Clima)
    raw = model_for(emu).with_structured_output(Clima, method=method, include_raw=True)
    out = raw.invoke("Clima em Natal?")
    assert isinstance(out["parsed"], Clima) and out["parsing_error"] is None


def test_with_structured_output_json_mode(emu):
    result = model_for(emu).with_structured_output(method="json_mode").invoke("Responda em JSON")
    assert isinstance(result, dict) and result
    assert emu.requests[-1].body["response_format"] == {"type": "json_object"}


# ----------------------------------------------------------------------------- faults


def test_missing_key_fails_before_any_request_naming_both_options(monkeypatch):
    monkeypatch.delenv("MARITACA_API_KEY", raising=False)
    monkeypatch.delenv("MARITACA_BASE_URL", raising=False)
    model = ChatMaritaca()
    with pytest.raises(errors.AuthenticationError) as info:
        model.invoke("oi")
    message = str(info.value)
    assert "export MARITACA_API_KEY=" in message and "maritaca.local.start()" in message
    assert 'pip install "maritaca-chains[local]"' in message and "compiles from source" in message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON' in message and "make" not in message


def test_401_says_what_to_do_and_never_shows_the_key(emu):
    model = ChatMaritaca(base_url=emu.base_url, api_key="sk-wrong-secret-999")
    for call in (model.invoke, lambda p: list(model.stream(p))):
        with pytest.raises(errors.AuthenticationError) as info:
            call(PROMPT)
        assert "HTTP 401" in str(info.value) and "MARITACA_API_KEY" in str(info.value)
        assert "sk-wrong-secret-999" not in str(info.value)
        assert "sk-wrong-secret-999" not in repr(info.value)


def test_429_without_retries_carries_retry_after(emu):
    emu.enqueue(Scenario.rate_limit(retry_after=2.5))
    with pytest.raises(errors.RateLimitError) as info:
        list(model_for(emu).stream(PROMPT))
    assert info.value.retry_after == 2.5 and "Retry after 2.5 s" in str(info.value)


@pytest.mark.parametrize("scenario", [
    Scenario.rate_limit(retry_after=0.05), Scenario.rate_limit(), Scenario.server_error(),
    Scenario.drop(after_chunks=0)])
def test_retryable_failures_before_the_first_chunk_are_retried(emu, scenario):
    emu.enqueue(scenario)
    chunks = list(model_for(emu, max_retries=2).stream(PROMPT))
    assert "".join(c.content for c in chunks) == expected(emu)
    assert len(emu.requests) == 2


def test_retry_after_as_float_seconds_is_honoured(emu):
    emu.enqueue(Scenario.rate_limit(retry_after=0.4))
    start = time.monotonic()
    model_for(emu, max_retries=1).invoke(PROMPT)
    assert time.monotonic() - start >= 0.4
    assert len(emu.requests) == 2


def test_max_retries_zero_disables_retries(emu):
    emu.enqueue(Scenario.server_error())
    with pytest.raises(errors.ServerError, match="HTTP 500"):
        model_for(emu, max_retries=0).invoke(PROMPT)
    assert len(emu.requests) == 1


def test_bad_request_and_context_too_long_are_not_retried(emu):
    emu.enqueue(Scenario.bad_request(detail="temperature inválida"))
    with pytest.raises(errors.BadRequestError, match="temperature inválida"):
        model_for(emu, max_retries=3).invoke(PROMPT)
    emu.enqueue(Scenario.context_too_long())
    with pytest.raises(errors.ContextTooLongError, match="Shorten the prompt"):
        list(model_for(emu, max_retries=3).stream(PROMPT))
    assert len(emu.requests) == 2


def test_drop_mid_stream_is_an_error_after_the_text_and_is_not_retried(emu):
    emu.enqueue(Scenario.drop(after_chunks=5))
    got = []
    with pytest.raises(errors.StreamError) as info:
        for chunk in model_for(emu, max_retries=3).stream(PROMPT):
            got.append(chunk.content)
    assert len(got) == 5 and expected(emu).startswith("".join(got))
    assert info.value.chunks_received == 5
    assert len(emu.requests) == 1  # never retried after a chunk was yielded: no duplicates


def test_error_event_mid_stream_raises_with_the_server_message(emu):
    emu.enqueue(Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"))
    with pytest.raises(errors.StreamError, match="modelo sobrecarregado"):
        list(model_for(emu, max_retries=3).stream(PROMPT))
    assert len(emu.requests) == 1


# One transport serves the four call shapes: each must follow the same rules.
SHAPES = ["invoke", "ainvoke", "stream", "astream"]


async def call_shape(model: ChatMaritaca, shape: str) -> str:
    if shape == "invoke":
        return str(model.invoke(PROMPT).content)
    if shape == "ainvoke":
        return str((await model.ainvoke(PROMPT)).content)
    if shape == "stream":
        return "".join(str(c.content) for c in model.stream(PROMPT))
    return "".join([str(c.content) async for c in model.astream(PROMPT)])


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_call_shape_retries_before_the_first_chunk(emu, shape):
    emu.enqueue(Scenario.rate_limit(retry_after=0.05), Scenario.server_error())
    assert await call_shape(model_for(emu, max_retries=2), shape) == expected(emu)
    assert len(emu.requests) == 3


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_call_shape_gives_up_after_max_retries(emu, shape):
    emu.enqueue(Scenario.server_error(), Scenario.server_error())
    with pytest.raises(errors.ServerError, match="HTTP 500"):
        await call_shape(model_for(emu, max_retries=1), shape)
    assert len(emu.requests) == 2


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_call_shape_raises_network_errors_from_httpx(shape):
    model = ChatMaritaca(base_url=closed_port_url(), api_key="k", max_retries=0)
    with pytest.raises(errors.ConnectionError) as info:
        await call_shape(model, shape)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_astream_drop_mid_stream_is_an_error_and_is_not_retried(emu):
    emu.enqueue(Scenario.drop(after_chunks=5))
    got = []
    with pytest.raises(errors.StreamError) as info:
        async for chunk in model_for(emu, max_retries=3).astream(PROMPT):
            got.append(chunk.content)
    assert len(got) == 5 and info.value.chunks_received == 5
    assert len(emu.requests) == 1


def test_connection_refused_is_a_connection_error_naming_the_url():
    url = closed_port_url()
    model = ChatMaritaca(base_url=url, api_key="k", max_retries=1)
    with pytest.raises(errors.ConnectionError, match="Could not connect to http://127.0.0.1"):
        model.invoke(PROMPT)
    with pytest.raises(errors.ConnectionError):
        list(model.stream(PROMPT))


def test_slow_first_token_times_out_as_timeout_error(emu):
    emu.enqueue(Scenario.slow_first_token(delay=1.0))
    with pytest.raises(errors.TimeoutError, match="timed out"):
        list(model_for(emu, timeout=0.2).stream(PROMPT))


# ---------------------------------------------------------------- early interruption


def _wait_for_disconnect(emu: MaritacaEmulator, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not emu.requests[-1].client_disconnected and time.monotonic() < deadline:
        time.sleep(0.005)


def test_break_out_of_stream_closes_the_upstream_connection():
    with MaritacaEmulator(reply_tokens=200, token_delay=0.01) as emu:
        for i, _chunk in enumerate(model_for(emu).stream(PROMPT)):
            if i == 3:
                break
        _wait_for_disconnect(emu)
        record = emu.requests[-1]
        assert record.client_disconnected
        sent = record.chunks_sent
        time.sleep(0.1)
        assert record.chunks_sent == sent < 20


async def test_aclose_and_cancel_close_the_upstream_connection():
    with MaritacaEmulator(reply_tokens=200, token_delay=0.01) as emu:
        stream = model_for(emu).astream(PROMPT)
        async for _chunk in stream:
            break
        await stream.aclose()
        await asyncio.sleep(0.05)
        assert emu.requests[-1].client_disconnected
        assert emu.requests[-1].chunks_sent < 20

        async def consume():
            async for _chunk in model_for(emu).astream(PROMPT):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert emu.requests[-1].client_disconnected
        assert emu.requests[-1].chunks_sent < 30


# ------------------------------------------------------------------ pooling & safety


def test_clients_are_pooled_across_calls_and_instances(emu):
    from maritaca import _http

    a, b = model_for(emu), model_for(emu)
    a.invoke("1")
    clients_before = dict(_http._sync)
    b.invoke("2")
    list(a.stream("3"))
    model_for(emu, temperature=0.1).invoke("4")
    assert _http._sync == clients_before  # same connection settings: no new client


def _connections(client) -> list:
    return client._transport._pool.connections  # httpx's transport, httpcore's pool


def _shards_of_this_loop() -> list:
    from maritaca import _http

    loop = asyncio.get_running_loop()
    return [per_loop[loop] for per_loop in _http._async.values() if loop in per_loop]


async def test_async_requests_lease_the_least_busy_pool_shard_and_give_it_back(emu):
    """One loop's async requests go to the first shard with the fewest in flight: one at
    a time, always the first (its connection stays warm); many at once, spread over all
    of them (each shard's pool stays small: httpcore walks all its connections per
    request). Every lease is given back, streams read to the end or left early included,
    and ``aclose_clients`` closes every shard."""
    from maritaca import _http, aclose_clients

    model = model_for(emu)
    for i in range(3):
        await model.ainvoke(f"sozinha {i}")
        [chunk async for chunk in model.astream(f"sozinha {i}")]
        await asyncio.sleep(0.05)  # the stream's reader ends just after its last chunk
    (shards,) = _shards_of_this_loop()
    assert len(emu.requests) == 6 and shards.busy == [0] * _http.ASYNC_SHARDS
    assert [len(_connections(client)) for client in shards.clients] == \
        [1] + [0] * (_http.ASYNC_SHARDS - 1)  # one warm connection, reused

    answers = await asyncio.gather(*(model.ainvoke(f"pergunta {i}")
                                     for i in range(_http.ASYNC_SHARDS * 2)))
    assert all(answer.content for answer in answers)
    assert all(_connections(client) for client in shards.clients)  # every shard served
    stream = model.astream("deixada no meio")
    await anext(stream)
    await stream.aclose()  # left early: the reader ends, the lease is given back
    await asyncio.sleep(0.1)
    assert shards.busy == [0] * _http.ASYNC_SHARDS
    assert _shards_of_this_loop() == [shards]  # no new clients
    await aclose_clients()
    assert all(client.is_closed for client in shards.clients)


def test_the_run_start_serialization_is_shared_by_models_with_the_same_fields():
    """A configurable chain makes a model per request: its ``_serialized`` (what
    ``on_chat_model_start`` reports) is computed once per distinct set of fields."""
    from langchain_core.load import dumpd

    from maritaca._langchain_private import _serialized

    a = ChatMaritaca(api_key="sk-a", max_tokens=300)
    b = ChatMaritaca(api_key="sk-b", max_tokens=300)
    c = ChatMaritaca(api_key="sk-a", max_tokens=301)
    assert _serialized(a) is _serialized(b) and _serialized(a) == dumpd(b)
    assert _serialized(c) == dumpd(c) != dumpd(a)
    assert "sk-" not in str(_serialized(a))
    odd = ChatMaritaca(api_key="sk-a", default_headers={"X-Um": "1"}, metadata={"k": [1]})
    assert _serialized(odd) == dumpd(odd)


def test_repr_and_dumps_do_not_leak_the_key():
    from langchain_core.load import dumps

    model = ChatMaritaca(api_key="sk-leak-check-123")
    assert "sk-leak-check-123" not in repr(model)
    assert "sk-leak-check-123" not in str(model)
    assert "sk-leak-check-123" not in dumps(model)


def test_dumps_and_loads_round_trip_without_the_key(monkeypatch):
    from langchain_core.load import dumps, loads

    model = ChatMaritaca(model="sabiazinho-4", temperature=0, api_key="sk-x")
    with pytest.warns(Warning):
        again = loads(dumps(model), valid_namespaces=["maritaca"],
                      allowed_objects=[ChatMaritaca], secrets_map={"MARITACA_API_KEY": "k2"})
    assert isinstance(again, ChatMaritaca)
    assert again.model_name == "sabiazinho-4" and again.temperature == 0
    assert again.api_key.get_secret_value() == "k2"


def test_construction_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MARITACA_API_KEY", "sk-env")
    monkeypatch.setenv("MARITACA_BASE_URL", "http://127.0.0.1:9/api/")
    model = ChatMaritaca()
    assert model.api_key.get_secret_value() == "sk-env"
    assert model.base_url == "http://127.0.0.1:9/api"
    assert model.model_name == "sabia-4"
    assert ChatMaritaca(model="modelo-novo-que-nao-existe").model_name == "modelo-novo-que-nao-existe"


def test_bad_construction_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="temperature must be between 0 and 2"):
        ChatMaritaca(temperature=5)
    with pytest.raises(ValueError, match="base_url must start with http"):
        ChatMaritaca(base_url="chat.maritaca.ai")
