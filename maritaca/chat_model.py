"""ChatMaritaca: a streaming-first LangChain chat model for Maritaca AI's Sabiá models.

Use it like any LangChain chat model; streaming is the real implementation::

    from maritaca import ChatMaritaca

    model = ChatMaritaca(model="sabiazinho-4", temperature=0)   # key from MARITACA_API_KEY
    for chunk in model.stream("Conte uma história curta sobre o Brasil."):
        print(chunk.content, end="", flush=True)
    # the last chunk carries response_metadata (model_name, finish_reason, id, and
    # cost_brl: {"input", "output", "total"} in BRL, None for a model without a price)
    # and usage_metadata (input/output/total and cached input tokens)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils import from_env, secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, SecretStr, field_validator

from . import _fallback, _model_run, errors
from ._local_install import EMBEDDED_DEFAULT_MAX_TOKENS, EMBEDDED_MODEL_NAME
from ._transport import Transport
from ._wire import (
    StreamAssembler,
    completion_to_result,
    messages_to_wire,
    tool_choice_to_wire,
)
from .models import DEFAULT_MODEL

__all__ = ["DEFAULT_BASE_URL", "ChatMaritaca"]

DEFAULT_BASE_URL = "https://chat.maritaca.ai/api"


class ChatMaritaca(BaseChatModel):
    """Chat model for Maritaca's OpenAI-compatible chat completions API, over httpx.

    Use it wherever a LangChain chat model goes (LCEL chains, agents, LangServe). The key
    comes from ``MARITACA_API_KEY`` and the base URL from ``MARITACA_BASE_URL``. Without
    a key, ``maritaca.local.start()`` makes ``ChatMaritaca()`` use the embedded offline
    model; or point ``base_url`` at any compatible server, such as the emulator
    (``maritaca.testing``).

    Streams yield text as it arrives and tool-call chunks; the last chunk carries the
    server's model name, finish reason, completion id and token usage, exactly once.
    Failures raise the errors in ``maritaca.errors``; retryable ones (429, 5xx, network)
    are retried with backoff, but never after a chunk has been yielded.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model_name: str = Field(default=DEFAULT_MODEL, alias="model")
    """Model name, e.g. ``sabia-4`` or ``sabiazinho-4``; names outside the catalogue pass through."""
    temperature: float | None = None
    """Sampling temperature; None leaves the API default (0.7). 0 is sent as 0."""
    max_tokens: int | None = None
    """Longest answer in tokens; None leaves it to the server, except on the embedded
    model (``smollm2-135m-instruct``, or no key and the default base URL), which then
    gets ``maritaca.local.DEFAULT_MAX_TOKENS`` (512) instead of writing until its
    context is full."""
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = None
    """Number of choices (non-streaming calls only)."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra request body fields, sent as they are."""
    api_key: SecretStr | None = Field(
        alias="api_key", default_factory=secret_from_env("MARITACA_API_KEY", default=None))
    base_url: str = Field(
        alias="base_url", validate_default=True,
        default_factory=from_env("MARITACA_BASE_URL", default=DEFAULT_BASE_URL))
    timeout: float | None = Field(default=60.0, alias="timeout")
    """Seconds to connect, and the longest wait for the next chunk of a stream."""
    max_retries: int = Field(default=2, ge=0)
    """Retries for 429/5xx/network failures before the first chunk; 0 disables them."""
    stream_usage: bool = True
    """Ask for token usage at the end of streams (``stream_options.include_usage``)."""
    streaming: bool | None = None
    """True makes ``invoke`` stream under the hood (callbacks then see every token).
    None, not False, by default: langchain-core reads an explicit False as "never
    stream", and ``configurable_fields`` re-creates the model with every field set."""
    default_headers: dict[str, str] | None = None

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("temperature")
    @classmethod
    def _check_temperature(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 2:
            raise ValueError(f"temperature must be between 0 and 2, got {value}")
        return value

    # ----------------------------------------------------------------- LangChain hooks
    @property
    def _llm_type(self) -> str:
        return "maritaca-chat"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "MARITACA_API_KEY"}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["maritaca"]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "base_url": self.base_url, **self._sampling_params()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "maritaca"
        params["ls_model_name"] = kwargs.get("model", self.model_name)
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        return params

    # ----------------------------------------------------------------------- requests
    def _sampling_params(self) -> dict[str, Any]:
        params = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                  "top_p": self.top_p, "frequency_penalty": self.frequency_penalty,
                  "presence_penalty": self.presence_penalty, "n": self.n, "stop": self.stop}
        return {k: v for k, v in params.items() if v is not None}

    def _payload(self, messages: list[BaseMessage], stop: list[str] | None, *, stream: bool,
                 **kwargs: Any) -> dict[str, Any]:
        stream_usage = kwargs.pop("stream_usage", self.stream_usage)
        kwargs.pop("stream", None)
        payload: dict[str, Any] = {"model": self.model_name,
                                   "messages": messages_to_wire(messages),
                                   **self._sampling_params(), **self.model_kwargs}
        if stop is not None:
            payload["stop"] = stop
        payload.update(kwargs)
        if payload.get("max_tokens") is None and self._goes_to_embedded_model():
            # llama.cpp's server would otherwise write until its context is full
            payload["max_tokens"] = EMBEDDED_DEFAULT_MAX_TOKENS
        if stream:
            if (payload.get("n") or 1) > 1:
                raise errors.BadRequestError(
                    f"n={payload['n']} asks for several choices, which streams cannot carry",
                    hint="Use invoke/generate for n > 1, or stream with n=1")
            payload.pop("n", None)
            payload["stream"] = True
            if stream_usage:
                payload["stream_options"] = {"include_usage": True}
        return payload

    def _goes_to_embedded_model(self) -> bool:
        """Whether calls go to the embedded model: it is named, or no key and the default
        base URL (the embedded backend ``maritaca.local.start()`` announced, if any)."""
        return self.model_name == EMBEDDED_MODEL_NAME or (
            self.api_key is None and self.base_url == DEFAULT_BASE_URL)

    def _transport(self) -> Transport:
        """Where this call goes: the base URL (or, with no key and the default base URL,
        the embedded backend that ``maritaca.local.start()`` announced) and its headers."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **(self.default_headers or {})}
        base = self.base_url
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        elif base == DEFAULT_BASE_URL:
            local_base = _fallback.endpoint()
            if local_base is None:
                raise errors.NotConfiguredError("No Maritaca API key is configured",
                                                hint=_fallback.NO_KEY_HINT)
            base = local_base
        return Transport(base, headers, model=self.model_name, timeout=self.timeout,
                         max_retries=self.max_retries)

    def _body(self, messages: list[BaseMessage], stop: list[str] | None, stream: bool,
              kwargs: dict[str, Any]) -> bytes:
        return orjson.dumps(self._payload(messages, stop, stream=stream, **kwargs))

    def _new_assembler(self) -> StreamAssembler:
        return StreamAssembler(output_version_v1=self.output_version == "v1",
                               requested_model=self.model_name)

    # -------------------------------------------------------------------- non-streaming
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self.streaming and kwargs.get("stream", True):
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        transport = self._transport()
        return completion_to_result(transport.post(self._body(messages, stop, False, kwargs)),
                                    self.model_name)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        if self.streaming and kwargs.get("stream", True):
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        transport = self._transport()
        return completion_to_result(
            await transport.apost(self._body(messages, stop, False, kwargs)), self.model_name)

    # ------------------------------------------------------------------------ streaming
    # Plain methods returning the transport's iterators (no generator layer per chunk of
    # our own); langchain-core calls them inside its error handling, so an error raised
    # here (no key, n > 1) reaches the callbacks like one raised mid-stream.
    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        transport = self._transport()
        return transport.stream(self._body(messages, stop, True, kwargs), self._new_assembler,
                                run_manager.on_llm_new_token if run_manager else None)

    def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                 run_manager: AsyncCallbackManagerForLLMRun | None = None,
                 **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        transport = self._transport()
        return transport.astream(self._body(messages, stop, True, kwargs), self._new_assembler,
                                 run_manager.on_llm_new_token if run_manager else None)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None,
               *, stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        """langchain-core's ``stream``: the same run, callbacks and chunks, with less
        work per chunk (see ``maritaca._model_run``)."""
        return _model_run.stream_run(self, input, config, stop, kwargs, super().stream)

    def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None,
                *, stop: list[str] | None = None,
                **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        """langchain-core's ``astream``: the same run, callbacks and chunks, with less
        work per chunk (see ``maritaca._model_run``)."""
        return _model_run.astream_run(self, input, config, stop, kwargs, super().astream)

    # ----------------------------------------------------------- tools & structured output
    def bind_tools(
        self,
        tools: Sequence[Mapping[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (pydantic classes, functions, LangChain tools or OpenAI tool dicts).

        ``tool_choice``: "auto", "none", "required"/"any"/True, or a tool's name.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [t["function"]["name"] for t in formatted]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice_to_wire(tool_choice, names)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A runnable returning output shaped by ``schema`` (pydantic class, TypedDict,
        JSON schema or OpenAI tool dict); pydantic schemas give validated instances."""
        if kwargs:
            raise ValueError(f"Unexpected arguments: {sorted(kwargs)}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method != "json_mode" and schema is None:
            raise ValueError(f"method={method!r} needs a schema; only json_mode works without one")
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool_name = convert_to_openai_tool(schema)["function"]["name"]  # type: ignore[arg-type]
            llm = self.bind_tools([schema], tool_choice=tool_name, strict=strict,  # type: ignore[list-item]
                                  ls_structured_output_format={
                                      "kwargs": {"method": method, "strict": strict},
                                      "schema": schema})
            parser = (PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                      if is_pydantic else
                      JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True))
        elif method == "json_schema":
            tool = convert_to_openai_tool(schema, strict=strict)  # type: ignore[arg-type]
            json_schema: dict[str, Any] = {"name": tool["function"]["name"],
                                           "schema": tool["function"]["parameters"]}
            if strict is not None:
                json_schema["strict"] = strict
            llm = self.bind(response_format={"type": "json_schema", "json_schema": json_schema},
                            ls_structured_output_format={"kwargs": {"method": method,
                                                                    "strict": strict},
                                                         "schema": tool})
            parser = (PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                      if is_pydantic else JsonOutputParser())
        elif method == "json_mode":
            llm = self.bind(response_format={"type": "json_object"},
                            ls_structured_output_format={"kwargs": {"method": method},
                                                         "schema": schema})
            parser = (PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                      if is_pydantic else JsonOutputParser())
        else:
            raise ValueError(f"Unknown method {method!r}: use 'function_calling', "
                             "'json_schema' or 'json_mode'")
        if not include_raw:
            return llm | parser
        with_parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser,
                                                 parsing_error=lambda _: None)
        without = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | with_parsed.with_fallbacks([without],
                                                                exception_key="parsing_error")

