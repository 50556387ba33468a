"""A run's token usage and BRL cost, added up over every model call it makes.

Use ``RunUsage`` wherever a whole run's usage is wanted (the run log, metrics, a face's
closing line): ``add_result`` each model call's ``LLMResult`` (a callback's
``on_llm_end``), then read the totals. A map-reduce summary makes many calls; all count.
The cost of a call is its ``response_metadata["cost_brl"]`` (ChatMaritaca prices every
call), else the catalogue's price for its model name (other chat models); a call whose
model has no price makes the run's cost unknown (None), never a guess::

    usage = RunUsage()
    usage.add_result(llm_result)
    usage.cost_brl          # 0.000265, or None
    format_cost(usage.cost_brl)   # "R$ 0,000265"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.outputs import LLMResult

from maritaca.models import price_usage

__all__ = ["USAGE_MARK", "RunUsage", "format_cost", "usage_line"]

USAGE_MARK = "[USAGE]"


class RunUsage:
    """Tokens (``input``, ``output``, ``cached_input``), model calls and BRL cost of a run."""

    __slots__ = ("calls", "cached_input_tokens", "cost_known", "cost_sum", "input_tokens",
                 "output_tokens", "model_name")

    def __init__(self) -> None:
        self.calls = self.input_tokens = self.output_tokens = self.cached_input_tokens = 0
        self.cost_sum = 0.0
        self.cost_known = True  # until a call with usage but no price
        self.model_name: str | None = None  # the server's name for the last call

    @property
    def cost_brl(self) -> float | None:
        """The run's cost in BRL; None when a call had no price (or none reported usage)."""
        if not self.cost_known or not (self.input_tokens or self.output_tokens):
            return None
        return round(self.cost_sum, 8)

    def add_result(self, result: LLMResult) -> None:
        """Count one model call (the first generation of each prompt carries its usage)."""
        for generations in result.generations:
            if generations:
                self.add_message(getattr(generations[0], "message", None))

    def add_message(self, message: Any) -> None:
        usage: Mapping[str, Any] | None = getattr(message, "usage_metadata", None)
        metadata: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
        self.calls += 1
        self.model_name = metadata.get("model_name") or self.model_name
        if not usage:
            return
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        self.cached_input_tokens += int(
            (usage.get("input_token_details") or {}).get("cache_read") or 0)
        cost = metadata["cost_brl"] if "cost_brl" in metadata else price_usage(
            usage, metadata.get("model_name"), metadata.get("model"))
        total = cost.get("total") if isinstance(cost, Mapping) else None
        if isinstance(total, int | float):
            self.cost_sum += total
        else:
            self.cost_known = False

    def as_dict(self) -> dict[str, Any]:
        """``{"input_tokens", "output_tokens", "cached_input_tokens", "calls", "cost_brl"}``."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_input_tokens": self.cached_input_tokens, "calls": self.calls,
                "cost_brl": self.cost_brl}


def format_cost(cost_brl: float | None) -> str:
    """A cost for people, in Brazilian notation: ``R$ 0,000265``; ``sem preço`` for None."""
    if cost_brl is None:
        return "sem preço"
    text = f"{cost_brl:.8f}".rstrip("0")
    if text.endswith("."):
        text += "00"
    whole, _, cents = text.partition(".")
    return f"R$ {int(whole):,}".replace(",", ".") + "," + cents.ljust(2, "0")


def usage_line(usage: RunUsage) -> str:
    """The line the text and WebSocket faces end a run with (without a newline):
    ``[USAGE] {"input_tokens": 7, ..., "cost_brl": 0.000265}``."""
    return f"{USAGE_MARK} {json.dumps(usage.as_dict())}"
