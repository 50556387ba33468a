"""Every pattern of langchain-maritaca's streaming guide (sync/async, messages, full
response, FastAPI, WebSocket, Gradio, astream_events, LCEL, final metadata, early stop), run as written
against ChatMaritaca over the emulator. Only the import changes, to ``from maritaca import
ChatMaritaca``; ``ChatMaritaca()`` finds the emulator through MARITACA_API_KEY and
MARITACA_BASE_URL, as a user's would find Maritaca's API. (The guide's imports are at the
top: FastAPI resolves the endpoints' annotations in module globals.)"""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from websockets.asyncio.client import connect

from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator, Scenario
from tests.conftest import RunningServer, wait_disconnected

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _guide_env(emu: MaritacaEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARITACA_API_KEY", emu.api_key or "")
    monkeypatch.setenv("MARITACA_BASE_URL", emu.base_url)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def answer_to(emu: MaritacaEmulator, text: str) -> str:
    return emu.expected_text(user(text))


# ------------------------------------------------------------------------ Basic Streaming


def test_synchronous(emu, capsys):
    model = ChatMaritaca()

    for chunk in model.stream("Tell me a story about Brazil."):
        print(chunk.content, end="", flush=True)

    assert capsys.readouterr().out == answer_to(emu, "Tell me a story about Brazil.")
    assert emu.requests[-1].body["stream"] is True


def test_asynchronous(emu, capsys):
    async def main():
        model = ChatMaritaca()
        async for chunk in model.astream("Tell me a story."):
            print(chunk.content, end="", flush=True)

    asyncio.run(main())

    assert capsys.readouterr().out == answer_to(emu, "Tell me a story.")


def test_text_arrives_while_the_model_is_still_writing(emu):
    """Why streaming: users see the answer as it is generated."""
    emu.enqueue(Scenario.token_delay(0.05))
    model = ChatMaritaca()
    seen_before_the_end = []
    for _chunk in model.stream("Tell me a story."):
        seen_before_the_end.append(emu.requests[-1].finished_at is None)
    assert seen_before_the_end[0] and sum(seen_before_the_end) > 5


# --------------------------------------------------------------- Streaming with Messages


def test_streaming_with_messages(emu, capsys):
    model = ChatMaritaca()

    messages = [
        SystemMessage(content="You are a storyteller."),
        HumanMessage(content="Tell a short story."),
    ]

    for chunk in model.stream(messages):
        print(chunk.content, end="", flush=True)

    sent = [{"role": "system", "content": "You are a storyteller."},
            {"role": "user", "content": "Tell a short story."}]
    assert emu.requests[-1].body["messages"] == sent
    assert capsys.readouterr().out == emu.expected_text(sent)


# -------------------------------------------------------------- Capturing Complete Response


def test_capturing_complete_response(emu, capsys):
    model = ChatMaritaca()

    complete_response = ""
    for chunk in model.stream("Tell a story."):
        complete_response += chunk.content
        print(chunk.content, end="", flush=True)

    print(f"\n\nComplete: {complete_response}")

    expected = answer_to(emu, "Tell a story.")
    assert complete_response == expected
    assert capsys.readouterr().out == f"{expected}\n\nComplete: {expected}\n"


def test_added_chunks_are_the_invoke_message():
    model = ChatMaritaca()
    chunks = list(model.stream("Tell a story."))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    invoked = model.invoke("Tell a story.")
    assert whole.content == invoked.content
    for key in ("model_name", "finish_reason"):
        assert whole.response_metadata[key] == invoked.response_metadata[key]
    assert whole.usage_metadata is not None and invoked.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] == invoked.usage_metadata["output_tokens"]


# --------------------------------------------------------------------- Streaming with FastAPI


async def test_streaming_with_fastapi(emu):
    app = FastAPI()
    model = ChatMaritaca()

    @app.get("/stream")
    async def stream_response(question: str):
        async def generate():
            async for chunk in model.astream(question):
                if chunk.content:
                    yield chunk.content

        return StreamingResponse(
            generate(),
            media_type="text/plain"
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://guide") as http:
        response = await http.get("/stream", params={"question": "Qual é a capital do Brasil?"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == answer_to(emu, "Qual é a capital do Brasil?")


# ------------------------------------------------------------------ Streaming with WebSocket


async def test_streaming_with_websocket(emu):
    app = FastAPI()
    model = ChatMaritaca()

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket):
        await websocket.accept()

        while True:
            message = await websocket.receive_text()

            async for chunk in model.astream(message):
                if chunk.content:
                    await websocket.send_text(chunk.content)

            await websocket.send_text("[END]")

    with RunningServer(app) as server:
        async with connect(server.url.replace("http://", "ws://") + "/ws") as ws:
            for question in ("Conte uma história.", "E outra?"):
                await ws.send(question)
                frames: list[str | bytes] = []
                async with asyncio.timeout(15):
                    while (frame := await ws.recv()) != "[END]":
                        frames.append(frame)
                assert len(frames) > 3
                assert "".join(map(str, frames)) == answer_to(emu, question)


# --------------------------------------------------------------------- Streaming with Gradio


def test_streaming_with_gradio(emu, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    model = ChatMaritaca()

    def respond(message, history):
        response = ""
        for chunk in model.stream(message):
            response += chunk.content
            yield response

    demo = gr.ChatInterface(respond)
    # demo.launch() is left out: it would serve on all interfaces

    assert demo.fn is respond
    growing = list(respond("Olá!", []))
    assert len(growing) > 3
    assert all(later.startswith(earlier) for earlier, later in pairwise(growing))
    assert growing[-1] == answer_to(emu, "Olá!")


# -------------------------------------------------------------------------- Streaming Events


async def test_streaming_events(emu, capsys):
    model = ChatMaritaca()

    async for event in model.astream_events("Hello!", version="v2"):
        if event["event"] == "on_chat_model_stream":
            chunk = event["data"]["chunk"]
            print(chunk.content, end="")

    assert capsys.readouterr().out == answer_to(emu, "Hello!")


# ------------------------------------------------------------------- Streaming in LCEL Chains


def test_streaming_in_lcel_chains(emu, capsys):
    model = ChatMaritaca()
    prompt = ChatPromptTemplate.from_template("Tell about: {topic}")
    parser = StrOutputParser()

    chain = prompt | model | parser

    for chunk in chain.stream({"topic": "Brazil"}):
        print(chunk, end="", flush=True)

    assert capsys.readouterr().out == answer_to(emu, "Tell about: Brazil")


# ------------------------------------------------------------------------------------ Tips


def test_tip_chunk_metadata(emu, capsys):
    model = ChatMaritaca()

    for chunk in model.stream("Hello"):
        if chunk.content:  # Some chunks may be empty
            print(chunk.content, end="")

        # Final chunk has metadata
        if chunk.response_metadata:
            print(f"\nModel: {chunk.response_metadata.get('model')}")

    assert capsys.readouterr().out == f"{answer_to(emu, 'Hello')}\nModel: sabia-4-2026-01-06\n"


def test_final_chunk_metadata_and_usage(emu):
    chunks = list(ChatMaritaca().stream("Hello"))
    last = chunks[-1]
    assert last.content == "" and all(c.content for c in chunks[:-1])
    assert last.response_metadata["model_name"] == "sabia-4-2026-01-06"
    assert last.response_metadata["finish_reason"] == "stop"
    usage = last.usage_metadata
    assert usage is not None and usage["output_tokens"] == 12
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert not any(c.response_metadata or c.usage_metadata for c in chunks[:-1])


async def test_tip_async_generators(emu):
    model = ChatMaritaca()

    async def stream_response(question: str):
        async for chunk in model.astream(question):
            yield chunk.content

    pieces = [piece async for piece in stream_response("Qual é a capital do Brasil?")]
    assert len(pieces) > 3
    assert "".join(pieces) == answer_to(emu, "Qual é a capital do Brasil?")


# ----------------------------------------------------------------------- Early interruption


def test_early_interruption_sync_break_closes_the_upstream(emu):
    emu.enqueue(Scenario.token_delay(0.05))
    model = ChatMaritaca()
    for chunk in model.stream("Tell me a story."):
        if chunk.content:
            break
    closed_at = time.monotonic()
    record = emu.requests[-1]
    wait_disconnected(record, closed_at)
    assert record.chunks_sent < 12


async def test_early_interruption_async_break_closes_the_upstream(emu):
    emu.enqueue(Scenario.token_delay(0.05))
    model = ChatMaritaca()
    async for chunk in model.astream("Tell me a story."):
        if chunk.content:
            break
    closed_at = time.monotonic()
    record = emu.requests[-1]
    await asyncio.to_thread(wait_disconnected, record, closed_at)
    assert record.chunks_sent < 12
