"""The public names are a promise: pin them."""

import subprocess
import sys

import maritaca
from maritaca import errors, models


def test_maritaca_public_names():
    assert sorted(maritaca.__all__) == sorted([
        "DEFAULT_BASE_URL", "MODELS", "ChatMaritaca", "MaritacaError", "ModelInfo",
        "aclose_clients", "close_clients", "closing_upstreams", "get_model_info",
        "open_upstreams"])
    for name in maritaca.__all__:
        assert hasattr(maritaca, name)


def test_error_names():
    assert sorted(errors.__all__) == sorted([
        "AuthenticationError", "BadRequestError", "ConnectionError", "ContextTooLongError",
        "MaritacaError", "NotConfiguredError", "PermissionDeniedError", "RateLimitError",
        "ServerError", "StreamError", "TimeoutError"])


def test_catalogue_prices_and_aliases():
    assert models.get_model_info("sabia-4").output_price == 20.00
    assert models.get_model_info("sabia-4-2026-01-06").name == "sabia-4"
    assert models.get_model_info("sabiazim-4").name == "sabiazinho-4"
    assert models.get_model_info("sabia-4-thinking").output_price == 40.00
    br = models.get_model_info("sabiazinho-4-br-sp")
    assert br is not None and br.input_price == 1.30
    assert all(m.context_length == 128_000 and m.max_output_tokens == 32_000
               for m in models.MODELS.values())
    assert models.get_model_info("sabia-3") is None  # retired: passed through, not listed
    assert models.get_model_info("sabiazinho-4").cost_brl(1_000_000, 1_000_000, 500_000) == 4.625


def test_names_load_on_first_use():
    """``import maritaca`` is cheap; a public name or submodule loads what it needs."""
    code = """
import sys
import maritaca, maritaca.models
assert "langchain_core" not in sys.modules and "maritaca.chat_model" not in sys.modules
assert maritaca.get_model_info("sabia-4").name == "sabia-4"
assert "langchain_core" not in sys.modules
assert maritaca.errors.MaritacaError is maritaca.MaritacaError
from maritaca import ChatMaritaca, closing_upstreams
assert ChatMaritaca.__module__ == "maritaca.chat_model"
assert set(maritaca.__all__) <= set(dir(maritaca))
try:
    maritaca.nope
except AttributeError:
    pass
else:
    raise AssertionError("maritaca.nope")
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_chains_public_names():
    """The chain templates' names: the old per-chain imports (story_chain, StoryInput,
    build_story_chain...) keep working now that chains are files; the file API
    (load_chain, chain_specs, ChainFile...) is new."""
    import chains

    assert sorted(chains.__all__) == sorted([
        "CHAINS", "CONFIGURABLE_KEYS", "DEFAULT_TEMPERATURE", "HISTORY_FIELD", "MAX_TOKENS_RANGE",
        "PROGRESS_EVENT", "TEMPERATURE_RANGE", "ChainBuilder", "ChainFile", "ChainFileError",
        "ChainSpec", "JsonOutputError", "PromptFileError", "QAInput", "StoryInput",
        "SummarizeInput", "build_chains", "build_qa_chain", "build_story_chain",
        "build_summarize_chain", "chain_specs", "configurable_model", "load_chain",
        "load_prompt", "load_spec", "model_choices", "qa_chain", "read_chain_file",
        "story_chain", "summarize_chain"])
    for name in chains.__all__:
        assert hasattr(chains, name)
    assert chains.PromptFileError is chains.ChainFileError
