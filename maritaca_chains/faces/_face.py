"""One chain as the extra faces see it: its request (input and ``configurable``), and its
chunks.

A text or WebSocket request is either the bare chain input, ``{"topic": "Brasil"}``, or
LangServe's envelope, ``{"input": {"topic": "Brasil"}, "config": {"configurable":
{"model": ..., "temperature": 0.3, "max_tokens": 200}}}``, parsed and checked by the
request rules (``request_rules.parse_run_request``: the same rules as on LangServe's
routes and resumable runs). What a run used and how it ended is its ledger's
(``ledger``): the faces pass one to ``chunks`` and read it afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from langchain_core.runnables import Runnable
from pydantic import BaseModel

from maritaca import closing_upstreams

from ..input_limits import DEFAULT_MAX_JSON_DEPTH, JSONTooDeep, parse_json
from ..ledger import Ledger
from ..request_rules import RunRequest, parse_run_request, takes_threads

__all__ = ["TRUNCATED", "Face"]

# How the text and WebSocket faces say the token limit cut the answer
TRUNCATED = "[TRUNCATED]"


class Face:
    """One chain, with its input type, main field and config schema.

    These faces carry text: a JSON chain's runs stream its JSON text (its
    ``text_chain``, validated at the end), where LangServe's routes stream objects."""

    def __init__(self, name: str, chain: Runnable[Any, Any]) -> None:
        self.name = name
        self.chain: Runnable[Any, str] = getattr(chain, "text_chain", None) or chain
        self.input_type = cast(type[BaseModel], chain.get_input_schema())
        self.config_type = chain.config_schema(include=["configurable"])
        self.threads = takes_threads(chain)  # a conversation chain: it takes thread_id
        # a chain file's input model names its main field; else the first required one
        self.main_field = getattr(self.input_type, "main_field", "") or next(
            n for n, f in self.input_type.model_fields.items() if f.is_required())

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of a text/WebSocket JSON request: the bare input, the
        ``{"input", "config": {"configurable"}}`` envelope, or a JSON string for the main
        field (for the OpenAPI docs)."""
        bare = self.input_type.model_json_schema()
        config = self.config_type.model_json_schema()
        configurable = config.get("$defs", {}).get("Configurable", {"type": "object"})
        envelope = {"title": f"{self.name} input and config", "type": "object",
                    "required": ["input"], "additionalProperties": False,
                    "properties": {"input": bare, "config": {"anyOf": [{
                        "type": "object", "additionalProperties": False,
                        "properties": {"configurable": configurable}}, {"type": "null"}]}}}
        main = dict(bare.get("properties", {}).get(self.main_field, {"type": "string"}))
        main["title"] = f"{self.name}: the {self.main_field} alone"
        return {"anyOf": [bare, envelope, main]}

    def parse_request(self, text: str | bytes,
                      max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> RunRequest:
        """A text body or WebSocket message: JSON (the bare input or ``{"input", "config"}``,
        nested at most ``max_depth`` deep) or, not starting with ``{``, the main field's
        text. Raises ValidationError (locs as in the JSON: ``("config", "configurable",
        "model")``) or ValueError."""
        raw = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        if not raw.lstrip().startswith("{"):
            return RunRequest(self.input_type.model_validate({self.main_field: raw}), {})
        try:
            data = parse_json(raw, max_depth)
        except JSONTooDeep:
            raise
        except ValueError:
            # the input type's own JSON error names the position, like FastAPI's 422
            self.input_type.model_validate_json(raw)
            raise
        return self.request_from(data)

    def parse_json_body(self, body: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH
                        ) -> RunRequest:
        """A JSON body (``/text``): an object as in :meth:`request_from`, or a string for
        the main field; anything else is a ValueError saying what to send."""
        data = parse_json(body, max_depth)
        if isinstance(data, str):
            return RunRequest(self.input_type.model_validate({self.main_field: data}), {})
        if not isinstance(data, dict):
            raise ValueError(f"Send a JSON object (the {self.name} input, or "
                             f'{{"input", "config"}}) or a JSON string (the '
                             f"{self.main_field}), not {type(data).__name__}")
        return self.request_from(data)

    def request_from(self, data: Any) -> RunRequest:
        """A decoded request (the bare input or the envelope): the request rules'
        ``parse_run_request`` with this chain's types."""
        return parse_run_request(data, self.input_type, self.config_type,
                                 threads=self.threads)

    async def chunks(self, request: RunRequest, ledger: Ledger) -> AsyncGenerator[str, None]:
        """The run's non-empty chunks, kept in ``ledger`` (read ``ledger.last`` after).

        The upstream stream is closed however this ends (also when a cancellation
        strands langchain-core's inner generators, as Gradio's Stop can:
        ``closing_upstreams`` closes what the run opened)."""
        stream = cast(AsyncGenerator[str, None],
                      self.chain.astream(request.value, ledger.config(request.config)))
        with closing_upstreams():
            async with aclosing(stream):
                async for chunk in stream:
                    if chunk:
                        yield chunk
