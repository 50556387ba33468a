"""langchain-tests' standard suites: the unit suite, and the integration suite run
against the emulator (a real HTTP server speaking Maritaca's wire).

Feature flags are honest. Standard tests that need a real model's judgement (reading a
value out of the prompt or a tool result) are xfailed with the reason: the emulator is
never taught the standard tests' prompts.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator

NEEDS_JUDGEMENT = "needs a real model's judgement; the emulator's replies do not read the prompt"


class TestChatMaritacaUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatMaritaca]:
        return ChatMaritaca

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "sabia-4", "base_url": "http://127.0.0.1:9/api"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return ({"MARITACA_API_KEY": "env-key", "MARITACA_BASE_URL": "http://127.0.0.1:9/api"},
                {"model": "sabiazinho-4"},
                {"api_key": "env-key", "base_url": "http://127.0.0.1:9/api",
                 "model_name": "sabiazinho-4"})

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "sabiazinho-4"

    @pytest.mark.xfail(reason="langchain-core's load(allowed_objects='all') admits only classes "
                              "in its own mapping, never a third-party package's; ChatMaritaca "
                              "round-trips with allowed_objects=[ChatMaritaca] "
                              "(tests/test_chat_model.py)", strict=True)
    def test_serdes(self, model: Any, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)


class TestChatMaritacaIntegration(ChatModelIntegrationTests):
    emulator: MaritacaEmulator | None = None

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _emulator(cls):
        with MaritacaEmulator(reply_tokens=20) as emu:
            cls.emulator = emu
            yield emu
        cls.emulator = None

    @property
    def chat_model_class(self) -> type[ChatMaritaca]:
        return ChatMaritaca

    @property
    def chat_model_params(self) -> dict[str, Any]:
        assert self.emulator is not None
        return {"model": "sabia-4", "base_url": self.emulator.base_url,
                "api_key": self.emulator.api_key}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "sabiazinho-4"

    # -- standard tests that need a real model's judgement (strict: an XPASS fails the run)
    @pytest.mark.xfail(reason=f"{NEEDS_JUDGEMENT}: it must read magic_function(3)'s input",
                       strict=True)
    def test_tool_calling(self, model: Any) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=f"{NEEDS_JUDGEMENT}: it must read magic_function(3)'s input",
                       strict=True)
    async def test_tool_calling_async(self, model: Any) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=f"{NEEDS_JUDGEMENT}: json_mode sends no schema, the model must "
                              "follow the prompt's field names", strict=True)
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(reason=f"{NEEDS_JUDGEMENT}: with tool_choice auto the model must decide "
                              "to call get_weather", strict=True)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=f"{NEEDS_JUDGEMENT}: it must copy the prompt's Chinese text into "
                              "the tool arguments", strict=True)
    def test_unicode_tool_call_integration(self, model: Any, *args: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, *args, **kwargs)
