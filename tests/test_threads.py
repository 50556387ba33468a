"""Conversations that remember, on a real server over SQLite: the chat chain's threads.

What the model sees (the thread's turns, trimmed to MARITACA_CHAINS_HISTORY_TOKENS, read
from the emulator's recorded request), the threads API per access key, a second turn at
once refused with 409, and a cut answer stored marked incomplete. The database-level
tests (restart, PostgreSQL replicas, a killed server) are in test_threads_db.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from chains import ChainFileError, load_spec, read_chain_file
from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model
from tests.test_runs import chat_requests, read_events, text_of, wait_status


@contextmanager
def served(tmp_path: Path, reply_tokens: int = 6, token_delay: float = 0.0, **env: object
           ) -> Iterator[tuple[MaritacaEmulator, httpx.Client]]:
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False,  # type: ignore[call-arg]
                              MARITACA_CHAINS_DATABASE_URL=f"sqlite:///{tmp_path}/t.db", **env)
    with MaritacaEmulator(reply_tokens=reply_tokens, token_delay=token_delay) as emu:
        app = create_app(settings, model=emulator_model(emu))
        with RunningServer(app) as server, httpx.Client(base_url=server.url,
                                                        timeout=20) as http:
            yield emu, http


def new_thread(http: httpx.Client, title: str = "", **kwargs: object) -> str:
    response = http.post("/chat/threads", json={"title": title} if title else {},
                         **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/chat/threads/{response.json()['thread_id']}"
    return str(response.json()["thread_id"])


def say(http: httpx.Client, thread_id: str, message: str, **kwargs: object) -> str:
    response = http.post("/chat/invoke", json={
        "input": {"message": message},
        "config": {"configurable": {"thread_id": thread_id}}}, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


def sent_messages(emu: MaritacaEmulator) -> list[tuple[str, str]]:
    body = chat_requests(emu)[-1].body or {}
    return [(m["role"], m["content"]) for m in body["messages"]]


def test_the_threads_turns_go_before_the_new_message(tmp_path):
    with served(tmp_path) as (emu, http):
        thread = new_thread(http, "Apresentações")
        first = say(http, thread, "Meu nome é Ana.")
        second = say(http, thread, "Qual é o meu nome?")
        roles = sent_messages(emu)
        assert roles[0][0] == "system"
        assert roles[1:] == [("user", "Meu nome é Ana."), ("assistant", first),
                             ("user", "Qual é o meu nome?")]
        stored = http.get(f"/chat/threads/{thread}").json()
        assert stored["title"] == "Apresentações" and stored["message_count"] == 4
        assert [(m["role"], m["text"], m["complete"]) for m in stored["messages"]] == [
            ("user", "Meu nome é Ana.", True), ("assistant", first, True),
            ("user", "Qual é o meu nome?", True), ("assistant", second, True)]
        answer = stored["messages"][-1]
        assert answer["outcome"] == "ok" and answer["output_tokens"] == 6
        assert answer["input_tokens"] > 0 and answer["cost_brl"] > 0
        asked = emu.requests[-1].body["model"]  # type: ignore[index]
        assert answer["model"].startswith(asked)  # the model that gave it, as it named itself
        # without a thread: the single message, nothing stored
        assert http.post("/chat/invoke", json={"input": {"message": "Oi"}}).status_code == 200
        assert sent_messages(emu)[1:] == [("user", "Oi")]
        assert http.get(f"/chat/threads/{thread}").json()["message_count"] == 4


def test_older_turns_beyond_the_history_budget_are_left_out_but_kept(tmp_path):
    with served(tmp_path, MARITACA_CHAINS_HISTORY_TOKENS=60) as (emu, http):
        thread = new_thread(http)
        for n in range(6):
            say(http, thread, f"Mensagem número {n}, " + "palavras " * 10)
        sent = sent_messages(emu)
        assert sent[1][0] == "user"  # a trimmed history still starts on a user's turn
        assert 1 < len(sent) - 1 < 12  # some turns, not all eleven before the new one
        assert sent[-1][1].startswith("Mensagem número 5")
        assert "Mensagem número 0" not in json.dumps(sent, ensure_ascii=False)
        assert http.get(f"/chat/threads/{thread}").json()["message_count"] == 12


def test_threads_belong_to_their_key_and_the_login_counts_as_it(tmp_path):
    with served(tmp_path, MARITACA_CHAINS_API_KEYS="k1,k2") as (emu, http):
        k1, k2 = {"X-API-Key": "k1"}, {"X-API-Key": "k2"}
        assert http.post("/chat/threads", json={}).status_code == 401
        mine = new_thread(http, "da chave 1", headers=k1)
        say(http, mine, "Segredo: 42", headers=k1)
        assert http.get(f"/chat/threads/{mine}", headers=k2).status_code == 404
        refused = http.post("/chat/invoke", headers=k2, json={
            "input": {"message": "E o segredo?"},
            "config": {"configurable": {"thread_id": mine}}})
        assert refused.status_code == 404, refused.text
        assert refused.json()["type"] == "thread_not_found"
        assert "não encontrada" in refused.json()["detail"]
        assert http.delete(f"/chat/threads/{mine}", headers=k2).status_code == 404
        assert http.get("/chat/threads", headers=k2).json()["total"] == 0
        # the browser's login for k1 sees and continues it
        assert http.post("/login", data={"key": "k1"}).status_code == 303
        listed = http.get("/chat/threads").json()
        assert [t["thread_id"] for t in listed["threads"]] == [mine]
        say(http, mine, "E agora?")
        assert http.get(f"/chat/threads/{mine}").json()["message_count"] == 4
        http.cookies.clear()


def test_the_list_is_newest_first_and_paginated_and_delete_removes(tmp_path):
    with served(tmp_path) as (_, http):
        ids = [new_thread(http, f"conversa {n}") for n in range(3)]
        say(http, ids[0], "oi")  # now the most recently updated
        page = http.get("/chat/threads", params={"limit": 2}).json()
        assert page["total"] >= 3 and page["limit"] == 2 and page["offset"] == 0
        assert [t["thread_id"] for t in page["threads"]] == [ids[0], ids[2]]
        assert page["threads"][0]["message_count"] == 2
        assert {"title", "created_at", "updated_at"} <= set(page["threads"][0])
        rest = http.get("/chat/threads", params={"limit": 2, "offset": 2}).json()
        assert ids[1] in [t["thread_id"] for t in rest["threads"]]
        bad = http.get("/chat/threads", params={"limit": 0})
        assert bad.status_code == 422 and bad.json()["type"] == "threads_page"
        for offset in (-1, 10**9 + 1, 2**63):  # past the databases' integers too
            bad = http.get("/chat/threads", params={"offset": offset})
            assert bad.status_code == 422 and bad.json()["type"] == "threads_page"
        assert http.get("/chat/threads", params={"offset": 10**9}).json()["threads"] == []
        assert http.post("/chat/threads", json={"title": "x" * 201}).status_code == 422
        assert http.post("/chat/threads", json={"nome": "x"}).status_code == 422
        assert http.delete(f"/chat/threads/{ids[0]}").status_code == 204
        assert http.get(f"/chat/threads/{ids[0]}").status_code == 404


def test_a_second_turn_at_once_is_refused_with_409_naming_the_running_one(tmp_path):
    with served(tmp_path, reply_tokens=200, token_delay=0.01) as (_, http):
        thread = new_thread(http)
        config = {"configurable": {"thread_id": thread}}
        run = http.post("/chat/runs", json={"input": {"message": "Conte até 200."},
                                            "config": config})
        assert run.status_code == 201, run.text
        deadline = time.monotonic() + 10
        while http.get(f"/chat/threads/{thread}").json()["running_run"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        running = http.get(f"/chat/threads/{thread}").json()["running_run"]
        for face in ("/chat/invoke", "/chat/text"):
            refused = http.post(face, json={"input": {"message": "E agora?"},
                                            "config": config})
            assert refused.status_code == 409, refused.text
            assert refused.json()["type"] == "thread_busy"
            assert running in refused.json()["detail"]
        wait_status(http, run.json()["status_url"], "done")
        text = text_of(read_events(http, run.json()["stream_url"]))
        stored = http.get(f"/chat/threads/{thread}").json()
        assert stored["running_run"] is None and stored["message_count"] == 2
        assert stored["messages"][-1]["text"] == text and stored["messages"][-1]["complete"]
        say(http, thread, "E agora?")  # free again


def test_a_hang_up_mid_answer_is_stored_as_an_incomplete_answer(tmp_path):
    with served(tmp_path, reply_tokens=400, token_delay=0.01) as (emu, http):
        thread = new_thread(http)
        received = ""
        with http.stream("POST", "/chat/text", json={
                "input": {"message": "Fale bastante."},
                "config": {"configurable": {"thread_id": thread}}}) as response:
            for chunk in response.iter_text():
                received += chunk
                if len(received) > 40:
                    break
        deadline = time.monotonic() + 10
        while (stored := http.get(f"/chat/threads/{thread}").json())["running_run"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = stored["messages"][-1]
        assert stored["messages"][0]["text"] == "Fale bastante."
        assert answer["complete"] is False and answer["outcome"] == "cancelled"
        assert answer["text"].startswith(received[:40]) and len(answer["text"]) < 4000
        assert chat_requests(emu)[-1].client_disconnected
        # the next turn carries the cut answer as it was said
        say(http, thread, "Continue.")
        assert sent_messages(emu)[2] == ("assistant", answer["text"])


def test_the_websocket_face_takes_the_thread_id(tmp_path):
    websockets = pytest.importorskip("websockets.sync.client")
    with served(tmp_path) as (emu, http):
        thread = new_thread(http)
        say(http, thread, "Primeira.")
        url = str(http.base_url).replace("http://", "ws://") + "/chat/ws"
        with websockets.connect(url) as ws:
            ws.send(json.dumps({"input": {"message": "Segunda."},
                                "config": {"configurable": {"thread_id": thread}}}))
            while "[END]" not in (frame := ws.recv()) and "[ERROR]" not in frame:
                pass
        assert "[END]" in frame
        assert [r for r, _ in sent_messages(emu)] == ["system", "user", "assistant", "user"]
        assert http.get(f"/chat/threads/{thread}").json()["message_count"] == 4


def test_chain_files_say_history_thread_strictly(tmp_path):
    assert load_spec(Path("prompts/chat.yaml")).file.history == "thread"  # type: ignore[union-attr]
    base = Path("prompts/chat.yaml").read_text(encoding="utf-8")
    cases = {
        "history: thread": ("history: sempre", "history"),
        "  - role: user\n    content: \"{message}\"":
            ("  - role: user\n    content: \"{message}\"\n  - role: assistant\n    content: ok",
             "messages.2.role"),
    }
    for old, (new, key) in cases.items():
        path = tmp_path / "broken.yaml"
        path.write_text(base.replace(old, new), encoding="utf-8")
        with pytest.raises(ChainFileError) as error:
            read_chain_file(path)
        assert [p.key for p in error.value.problems] == [key], error.value


def test_the_chain_takes_its_history_beside_the_input_without_a_server(emu):
    chain = load_spec(Path("prompts/chat.yaml")).build(emulator_model(emu))
    chain.invoke({"message": "E eu?", "history": [("user", "Sou Ana."),
                                                 ("assistant", "Olá, Ana!")]})
    assert sent_messages(emu)[1:] == [("user", "Sou Ana."), ("assistant", "Olá, Ana!"),
                                      ("user", "E eu?")]


def test_the_openai_faces_chat_model_takes_the_clients_own_messages(tmp_path):
    with served(tmp_path) as (emu, http):
        done = http.post("/v1/chat/completions", json={"model": "chat", "messages": [
            {"role": "system", "content": "ignorado: a cadeia tem o seu"},
            {"role": "user", "content": "Sou Ana."},
            {"role": "assistant", "content": "Olá, Ana!"},
            {"role": "user", "content": "Quem sou eu?"}]})
        assert done.status_code == 200, done.text
        sent = sent_messages(emu)
        assert sent[0][0] == "system" and "ignorado" not in sent[0][1]
        assert sent[1:] == [("user", "Sou Ana."), ("assistant", "Olá, Ana!"),
                            ("user", "Quem sou eu?")]
        assert http.get("/chat/threads").json()["total"] == 0  # no server thread made


def test_a_thread_id_sent_to_a_chain_without_history_is_refused_not_ignored(tmp_path):
    # (LangServe's own routes refuse it too: tests/test_threads_faces.py)
    with served(tmp_path) as (emu, http):
        for face in ("/story/text",):
            refused = http.post(face, json={"input": {"topic": "Brasil"},
                                            "config": {"configurable": {"thread_id": "x"}}})
            assert refused.status_code == 422, (face, refused.text)
            assert "thread_id" in refused.text  # as /text refuses any configurable key
        assert not chat_requests(emu)  # refused before any model call
