"""Times as Brazilian users read the clock: Brasília time, ``dd/mm/aaaa às hh:mm``.

Use ``shown`` for any moment a page or a pt-BR message shows (stored and computed
times stay UTC).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BRASILIA", "shown"]


def _brasilia() -> tzinfo:
    """Brasília time, the country's reference (UTC-3 since 2019, when daylight saving
    ended), from the system's zone data; fixed at UTC-3 where there is none."""
    try:
        return ZoneInfo("America/Sao_Paulo")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=-3), "BRT")


BRASILIA = _brasilia()


def shown(moment: datetime, *, seconds: bool = False) -> str:
    """``moment`` (timezone-aware) in Brasília time: "05/12/2026 às 21:30"
    (with ``seconds``, "05/12/2026 às 21:30:15")."""
    return moment.astimezone(BRASILIA).strftime(
        "%d/%m/%Y às %H:%M:%S" if seconds else "%d/%m/%Y às %H:%M")
