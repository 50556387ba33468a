"""The catalogue of Maritaca models: limits and prices that the rest of the project reads.

Use it to validate a model choice in a UI, to size prompts, or to price a response::

    from maritaca.models import get_model_info
    info = get_model_info("sabiazinho-4")
    info.cost_brl(input_tokens=1_000, output_tokens=500)   # 0.003
    price_usage(message.usage_metadata, "sabiazinho-4")    # {"input", "output", "total"}

Names not in the catalogue are still accepted by ChatMaritaca and passed to the API.
Prices are BRL per million tokens (Maritaca's pricing page, 2026).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelInfo", "catalogue_names", "get_model_info",
           "price_usage"]

DEFAULT_MODEL = "sabia-4"
BR_SP_SURCHARGE = 1.30  # "-br-sp" variants process in Brazil, 30% dearer


@dataclass(frozen=True)
class ModelInfo:
    """Limits and prices of one model. Prices are BRL per million tokens."""

    name: str
    context_length: int
    max_output_tokens: int
    input_price: float
    output_price: float
    cached_input_price: float
    aliases: tuple[str, ...] = ()
    description: str = ""

    def cost_brl(self, input_tokens: int = 0, output_tokens: int = 0,
                 cached_input_tokens: int = 0) -> float:
        """Price of a call in BRL; cached tokens are a part of the input tokens."""
        fresh = max(input_tokens - cached_input_tokens, 0)
        total = (fresh * self.input_price + cached_input_tokens * self.cached_input_price
                 + output_tokens * self.output_price)
        return round(total / 1_000_000, 6)


def _with_br_sp(info: ModelInfo) -> list[ModelInfo]:
    br = ModelInfo(
        name=f"{info.name}-br-sp",
        context_length=info.context_length,
        max_output_tokens=info.max_output_tokens,
        input_price=round(info.input_price * BR_SP_SURCHARGE, 4),
        output_price=round(info.output_price * BR_SP_SURCHARGE, 4),
        cached_input_price=round(info.cached_input_price * BR_SP_SURCHARGE, 4),
        description=f"{info.description} Processed in Brazil (São Paulo).".strip(),
    )
    return [info, br]


_BASE = [
    ModelInfo("sabia-4", 128_000, 32_000, 5.00, 20.00, 1.25,
              aliases=("sabia-4-2026-01-06",),
              description="Maritaca's flagship model."),
    ModelInfo("sabia-4-thinking", 128_000, 32_000, 5.00, 40.00, 1.25,
              description="Sabiá 4 with reasoning before it answers."),
    ModelInfo("sabiazinho-4", 128_000, 32_000, 1.00, 4.00, 0.25,
              aliases=("sabiazinho-4-2026-01-06", "sabia-4-small", "sabiazim-4"),
              description="Small, fast and cheap."),
]

MODELS: dict[str, ModelInfo] = {m.name: m for base in _BASE for m in _with_br_sp(base)}
_ALIASES: dict[str, str] = {a: m.name for m in _BASE for a in m.aliases}


def catalogue_names() -> list[str]:
    """Canonical model names, for menus and validation (aliases excluded)."""
    return list(MODELS)


def get_model_info(name: str) -> ModelInfo | None:
    """The catalogue entry for a model name or alias, or None when it is not listed."""
    return MODELS.get(name) or MODELS.get(_ALIASES.get(name, ""))


def price_usage(usage: Mapping[str, Any] | None, *names: str | None
                ) -> dict[str, float] | None:
    """BRL cost ``{"input", "output", "total"}`` of one call's LangChain ``usage_metadata``,
    priced as the first of ``names`` the catalogue lists (e.g. the server's model name,
    then the requested one). None when no name is listed or there is no usage: an
    unknown model has no price, and none is invented. Cached input tokens (a part of
    the input tokens) are priced at the cached price; amounts are rounded to 1e-8 BRL."""
    if not usage:
        return None
    info = next((found for name in names if name and (found := get_model_info(name))), None)
    if info is None:
        return None
    input_tokens = int(usage.get("input_tokens") or 0)
    cached = int((usage.get("input_token_details") or {}).get("cache_read") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    fresh = max(input_tokens - cached, 0)
    input_cost = (fresh * info.input_price + cached * info.cached_input_price) / 1_000_000
    output_cost = output_tokens * info.output_price / 1_000_000
    # to 1e-8 BRL, finer than cost_brl: a short call costs a few millionths of a real,
    # and run totals and metrics add many of them up
    return {"input": round(input_cost, 8), "output": round(output_cost, 8),
            "total": round(input_cost + output_cost, 8)}
