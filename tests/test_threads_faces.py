"""Threads on the other faces: the AI SDK face (/chat/ai-sdk) and resumable runs
(/chat/runs) carry config.configurable.thread_id into the conversation (the history
reaches the model: read from the emulator's recorded request), another key's thread is
404 before any run starts; and a chain without history refuses a thread_id on LangServe's own routes
(/invoke, /stream, /stream_events, /batch) with a 422 instead of dropping it."""

from __future__ import annotations

import pytest

from tests.test_ai_sdk_face import chat_body, parts_of
from tests.test_ai_sdk_face import text_of as sdk_text
from tests.test_runs import read_events, text_of, wait_status
from tests.test_threads import chat_requests, new_thread, sent_messages, served

pytestmark = pytest.mark.timeout(120)

KEYS = {"MARITACA_CHAINS_API_KEYS": "k1,k2"}
K1, K2 = {"X-API-Key": "k1"}, {"X-API-Key": "k2"}


def sdk_turn(http, thread: str, text: str, headers=K1, chat_id: str = "c1") -> list:
    response = http.post("/chat/ai-sdk", headers=headers, json=chat_body(
        text, chat_id=chat_id, config={"configurable": {"thread_id": thread}}))
    return [response.status_code, parts_of(response.text) if response.status_code == 200
            else response.json()]


def test_the_ai_sdk_face_continues_a_thread_and_another_key_is_refused(tmp_path):
    with served(tmp_path, **KEYS) as (emu, http):
        thread = new_thread(http, headers=K1)
        status, parts = sdk_turn(http, thread, "Meu nome é Ana.")
        assert status == 200, parts
        first = sdk_text(parts)
        status, parts = sdk_turn(http, thread, "Qual é o meu nome?")
        assert status == 200, parts
        assert sent_messages(emu)[1:] == [("user", "Meu nome é Ana."), ("assistant", first),
                                          ("user", "Qual é o meu nome?")]
        stored = http.get(f"/chat/threads/{thread}", headers=K1).json()
        assert stored["message_count"] == 4
        assert stored["messages"][-1]["text"] == sdk_text(parts)
        asked = len(chat_requests(emu))
        status, refused = sdk_turn(http, thread, "E o segredo?", headers=K2, chat_id="c2")
        assert status == 404 and refused["type"] == "thread_not_found", refused
        assert "não encontrada" in refused["detail"]
        assert len(chat_requests(emu)) == asked
        assert http.get(f"/chat/threads/{thread}", headers=K1).json()["message_count"] == 4


def test_resumable_runs_continue_a_thread_and_another_key_is_refused(tmp_path):
    with served(tmp_path, **KEYS) as (emu, http):
        thread = new_thread(http, headers=K1)
        config = {"configurable": {"thread_id": thread}}
        texts = []
        for message in ("Meu nome é Ana.", "Qual é o meu nome?"):
            run = http.post("/chat/runs", headers=K1,
                            json={"input": {"message": message}, "config": config})
            assert run.status_code == 201, run.text
            wait_status(http, run.json()["status_url"], "done", headers=K1)
            texts.append(text_of(read_events(http, run.json()["stream_url"], headers=K1)))
        assert sent_messages(emu)[1:] == [("user", "Meu nome é Ana."), ("assistant", texts[0]),
                                          ("user", "Qual é o meu nome?")]
        asked = len(chat_requests(emu))
        run = http.post("/chat/runs", headers=K2,
                        json={"input": {"message": "E o segredo?"}, "config": config})
        assert run.status_code == 404 and run.json()["type"] == "thread_not_found", run.text
        assert http.post("/chat/runs", headers=K1, json={  # an unknown one: the same
            "input": {"message": "Oi"}, "config": {"configurable": {"thread_id": "x"}}}
        ).status_code == 404
        assert len(chat_requests(emu)) == asked
        stored = http.get(f"/chat/threads/{thread}", headers=K1).json()
        assert [m["text"] for m in stored["messages"]] == [
            "Meu nome é Ana.", texts[0], "Qual é o meu nome?", texts[1]]


@pytest.mark.parametrize("route", ["invoke", "stream", "stream_events", "batch", "stream_log"])
def test_a_chain_without_history_refuses_a_thread_id_on_langservers_routes(tmp_path, route):
    with served(tmp_path) as (emu, http):
        thread = new_thread(http)
        config = {"configurable": {"thread_id": thread}}
        body = ({"inputs": [{"topic": "Brasil"}], "config": config} if route == "batch"
                else {"input": {"topic": "Brasil"}, "config": config})
        refused = http.post(f"/story/{route}", json=body)
        assert refused.status_code == 422, refused.text
        assert "thread_id" in refused.text and "history: thread" in refused.text
        assert not chat_requests(emu)  # refused before any model call
        # the chat chain takes it on the same routes
        said = http.post("/chat/invoke", json={"input": {"message": "Oi"}, "config": config})
        assert said.status_code == 200, said.text
        assert http.get(f"/chat/threads/{thread}").json()["message_count"] == 2


def test_a_chain_without_history_refuses_a_thread_id_on_runs_and_the_ai_sdk_face(tmp_path):
    with served(tmp_path) as (emu, http):
        config = {"configurable": {"thread_id": new_thread(http)}}
        run = http.post("/story/runs", json={"input": {"topic": "Brasil"}, "config": config})
        assert run.status_code == 422 and "history: thread" in run.text, run.text
        sdk = http.post("/story/ai-sdk", json=chat_body("Brasil", config=config))
        assert sdk.status_code == 422 and "history: thread" in sdk.text, sdk.text
        assert not chat_requests(emu)  # refused before any run started


async def test_a_message_after_stop_continues_the_thread_instead_of_409(tmp_path):
    """useChat's stop() hangs up, and the answer goes on for a resume; the next message
    in that chat supersedes it: the old answer is cancelled and the new turn answered,
    never refused as the thread's running turn."""
    import asyncio

    from tests.test_ai_sdk_face import read_some_then_drop

    with served(tmp_path, reply_tokens=400, token_delay=0.02, **KEYS) as (emu, http):
        thread = new_thread(http, headers=K1)
        config = {"configurable": {"thread_id": thread}}
        url = str(http.base_url.join("/chat/ai-sdk"))
        cut = await read_some_then_drop(url, chat_body("Conte uma longa história.",
                                                       config=config), "k1", 2)
        first = chat_requests(emu)[-1]
        status, parts = await asyncio.to_thread(sdk_turn, http, thread, "Mais curta, por favor.",
                                                chat_id="chat-1")  # the same chat
        assert status == 200, parts
        assert not [p for p in parts if isinstance(p, dict) and p.get("type") == "error"], parts
        assert first.client_disconnected  # the superseded answer's upstream was closed
        stored = http.get(f"/chat/threads/{thread}", headers=K1).json()
        assert [(m["role"], m["complete"]) for m in stored["messages"]] == [
            ("user", True), ("assistant", False), ("user", True), ("assistant", True)]
        assert stored["messages"][1]["text"].startswith(cut)
        assert stored["messages"][-1]["text"] == sdk_text(parts)
