"""``QuotaExceeded``: a key over one of its limits (``quotas``). Its own module, so the
error mapping (``error_responses``) names it without importing the quotas."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fastapi import HTTPException
from limits import RateLimitItem

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

    def __str__(self) -> str:
        what = ("Rate limit" if self.kind == "requests" else "Token budget (input + output)")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.reset_at))
        return (f"{what} of {self.limit} for this access key reached; it resets at {when} "
                f"(in {self.retry_after} s)")

    def http(self) -> HTTPException:
        return HTTPException(429, str(self), headers={"Retry-After": str(self.retry_after)})
