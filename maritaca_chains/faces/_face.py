"""One chain as the extra faces see it: its request (input and ``configurable``), its chunks,
and whether the token limit cut the answer.

A text or WebSocket request is either the bare chain input, ``{"topic": "Brasil"}``, or
LangServe's envelope, ``{"input": {"topic": "Brasil"}, "config": {"configurable":
{"model": ..., "temperature": 0.3, "max_tokens": 200}}}``; ``configurable`` is checked
with the same rules as on LangServe's routes (``check_configurable``, then the chain's
config schema: the model must be one the backend serves).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from fastapi import HTTPException
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ValidationError

from maritaca import closing_upstreams

from ..input_limits import DEFAULT_MAX_JSON_DEPTH, JSONTooDeep, parse_json
from ..langserve_fixes import check_configurable
from ..messages import DEFAULT_LANGUAGE, Language, say
from ..usage import RunUsage

__all__ = ["TRUNCATED", "Face", "FaceRequest", "RunOutcome"]

# How the text and WebSocket faces say the token limit cut the answer
TRUNCATED = "[TRUNCATED]"

_ENVELOPE_KEYS = frozenset({"input", "config"})


@dataclass
class FaceRequest:
    """A parsed request: the chain input and the run's config (``configurable`` only)."""

    value: BaseModel
    config: RunnableConfig


class RunOutcome(AsyncCallbackHandler):
    """Watches a run's model calls: the last one's ``finish_reason`` and ``max_tokens``.

    ``cut`` is true when the answer the client got (the last model call's) stopped at
    the token limit (``finish_reason == "length"``).
    """

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.max_tokens: int | None = None
        self._limits: dict[UUID, int | None] = {}
        self.usage = RunUsage()  # every model call's tokens and BRL cost (usage_line)

    @property
    def cut(self) -> bool:
        return self.finish_reason == "length"

    def note(self, lang: Language = DEFAULT_LANGUAGE) -> str:
        """What the faces say after a cut answer (no marker): the limit, and how to raise it."""
        limit = f"max_tokens={self.max_tokens}" if self.max_tokens else "max_tokens"
        return say("truncated", lang, limit=limit)

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *,
                                  run_id: UUID, **kwargs: Any) -> None:
        params = kwargs.get("invocation_params") or {}
        limit = params.get("max_tokens")
        self._limits[run_id] = limit if isinstance(limit, int) else None

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.usage.add_result(response)
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                reason = (getattr(message, "response_metadata", None) or {}).get(
                    "finish_reason") or (generation.generation_info or {}).get("finish_reason")
                if reason:
                    self.finish_reason = reason
                    self.max_tokens = self._limits.get(run_id)


class Face:
    """One chain, with its input type, main field and config schema.

    These faces carry text: a JSON chain's runs stream its JSON text (its
    ``text_chain``, validated at the end), where LangServe's routes stream objects."""

    def __init__(self, name: str, chain: Runnable[Any, Any]) -> None:
        self.name = name
        self.chain: Runnable[Any, str] = getattr(chain, "text_chain", None) or chain
        self.input_type = cast(type[BaseModel], chain.get_input_schema())
        self.config_type = chain.config_schema(include=["configurable"])
        # a chain file's input model names its main field; else the first required one
        self.main_field = getattr(self.input_type, "main_field", "") or next(
            n for n, f in self.input_type.model_fields.items() if f.is_required())

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of a text/WebSocket JSON request: the bare input, or the
        ``{"input", "config": {"configurable"}}`` envelope (for the OpenAPI docs)."""
        bare = self.input_type.model_json_schema()
        config = self.config_type.model_json_schema()
        configurable = config.get("$defs", {}).get("Configurable", {"type": "object"})
        envelope = {"title": f"{self.name} input and config", "type": "object",
                    "required": ["input"], "additionalProperties": False,
                    "properties": {"input": bare, "config": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"configurable": configurable}}}}
        return {"anyOf": [bare, envelope]}

    def parse(self, text: str) -> BaseModel:
        """A WebSocket/UI message as the chain input (ValueError/ValidationError if bad)."""
        return self.parse_request(text).value

    def parse_request(self, text: str | bytes,
                      max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> FaceRequest:
        """A text body or WebSocket message: JSON (the bare input or ``{"input", "config"}``,
        nested at most ``max_depth`` deep) or, not starting with ``{``, the main field's
        text. Raises ValidationError (locs as in the JSON: ``("config", "configurable",
        "model")``) or ValueError."""
        raw = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        if not raw.lstrip().startswith("{"):
            return FaceRequest(self.input_type.model_validate({self.main_field: raw}), {})
        try:
            data = parse_json(raw, max_depth)
        except JSONTooDeep:
            raise
        except ValueError:
            # the input type's own JSON error names the position, like FastAPI's 422
            self.input_type.model_validate_json(raw)
            raise
        return self.request_from(data)

    def request_from(self, data: Any) -> FaceRequest:
        """A decoded JSON request (see :meth:`parse_request`)."""
        if isinstance(data, dict) and "input" in data and set(data) <= _ENVELOPE_KEYS:
            return FaceRequest(_validate(self.input_type, data["input"], ("input",)),
                               self._config(data.get("config")))
        return FaceRequest(self.input_type.model_validate(data), {})

    def _config(self, config: Any) -> RunnableConfig:
        if config is None:
            return {}
        if not isinstance(config, dict) or set(config) - {"configurable"}:
            raise ValueError('config may only be {"configurable": {...}} '
                             "(model, temperature, max_tokens)")
        configurable = config.get("configurable") or {}
        if not isinstance(configurable, dict):
            raise ValueError("config.configurable must be an object")
        try:
            check_configurable(configurable)
        except HTTPException as exc:
            raise ValueError(str(exc.detail)) from exc
        _validate(self.config_type, {"configurable": configurable}, ("config",))
        return {"configurable": dict(configurable)} if configurable else {}

    async def chunks(self, value: BaseModel | FaceRequest,
                     outcome: RunOutcome | None = None,
                     callbacks: Sequence[BaseCallbackHandler] = ()
                     ) -> AsyncGenerator[str, None]:
        """The run's non-empty chunks; ``outcome`` (if given) learns how the model stopped;
        ``callbacks`` join the run's (``run_recorder.run_callbacks``: log line, metrics).

        The upstream stream is closed however this ends (also when a cancellation
        strands langchain-core's inner generators, as Gradio's Stop can:
        ``closing_upstreams`` closes what the run opened)."""
        request = value if isinstance(value, FaceRequest) else FaceRequest(value, {})
        config: RunnableConfig = {**request.config}
        if outcome is not None or callbacks:
            config["callbacks"] = [*([outcome] if outcome is not None else []), *callbacks]
        stream = cast(AsyncGenerator[str, None], self.chain.astream(request.value, config))
        with closing_upstreams():
            async with aclosing(stream):
                async for chunk in stream:
                    if chunk:
                        yield chunk


def _validate(model: type[BaseModel], data: Any, where: tuple[str, ...]) -> BaseModel:
    """``model.model_validate(data)``, its error locations prefixed with ``where``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(exc.title, [
            {**e, "loc": (*where, *e["loc"])}  # type: ignore[typeddict-item]
            for e in exc.errors(include_url=False)]) from None
