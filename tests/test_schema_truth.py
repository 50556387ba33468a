"""The OpenAPI schema tells the truth: what it documents is what the server answers.

(schemathesis' full check set runs over every operation in tests/test_fuzz.py; these
pin the fixes it needed, one by one.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import emulator_model

KEY = "schema-key-0001"


@pytest.fixture(scope="module")
def emu() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=4) as emulator:
        yield emulator


def client(emu: MaritacaEmulator, **env: Any) -> httpx.AsyncClient:
    app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False, **env),  # type: ignore[call-arg]
                     model=emulator_model(emu))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://127.0.0.1:8000", timeout=20)


async def test_every_answer_the_server_gives_is_documented(emu):
    async with client(emu, MARITACA_CHAINS_API_KEYS=KEY) as http:
        schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    stream = paths["/story/stream"]["post"]["responses"]
    assert "text/event-stream" in stream["200"]["content"]
    assert {"400", "401", "403", "413", "415", "422", "429", "502", "503", "504"} <= set(stream)
    assert "text/plain" in paths["/story/text"]["post"]["responses"]["200"]["content"]
    runs = paths["/story/runs"]["post"]
    components = schema["components"]["schemas"]
    # /stream's body, closed: a run refuses other fields (and config other than configurable)
    run_body = components["storyRunRequest"]
    stream_body = components["storyStreamRequest"]
    assert run_body["additionalProperties"] is False and "additionalProperties" not in stream_body
    assert run_body["properties"]["input"] == stream_body["properties"]["input"]
    config = run_body["properties"]["config"]["anyOf"][0]["$ref"].rsplit("/", 1)[-1]
    assert components[config]["additionalProperties"] is False
    assert components["storyBatchRequest"]["properties"]["inputs"]["maxItems"] == 16
    assert set(runs["responses"]["201"]["content"]["application/json"]["schema"]
               ["properties"]) == {"run_id", "stream_url", "status_url"}
    assert "text/event-stream" in paths["/story/runs/{run_id}/stream"]["get"]["responses"]["200"]["content"]
    assert {"get", "post"} <= set(paths["/login"]) and "post" in paths["/logout"]
    assert "/metrics" in paths and not any(p.endswith("/token_feedback") for p in paths)
    configurable = components["storyConfigurable"]
    assert configurable["additionalProperties"] is False
    assert configurable["properties"]["max_tokens"]["anyOf"] == [
        {"type": "integer", "minimum": 1, "maximum": 32000}, {"const": 0}]  # 0: the chain's
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["detail"]["type"] == "string"


async def test_a_422_detail_is_always_the_documented_list(emu):
    async with client(emu) as http:
        for response in (
            await http.post("/story/batch", json={"inputs": [{"topic": "a"}, {"topic": "b"}],
                                                  "config": [{}]}),  # LangServe's sentence
            await http.post("/story/invoke", json={"input": {"topic": "a"}, "config": {
                "configurable": {"api_key": "x"}}}),
            await http.post("/story/text", content=b"[1, 2]",
                            headers={"content-type": "application/json"}),
        ):
            assert response.status_code == 422
            detail = response.json()["detail"]
            assert isinstance(detail, list) and {"type", "loc", "msg"} <= set(detail[0]), detail


async def test_a_config_hash_that_names_nothing_is_404(emu):
    async with client(emu) as http:
        response = await http.get("/story/c/not-a-hash/input_schema")
    assert response.status_code == 404 and response.json()["type"] == "config_not_found"


async def test_what_the_schema_calls_valid_is_accepted(emu):
    async with client(emu) as http:
        # JSON has one number type: 300.0 is an integer to the schema
        whole = await http.post("/story/invoke", json={"input": {"topic": "Brasil"}, "config": {
            "configurable": {"max_tokens": 300.0}}})
        assert whole.status_code == 200, whole.text
        assert emu.requests[-1].body["max_tokens"] == 300
        # /text's body may be a JSON string: the main field, without its quotes
        text = await http.post("/story/text", json="Pantanal")
        assert text.status_code == 200
        assert '"Pantanal"' not in str(emu.requests[-1].body)
        assert "Pantanal" in str(emu.requests[-1].body)


async def test_the_client_faces_document_their_answers(emu):
    """/v1 in OpenAI's error shape, every status it answers; the AI SDK face's body as
    DefaultChatTransport sends it (config: only configurable, within its ranges)."""
    async with client(emu) as http:
        schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    completions = paths["/v1/chat/completions"]["post"]
    assert {"application/json", "text/event-stream"} <= set(
        completions["responses"]["200"]["content"])
    for status in ("400", "401", "403", "404", "413", "415", "422", "429", "502", "503",
                   "504"):
        shape = completions["responses"][status]["content"]["application/json"]["schema"]
        assert shape == {"$ref": "#/components/schemas/OpenAIErrorResponse"}, status
    assert "404" in paths["/v1/models/{model_id}"]["get"]["responses"]
    error = schema["components"]["schemas"]["OpenAIErrorResponse"]
    assert set(error["properties"]["error"]["required"]) == {"message", "type", "param", "code"}
    body = completions["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["n"] == {"enum": [None, 1]}
    assert body["not"] == {"required": ["max_tokens", "max_completion_tokens"]}
    ai_sdk = paths["/story/ai-sdk"]["post"]
    config = ai_sdk["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "config"]["anyOf"][1]
    assert config["additionalProperties"] is False
    assert config["properties"]["configurable"]["properties"]["temperature"]["maximum"] == 2
    threads = {p["name"]: p["schema"] for p in paths["/chat/threads"]["get"]["parameters"]}
    assert threads["limit"]["minimum"] == 1 and threads["offset"]["minimum"] == 0
