"""Against the real Maritaca API: run only when MARITACA_API_KEY is set (they cost tokens)."""

from __future__ import annotations

import os

import pytest
from pydantic import BaseModel

from maritaca import ChatMaritaca, errors

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("MARITACA_API_KEY"),
                       reason="set MARITACA_API_KEY to run tests against the real Maritaca API"),
]


@pytest.fixture
def model() -> ChatMaritaca:
    return ChatMaritaca(model="sabiazinho-4", temperature=0, max_tokens=64)


def test_live_stream_text_usage_and_metadata(model):
    chunks = list(model.stream("Diga 'olá' e nada mais."))
    text = "".join(c.content for c in chunks)
    assert text.strip()
    last = chunks[-1]
    assert last.usage_metadata and last.usage_metadata["output_tokens"] > 0
    assert last.response_metadata["finish_reason"] in ("stop", "length")
    assert last.response_metadata["model_name"]


async def test_live_astream_matches_invoke_shape(model):
    chunks = [c async for c in model.astream("Conte até três.")]
    assert "".join(c.content for c in chunks).strip()
    message = await model.ainvoke("Conte até três.")
    assert message.content and message.usage_metadata


def test_live_tool_call(model):
    class Clima(BaseModel):
        """Consulta o clima de uma cidade."""

        cidade: str

    message = model.bind_tools([Clima], tool_choice="Clima").invoke("Como está o tempo em Recife?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "Clima"
    assert "recife" in message.tool_calls[0]["args"]["cidade"].lower()


def test_live_bad_key_is_authentication_error():
    bad = ChatMaritaca(api_key="sk-definitely-not-valid", max_retries=0)
    with pytest.raises(errors.AuthenticationError) as info:
        bad.invoke("oi")
    assert "sk-definitely-not-valid" not in str(info.value)
