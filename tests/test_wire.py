"""Wire conversion, table-driven: what goes out, what comes back, what each error says."""

from __future__ import annotations

import email.utils
import time

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from maritaca import errors
from maritaca._http import error_from_response, parse_retry_after
from maritaca._sse import SSEDecoder
from maritaca._wire import (
    StreamAssembler,
    completion_to_result,
    message_to_wire,
    tool_choice_to_wire,
    usage_to_metadata,
)

TOOL_CALL = {"name": "clima", "args": {"cidade": "Recife"}, "id": "call_1"}


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (SystemMessage("Seja breve."), {"role": "system", "content": "Seja breve."}),
        (HumanMessage("Olá"), {"role": "user", "content": "Olá"}),
        (HumanMessage("Olá", name="ana"), {"role": "user", "content": "Olá", "name": "ana"}),
        (HumanMessage([{"type": "text", "text": "a"}, "b"]), {"role": "user", "content": "ab"}),
        (AIMessage("Oi!"), {"role": "assistant", "content": "Oi!"}),
        (AIMessage("", tool_calls=[TOOL_CALL]),
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "clima", "arguments": '{"cidade": "Recife"}'}}]}),
        (AIMessage([{"type": "text", "text": "vou ver"},
                    {"type": "tool_use", "id": "call_1", "name": "clima", "input": {}}],
                   tool_calls=[TOOL_CALL]),
         {"role": "assistant", "content": "vou ver", "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "clima", "arguments": '{"cidade": "Recife"}'}}]}),
        (ToolMessage("28 °C", tool_call_id="call_1"),
         {"role": "tool", "content": "28 °C", "tool_call_id": "call_1"}),
        (ToolMessage([{"type": "text", "text": "28 °C"}], tool_call_id="call_1"),
         {"role": "tool", "content": "28 °C", "tool_call_id": "call_1"}),
    ],
)
def test_message_to_wire(message, wire):
    assert message_to_wire(message) == wire


def test_unsupported_content_block_is_refused_with_a_hint():
    with pytest.raises(errors.BadRequestError, match="audio.*Convert that block to text"):
        message_to_wire(HumanMessage([{"type": "audio", "data": "..."}]))


@pytest.mark.parametrize(
    ("choice", "wire"),
    [("auto", "auto"), ("none", "none"), ("required", "required"), ("any", "required"),
     (True, "required"), ("clima", {"type": "function", "function": {"name": "clima"}})],
)
def test_tool_choice_to_wire(choice, wire):
    assert tool_choice_to_wire(choice, ["clima"]) == wire


def test_tool_choice_naming_an_unbound_tool_says_which_exist():
    with pytest.raises(errors.BadRequestError, match="names no bound tool.*clima"):
        tool_choice_to_wire("previsao", ["clima"])


def test_usage_to_metadata_keeps_cached_tokens():
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
             "prompt_tokens_details": {"cached_tokens": 4}}
    assert usage_to_metadata(usage) == {"input_tokens": 10, "output_tokens": 5,
                                        "total_tokens": 15,
                                        "input_token_details": {"cache_read": 4}}


def _event(delta=None, finish=None, usage=None, choices=True):
    return {"id": "chatcmpl-1", "model": "sabia-4-2026-01-06",
            "choices": ([{"index": 0, "delta": delta or {}, "finish_reason": finish}]
                        if choices else []),
            "usage": usage}


def test_stream_assembler_text_then_metadata_once():
    asm = StreamAssembler()
    events = [_event({"role": "assistant", "content": None}), _event({"content": "Olá"}),
              _event({"content": ", mundo"}), _event({}, finish="stop"),
              _event(choices=False, usage={"prompt_tokens": 3, "completion_tokens": 2,
                                           "total_tokens": 5})]
    chunks = [c for e in events if (c := asm.feed(e)) is not None]
    assert [c.message.content for c in chunks] == ["Olá", ", mundo"]
    assert all(not c.message.response_metadata and c.message.usage_metadata is None
               for c in chunks)
    last = asm.last_chunk().message
    assert last.chunk_position == "last"
    assert last.response_metadata["finish_reason"] == "stop"
    assert last.response_metadata["model_name"] == "sabia-4-2026-01-06"
    assert last.response_metadata["model"] == "sabia-4-2026-01-06"  # the guide's tip 2 key
    assert last.response_metadata["id"] == "chatcmpl-1"
    assert last.usage_metadata["total_tokens"] == 5


def test_stream_assembler_tool_call_chunks_merge_into_a_tool_call():
    asm = StreamAssembler()
    events = [
        _event({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_9", "type": "function",
             "function": {"name": "clima", "arguments": ""}}]}),
        _event({"tool_calls": [{"index": 0, "function": {"arguments": '{"cidade": '}}]}),
        _event({"tool_calls": [{"index": 0, "function": {"arguments": '"Belém"}'}}]}),
        _event({}, finish="tool_calls"),
    ]
    chunks = [c.message for e in events if (c := asm.feed(e)) is not None]
    full = chunks[0]
    for c in [*chunks[1:], asm.last_chunk().message]:
        full = full + c
    assert isinstance(full, AIMessageChunk)
    assert full.tool_calls == [{"name": "clima", "args": {"cidade": "Belém"}, "id": "call_9",
                                "type": "tool_call"}]
    assert full.response_metadata["finish_reason"] == "tool_calls"


def test_stream_assembler_error_event_raises_with_server_text():
    asm = StreamAssembler()
    asm.feed(_event({"content": "parcial"}))
    with pytest.raises(errors.StreamError, match="mid-stream.*sobrecarga") as info:
        asm.feed({"error": {"message": "sobrecarga", "type": "server_error"}})
    assert info.value.chunks_received == 1


def test_completion_to_result_matches_fields():
    body = {"id": "chatcmpl-2", "model": "sabiazinho-4", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": "{\"x\": 1}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{x"}}]},
         "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    message = completion_to_result(body).generations[0].message
    assert message.content == ""
    assert message.tool_calls[0]["args"] == {"x": 1}
    assert message.invalid_tool_calls[0]["name"] == "g"
    assert message.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("feeds", "payloads"),
    [
        ([b"data: a\n\n"], [b"a"]),
        ([b"data:a\n\n"], [b"a"]),
        ([b"data: a\r\n\r\ndata: b\r\n\r\n"], [b"a", b"b"]),
        ([b"data: a\r", b"\n\r\n"], [b"a"]),
        ([b"data: a\r\r"], [b"a"]),
        ([b": keep-alive\n\ndata: x\n\n"], [b"x"]),
        ([b"event: error\ndata: {}\n\n"], [b"{}"]),
        ([b"data: 1\ndata: 2\n\n"], [b"1\n2"]),
        ([b"da", b"ta: {\"k\"", b": 1}\n", b"\n"], [b'{"k": 1}']),
        ([b"data: [DONE]"], [b"[DONE]"]),  # no blank line at the end: flush() keeps it
    ],
)
def test_sse_decoder(feeds, payloads):
    decoder = SSEDecoder()
    out = [p for f in feeds for p in decoder.feed(f)] + decoder.flush()
    assert out == payloads


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "words"),
    [
        (401, b'{"detail": "Invalid API key"}', {}, errors.AuthenticationError,
         ["HTTP 401", "Invalid API key", "MARITACA_API_KEY"]),
        (403, b'{"detail": "no"}', {}, errors.PermissionDeniedError, ["HTTP 403"]),
        (400, b'{"detail": "temperature must be <= 2"}', {}, errors.BadRequestError,
         ["HTTP 400", "temperature must be"]),
        (422, b'{"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}', {},
         errors.BadRequestError, ["HTTP 422", "messages", "field required"]),
        (400, b'{"detail": "prompt exceeds the model context length"}', {},
         errors.ContextTooLongError, ["too long", "Shorten the prompt"]),
        (429, b'{"detail": "Too many requests"}', {"retry-after": "1.5"},
         errors.RateLimitError, ["HTTP 429", "Retry after 1.5 s"]),
        (500, b'{"message": "boom"}', {}, errors.ServerError, ["HTTP 500", "boom"]),
        (503, b"upstream down", {}, errors.ServerError, ["HTTP 503", "upstream down"]),
    ],
)
def test_error_from_response(status, body, headers, kind, words):
    error = error_from_response(status, headers, body, model="sabia-4")
    assert type(error) is kind
    for word in words:
        assert word in str(error)


def test_rate_limit_error_keeps_retry_after():
    error = error_from_response(429, {"retry-after": "2"}, b"{}", model="sabia-4")
    assert isinstance(error, errors.RateLimitError) and error.retry_after == 2.0


def test_parse_retry_after_number_float_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "Infinity"])
def test_a_retry_after_that_is_no_finite_number_is_ignored(value):
    assert parse_retry_after(value) is None


@pytest.fixture
def brasilia_clock(monkeypatch):
    """The process's local time is Brasília's (UTC-3), as on a server in Brazil."""
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_http_dates_without_a_zone_are_utc_whatever_the_local_time(brasilia_clock):
    # the asctime form, which HTTP recipients must accept, and "-0000" carry no zone
    later = time.gmtime(time.time() + 30)
    for value in (time.strftime("%a %b %d %H:%M:%S %Y", later),
                  time.strftime("%a, %d %b %Y %H:%M:%S -0000", later)):
        assert 25 <= parse_retry_after(value) <= 31, value
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 -0000") > 10**9


def test_errors_are_langchain_model_errors():
    from langchain_core import exceptions as lc

    assert issubclass(errors.RateLimitError, lc.ModelRateLimitError)
    assert issubclass(errors.ContextTooLongError, lc.ContextOverflowError)
    assert issubclass(errors.AuthenticationError, lc.ModelAuthenticationError)
    assert issubclass(errors.TimeoutError, lc.ModelTimeoutError)
