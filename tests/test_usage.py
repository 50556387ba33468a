"""Usage and its BRL cost on every call, priced from the catalogue (against the emulator).

The emulator's usage is known: a prompt costs its whitespace words + 3 tokens per message,
the reply ``reply_tokens`` tokens, and a prompt prefix sent before counts as cached.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk

from maritaca.models import price_usage
from maritaca.testing import MaritacaEmulator
from tests.conftest import emulator_model

PROMPT = "Conte uma história curta"  # 4 words + 3 = 7 input tokens
INPUT, OUTPUT = 7, 12  # the emu fixture answers 12 tokens

# BRL per million tokens (input / output / cached input), Maritaca's 2026 prices
PRICES = {"sabia-4": (5.00, 20.00, 1.25), "sabiazinho-4": (1.00, 4.00, 0.25)}


def expected_cost(model: str, input_tokens: int, output_tokens: int, cached: int = 0
                  ) -> dict[str, float]:
    fresh_price, out_price, cached_price = PRICES[model]
    input_cost = ((input_tokens - cached) * fresh_price + cached * cached_price) / 1e6
    output_cost = output_tokens * out_price / 1e6
    return {"input": round(input_cost, 8), "output": round(output_cost, 8),
            "total": round(input_cost + output_cost, 8)}


def test_price_usage_from_the_catalogue_and_none_when_unknown():
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "total_tokens": 2_000_000,
             "input_token_details": {"cache_read": 500_000}}
    assert price_usage(usage, "sabiazinho-4") == {"input": 0.625, "output": 4.0, "total": 4.625}
    assert price_usage(usage, "sabia-4-2026-01-06") == {"input": 3.125, "output": 20.0,
                                                         "total": 23.125}
    # the first listed name prices it (the server's dated name, else the requested one)
    assert price_usage(usage, "not-listed", "sabia-4") == price_usage(usage, "sabia-4")
    assert price_usage(usage, "not-listed", None) is None
    assert price_usage(None, "sabia-4") is None


@pytest.mark.parametrize("model", ["sabia-4", "sabiazinho-4"])
async def test_stream_last_chunk_carries_exact_cost(emu: MaritacaEmulator, model: str):
    chat = emulator_model(emu, model=model)
    chunks = [c async for c in chat.astream(PROMPT)]
    assert all("cost_brl" not in c.response_metadata for c in chunks[:-1])
    last = chunks[-1]
    assert last.usage_metadata is not None
    assert (last.usage_metadata["input_tokens"], last.usage_metadata["output_tokens"]) == (
        INPUT, OUTPUT)
    assert last.response_metadata["cost_brl"] == expected_cost(model, INPUT, OUTPUT)


@pytest.mark.parametrize("model", ["sabia-4", "sabiazinho-4"])
def test_invoke_and_sync_stream_carry_exact_cost(emu: MaritacaEmulator, model: str):
    chat = emulator_model(emu, model=model)
    message = chat.invoke(PROMPT)
    assert message.response_metadata["cost_brl"] == expected_cost(model, INPUT, OUTPUT)
    # the same prompt again: the emulator now counts all of it as cached input
    full: AIMessageChunk | None = None
    for chunk in chat.stream(PROMPT):
        full = chunk if full is None else full + chunk
    assert full is not None and full.usage_metadata is not None
    assert full.usage_metadata["input_token_details"] == {"cache_read": INPUT}
    assert full.response_metadata["cost_brl"] == expected_cost(model, INPUT, OUTPUT,
                                                               cached=INPUT)


def test_unknown_model_has_no_price(emu: MaritacaEmulator):
    chat = emulator_model(emu, model="modelo-sem-preco")
    message = chat.invoke(PROMPT)
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == OUTPUT
    assert message.response_metadata["cost_brl"] is None
    last = list(chat.stream(PROMPT))[-1]
    assert "cost_brl" in last.response_metadata and last.response_metadata["cost_brl"] is None


def test_no_usage_asked_no_cost(emu: MaritacaEmulator):
    last = list(emulator_model(emu, stream_usage=False).stream(PROMPT))[-1]
    assert last.usage_metadata is None and last.response_metadata["cost_brl"] is None
