"""LangServe's per-request hook (``add_routes(per_req_config_modifier=...)``), called once
per request before any run starts, with the request: where the request rules meet
LangServe's routes. It applies the ``configurable`` policy (``request_rules``) to the
config in the body (one, or ``/batch``'s list) and in the ``/c/<hash>/`` path (a
``thread_id`` sent to a chain without history is refused: LangServe would drop it, as a
key outside the chain's config schema), and adds
the run's callbacks: the ledger (``ledger``: log line, metrics, token quota; on
``/batch`` through ``batch_callbacks``), which also hands a failed run to
``error_events`` (one handler: each handler costs every run's every event a dispatch).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request

from ..request_rules import check_configurable, rules_of
from .batch_callbacks import follow_batch_runs
from .config_hash import configurable_in_path
from .error_events import run_error_recorder

__all__ = ["config_hook", "per_request_config"]


def config_hook(*, threads: bool) -> Callable[[dict[str, Any], Request],
                                              Awaitable[dict[str, Any]]]:
    """``per_request_config`` for one chain's routes; ``threads``: it takes a
    ``thread_id`` (a conversation chain)."""
    async def hook(config: dict[str, Any], request: Request) -> dict[str, Any]:
        return await per_request_config(config, request, threads=threads)

    return hook


async def per_request_config(config: dict[str, Any], request: Request, *,
                             threads: bool = True) -> dict[str, Any]:
    """Refuse ``configurable`` keys clients must not set and out-of-range values (422);
    add the ledger (with the error recorder) to the run's callbacks."""
    configurables = [configurable_in_path(request)]
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = {}
        configs = body.get("config") if isinstance(body, dict) else None
        configurables += [one["configurable"] for one in
                          (configs if isinstance(configs, list) else [configs])
                          if isinstance(one, dict) and isinstance(one.get("configurable"), dict)]
    try:
        for configurable in configurables:
            check_configurable(configurable, threads=threads)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    chain = request.scope["path"].split("/")[1]  # /<chain>/... (request.url: built per call)
    ledger = rules_of(request).accounts.open(request, chain)
    config["callbacks"] = [*(config.get("callbacks") or []), ledger]
    # /batch drops the callbacks above; its failure answers before any body goes out,
    # so there is no error event to name it in
    if not follow_batch_runs(request, ledger):
        ledger.on_root_error = run_error_recorder(request)
    return config
