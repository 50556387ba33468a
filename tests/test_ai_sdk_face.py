"""The Vercel AI SDK face (/<chain>/ai-sdk) on the wire: the UI message stream's parts,
errors, progress, and resuming after a dropped connection (the runs' grace period).
The ``ai`` npm package itself drives it in tests/test_js_clients.py and in Chromium in
tests/test_browser_ai_sdk.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest

from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model, wait_disconnected
from tests.test_metrics import run_lines

pytestmark = pytest.mark.timeout(90)

KEY, OTHER = "chave-de-teste-0001", "chave-de-teste-0002"


def chat_body(text: str = "Brasil", chat_id: str = "chat-1", **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "trigger": "submit-message", "messageId": None,
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
            **extra}


def parts_of(body: str) -> list[Any]:
    """Every SSE data payload ([DONE] as the string)."""
    out: list[Any] = []
    for block in body.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def text_of(parts: list[Any]) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


async def test_the_ui_message_stream_in_order(client, emu):
    response = await client.post("/story/ai-sdk", json=chat_body(
        "um sabiá", input={"length": "curta"}, config={"configurable": {"temperature": 0}}))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = parts_of(response.text)
    kinds = [p if isinstance(p, str) else p["type"] for p in parts]
    deltas = kinds.count("text-delta")
    assert kinds == ["start", "text-start", *["text-delta"] * deltas, "text-end", "data-usage",
                     "finish", "[DONE]"]
    sent = emu.requests[-1]
    assert sent.body is not None and sent.body["temperature"] == 0
    assert "um sabiá" in sent.body["messages"][-1]["content"]
    assert deltas == sent.chunks_sent  # one text-delta per chain chunk
    assert text_of(parts) == emu.expected_text(sent.body["messages"])
    usage = parts[-3]["data"]
    assert usage["output_tokens"] == sent.chunks_sent and usage["cost_brl"] > 0


async def test_cut_answer_says_so_in_a_data_part(client, emu):
    response = await client.post("/story/ai-sdk", json=chat_body(
        config={"configurable": {"max_tokens": 5}}))
    parts = parts_of(response.text)
    truncated = [p for p in parts if isinstance(p, dict) and p["type"] == "data-truncated"]
    assert truncated and truncated[0]["data"]["max_tokens"] == 5
    assert "max_tokens=5" in truncated[0]["data"]["message"]


@pytest.mark.parametrize(("body", "loc"), [
    (chat_body(input={"length": "enorme"}), ["body", "input", "length"]),
    (chat_body("x" * 501), ["body", "input", "topic"]),
    (chat_body(input={"topic": "outro"}), ["body", "input", "topic"]),
    ({**chat_body(), "id": ""}, ["body", "id"]),
    ({**chat_body(), "messages": [{"role": "assistant", "parts": []}]}, ["body", "messages"]),
    ({**chat_body(), "messages": [{"role": "user", "parts": [
        {"type": "file", "url": "data:,x", "mediaType": "text/plain"}]}]},
     ["body", "messages", 0, "parts", 0]),
])
async def test_bad_input_is_a_422_naming_the_field(client, emu, body, loc):
    response = await client.post("/story/ai-sdk", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert emu.requests == []


@pytest.mark.parametrize("scenario", [
    Scenario.server_error(),
    Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"),
])
async def test_upstream_failure_is_an_error_part_naming_the_cause(client, emu, scenario):
    emu.enqueue(scenario)
    response = await client.post("/story/ai-sdk", json=chat_body())
    parts = parts_of(response.text)
    errors = [p for p in parts if isinstance(p, dict) and p["type"] == "error"]
    assert len(errors) == 1 and parts[-1] == "[DONE]"
    text = errors[0]["errorText"]
    assert ("upstream_error" if scenario.name == "server_error" else
            "modelo sobrecarregado") in text and "test-key" not in text
    kinds = [p["type"] for p in parts if isinstance(p, dict)]
    if "text-start" in kinds:  # the text is closed before the error
        assert kinds.index("text-end") < kinds.index("error")


async def test_map_reduce_progress_arrives_as_data_parts_before_the_text():
    with MaritacaEmulator(reply_tokens=8) as emu:
        # a model outside the catalogue: an 8K context, so a 30,000-character text splits
        app = create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                         model=emulator_model(emu, model="modelo-pequeno"))
        text = "\n\n".join(f"Parágrafo {i}: " + "o sabiá canta na palmeira. " * 40
                           for i in range(30))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     timeout=60) as http:
            response = await http.post("/summarize/ai-sdk", json=chat_body(text))
    parts = [p for p in parts_of(response.text) if isinstance(p, dict)]
    kinds = [p["type"] for p in parts]
    progress = [p for p in parts if p["type"] == "data-summarize_progress"]
    total = len(emu.requests) - 1
    assert total >= 2 and progress[-1]["data"] == {"round": 1, "done": total, "total": total}
    assert all(p["id"] == "summarize_progress" for p in progress)  # one part, updated
    assert kinds.index("data-summarize_progress") < kinds.index("text-start")
    assert text_of(parts) == emu.expected_text(emu.requests[-1].body["messages"])  # type: ignore[index]
    assert parts[kinds.index("data-usage")]["data"]["calls"] == total + 1


def keyed_app(emu: MaritacaEmulator, grace: float = 30.0):
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_API_KEYS=f"{KEY},{OTHER}",  # type: ignore[call-arg]
                              MARITACA_CHAINS_RUN_GRACE_SECONDS=grace)
    return create_app(settings, model=emulator_model(emu))


def disconnected_within(record: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not record.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(record.client_disconnected)


async def read_some_then_drop(url: str, body: dict[str, Any], key: str, deltas: int) -> str:
    """POST, read ``deltas`` text deltas, hang up; the text read."""
    seen: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", url, json=body,
                               headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith('data: {"type":"text-delta"'):
                    seen.append(json.loads(line[6:])["delta"])
                    if len(seen) == deltas:
                        break
    return "".join(seen)


async def test_a_dropped_answer_goes_on_and_is_replayed_once_then_204(caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    with MaritacaEmulator(reply_tokens=60, token_delay=0.02) as emu, \
            RunningServer(keyed_app(emu)) as server:
        before = await read_some_then_drop(f"{server.url}/story/ai-sdk", chat_body(), KEY, 3)
        record = emu.requests[-1]
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            # another key does not see this chat
            other = await http.get("/story/ai-sdk/chat-1/stream",
                                   headers={"Authorization": f"Bearer {OTHER}"})
            assert other.status_code == 204
            assert (await http.get("/story/ai-sdk/chat-1/stream")).status_code == 401
            resumed = await http.get("/story/ai-sdk/chat-1/stream",
                                     headers={"Authorization": f"Bearer {KEY}"})
            assert resumed.status_code == 200
            assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
            parts = parts_of(resumed.text)
            assert parts[0]["type"] == "start" and parts[-1] == "[DONE]"
            text = text_of(parts)
            assert text.startswith(before) and text == emu.expected_text(record.body["messages"])  # type: ignore[index]
            assert not record.client_disconnected  # the upstream went on, asked once
            assert len(emu.requests) == 1
            # read to its end: nothing more to resume
            again = await http.get("/story/ai-sdk/chat-1/stream",
                                   headers={"Authorization": f"Bearer {KEY}"})
            assert again.status_code == 204
    assert [(line["chain"], line["outcome"]) for line in run_lines(caplog)] == [("story", "ok")]


async def test_an_answer_too_long_to_replay_says_so_in_the_callers_language():
    """A run keeps only its latest events (MARITACA_CHAINS_RUN_MAX_EVENTS): resuming an
    answer whose start is gone ends in an error part saying what to do."""
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_API_KEYS=f"{KEY},{OTHER}",  # type: ignore[call-arg]
                              MARITACA_CHAINS_RUN_MAX_EVENTS=20)
    with MaritacaEmulator(reply_tokens=200, token_delay=0.002) as emu, \
            RunningServer(create_app(settings, model=emulator_model(emu))) as server:
        for chat in ("chat-pt", "chat-en"):
            await read_some_then_drop(f"{server.url}/story/ai-sdk", chat_body(chat_id=chat),
                                      KEY, 1)
        await asyncio.sleep(1.5)  # both answers (200 tokens 2 ms apart) went on to their end
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            for chat, lang, said in (
                    ("chat-pt", "pt-BR", "Esta resposta é longa demais para ser reenviada "
                                         "desde o início"),
                    ("chat-en", "en", "This answer is too long to replay from its start")):
                resumed = await http.get(f"/story/ai-sdk/{chat}/stream", headers={
                    "Authorization": f"Bearer {KEY}", "Accept-Language": lang})
                parts = parts_of(resumed.text)
                assert parts[-2]["type"] == "error" and parts[-1] == "[DONE]", parts[-3:]
                assert parts[-2]["errorText"].startswith(said)


async def test_nobody_back_within_the_grace_period_cancels_the_answer():
    with MaritacaEmulator(reply_tokens=400, token_delay=0.02) as emu, \
            RunningServer(keyed_app(emu, grace=0.5)) as server:
        await read_some_then_drop(f"{server.url}/story/ai-sdk", chat_body(), KEY, 2)
        record = emu.requests[-1]
        assert await asyncio.to_thread(disconnected_within, record, 5), \
            "the run outlived its grace period"
        assert record.chunks_sent < 400
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            late = await http.get("/story/ai-sdk/chat-1/stream",
                                  headers={"Authorization": f"Bearer {KEY}"})
        parts = parts_of(late.text)  # what there was, and why it stopped
        assert parts[-2] == {"type": "error",
                             "errorText": "A resposta foi cancelada (ninguém a leu por 0.5 s)."}


async def test_a_new_message_cancels_the_answer_still_running():
    with MaritacaEmulator(reply_tokens=400, token_delay=0.02) as emu, \
            RunningServer(keyed_app(emu)) as server:
        await read_some_then_drop(f"{server.url}/story/ai-sdk", chat_body(), KEY, 2)
        first = emu.requests[-1]
        emu.enqueue(Scenario.ok(reply_tokens=5))
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            second = await http.post("/story/ai-sdk", json=chat_body("Portugal"),
                                     headers={"Authorization": f"Bearer {KEY}"})
        assert "Portugal" in emu.requests[-1].body["messages"][-1]["content"]  # type: ignore[index]
        assert text_of(parts_of(second.text)) == emu.expected_text(
            emu.requests[-1].body["messages"], 5)  # type: ignore[index]
        await asyncio.to_thread(wait_disconnected, first, time.monotonic())


@pytest.mark.parametrize(("lang", "said"), [
    ("pt", "A resposta foi cancelada (uma nova mensagem da conversa tomou o lugar dela)."),
    ("en", "The answer was cancelled: superseded by a new message in the chat.")])
def test_a_cancelled_answer_says_why_in_the_language_of_its_request(lang, said):
    """The error part a cut answer ends with, as its reader (a useChat page) shows it."""
    from maritaca_chains.faces.ai_sdk import SUPERSEDED
    from maritaca_chains.faces.ai_sdk_wire import AiSdkWire
    from maritaca_chains.runs.wire import SHUTTING_DOWN

    wire = AiSdkWire(None, lang)  # type: ignore[arg-type] - the ledger is not read here
    parts = parts_of(wire.cancelled(7, SUPERSEDED).decode())
    assert parts == [{"type": "error", "errorText": said}, "[DONE]"]
    restarted = parts_of(wire.cancelled(8, SHUTTING_DOWN).decode())[0]["errorText"]
    assert restarted.startswith("O servidor parou antes de a resposta terminar" if lang == "pt"
                                else "The server shut down before the answer ended")
