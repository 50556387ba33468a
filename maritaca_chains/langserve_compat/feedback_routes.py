"""LangServe's ``add_routes`` always adds ``/token_feedback``, which answers 400 unless
LangSmith is on *and* a ``token_feedback_config`` is given (none here): it is left out.
With LangSmith tracing on, the ``/feedback`` and ``/public_trace_link`` routes (which
work then) are added instead, so the playground can send feedback.
"""

from __future__ import annotations

from typing import Any, cast

__all__ = ["feedback_routes"]


def feedback_routes() -> dict[str, Any]:
    """``add_routes`` keyword arguments for LangServe's feedback routes: none unless
    LangSmith tracing is on (``LANGSMITH_TRACING=true``), as they only answer 400 then."""
    from langsmith.utils import tracing_is_enabled

    on = bool(tracing_is_enabled())
    # "token_feedback" is a real endpoint name LangServe accepts, missing from its Literal
    return {"enable_feedback_endpoint": on, "enable_public_trace_link_endpoint": on,
            "disabled_endpoints": cast(Any, ["token_feedback"])}
