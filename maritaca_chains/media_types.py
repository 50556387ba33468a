"""Media types, compared the one way HTTP defines them: case-insensitively, parameters
(``; charset=utf-8``) aside. Every check of a ``content-type`` goes through here."""

from __future__ import annotations

__all__ = ["is_json", "media_type"]


def media_type(content_type: str | bytes | None) -> str:
    """``"Application/JSON; charset=UTF-8"`` as ``"application/json"`` ("" for none)."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | bytes | None) -> bool:
    """``application/json`` or any ``application/<something>+json``, in any case."""
    kind = media_type(content_type)
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))
