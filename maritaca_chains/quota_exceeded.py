"""``QuotaExceeded``: a key over one of its limits (``quotas``). Its own module, so the
error mapping (``error_responses``) names it without importing the quotas."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import HTTPException
from limits import RateLimitItem

from .brasilia_time import shown
from .messages import DEFAULT_LANGUAGE, Language, say

__all__ = ["QuotaExceeded"]


@dataclass
class QuotaExceeded(Exception):
    """A key is over one of its limits: which one, and when it resets (epoch seconds)."""

    kind: str  # "requests" or "tokens"
    limit: RateLimitItem
    reset_at: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def message(self, lang: Language = DEFAULT_LANGUAGE) -> str:
        """Which limit, and when it resets, for people (pt-BR unless ``lang`` is "en")."""
        if lang == "en":
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.reset_at))
            limit = str(self.limit)
        else:  # as a Brazilian reads the clock
            reset = datetime.fromtimestamp(self.reset_at, UTC)
            when = f"{shown(reset, seconds=True)}, horário de Brasília"
            limit = _per(self.limit)
        return say(f"quota_exceeded.{self.kind}", lang, limit=limit, when=when,
                   seconds=self.retry_after)

    def __str__(self) -> str:
        return self.message("en")  # logs

    def http(self, lang: Language = DEFAULT_LANGUAGE) -> HTTPException:
        return HTTPException(429, self.message(lang),
                             headers={"Retry-After": str(self.retry_after)})


# limits' granularities in Portuguese: (one, many)
_UNITS = {"second": ("segundo", "segundos"), "minute": ("minuto", "minutos"),
          "hour": ("hora", "horas"), "day": ("dia", "dias"), "month": ("mês", "meses"),
          "year": ("ano", "anos")}


def _per(limit: RateLimitItem) -> str:
    """A limit in Portuguese: "60 por minuto", "5 a cada 30 segundos"."""
    name = limit.GRANULARITY.name
    if name not in _UNITS:
        return str(limit)
    one, many = _UNITS[name]
    if limit.multiples == 1:
        return f"{limit.amount} por {one}"
    return f"{limit.amount} a cada {limit.multiples} {many}"
