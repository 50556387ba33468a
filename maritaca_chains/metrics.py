"""Prometheus metrics at ``/metrics``: runs, tokens, BRL cost, streams in flight, latency.

The names, for dashboards to rely on::

    maritaca_chains_runs_total{chain,model,outcome}         outcome: ok, cancelled, or an
                                                            error type (describe_error)
    maritaca_chains_tokens_total{chain,model,kind}          kind: input, output, cached_input
    maritaca_chains_cost_brl_total{chain,model}             priced runs only
    maritaca_chains_streams_active{chain}                   runs in flight (gauge)
    maritaca_chains_time_to_first_token_seconds{chain,model}    histogram
    maritaca_chains_run_duration_seconds{chain,model}            histogram
    maritaca_chains_upstream_errors_total{type}             failed model calls, by type
    maritaca_chains_refused_total{reason}                   requests and connections cut
                                                            at a limit (head_too_large,
                                                            head_timeout, body_too_large,
                                                            json_too_deep, ws_input_refused)
    maritaca_chains_redis_unavailable_total{outcome}        requests that needed Redis while
                                                            it was down: refused (503) or
                                                            served (REDIS_FAIL_OPEN)
    maritaca_chains_unpaid_tokens_total{outcome}            token charges Redis could not
                                                            take (unpaid_charges): owed,
                                                            settled later, or dropped
    maritaca_chains_unpaid_tokens_pending                   tokens owed now (gauge)

At start (``serving``) every chain shows ``streams_active`` 0 and ``runs_total`` 0 for
``outcome="ok"`` on the served model; a single process also exports prometheus-client's
standard ``process_*`` metrics (resident memory, CPU seconds, open descriptors...). The
run ledger (``ledger``) updates them once per run, never per chunk. Under
``maritaca-chains serve --workers N`` prometheus-client's multiprocess mode adds up every
worker: the CLI makes a temporary directory and sets ``PROMETHEUS_MULTIPROC_DIR`` to it
before the workers start (set it yourself when you run ``uvicorn --workers N``; the
directory must exist and be empty at start). The gauge counts live workers only.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)

from .settings import ServerSettings

__all__ = ["METRICS_PATH", "MULTIPROC_ENV", "add_metrics_route", "mark_process_dead",
           "multiprocess_dir_for_workers", "record_run", "redis_unavailable", "registry",
           "request_refused", "run_ended", "run_started", "serving", "unpaid_tokens",
           "unpaid_tokens_pending", "upstream_error"]

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# prometheus-client picks its value store (memory, or mmap files shared by workers) when it
# is imported, from PROMETHEUS_MULTIPROC_DIR
_MULTIPROCESS = values.ValueClass is not values.MutexValue
_REGISTRY = CollectorRegistry(auto_describe=True)

_RUNS = Counter("maritaca_chains_runs", "Chain runs, by how they ended",
                ["chain", "model", "outcome"], registry=_REGISTRY)
_TOKENS = Counter("maritaca_chains_tokens", "Tokens of every model call of a run",
                  ["chain", "model", "kind"], registry=_REGISTRY)
_COST = Counter("maritaca_chains_cost_brl", "BRL cost of the runs (catalogue prices)",
                ["chain", "model"], registry=_REGISTRY)
_ACTIVE = Gauge("maritaca_chains_streams_active", "Runs in flight (streams and invokes)",
                ["chain"], registry=_REGISTRY, multiprocess_mode="livesum")
_TTFT = Histogram("maritaca_chains_time_to_first_token_seconds",
                  "Seconds from the start of a run to the first model token",
                  ["chain", "model"], registry=_REGISTRY,
                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
_DURATION = Histogram("maritaca_chains_run_duration_seconds", "Seconds a run took",
                      ["chain", "model"], registry=_REGISTRY,
                      buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
_UPSTREAM_ERRORS = Counter("maritaca_chains_upstream_errors",
                           "Failed model calls, by error type (describe_error)",
                           ["type"], registry=_REGISTRY)

_REFUSED = Counter("maritaca_chains_refused", "Requests and connections cut at a limit",
                   ["reason"], registry=_REGISTRY)
_REDIS_DOWN = Counter("maritaca_chains_redis_unavailable",
                      "Requests that needed Redis while it could not be reached",
                      ["outcome"], registry=_REGISTRY)
_UNPAID = Counter("maritaca_chains_unpaid_tokens",
                  "Token charges Redis could not take: owed, settled later, dropped",
                  ["outcome"], registry=_REGISTRY)
_UNPAID_PENDING = Gauge("maritaca_chains_unpaid_tokens_pending",
                        "Tokens owed to the quotas until Redis takes them",
                        registry=_REGISTRY, multiprocess_mode="livesum")


if not _MULTIPROCESS:
    # memory, CPU, open descriptors... of this process (process_*); in multiprocess mode
    # there is no one process to describe
    ProcessCollector(registry=_REGISTRY)


# A run touches up to nine labelled series; prometheus-client's ``labels()`` checks and
# converts the values and takes a lock each time. The series for a label tuple never
# changes (nothing here removes one), so each is looked up once; the label values are
# few (chains, models, outcomes).
@functools.lru_cache(maxsize=4096)
def _series(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once. For ``str`` labels only (``labels()``
    turns values into strings; 1 and True would share a key here)."""
    return metric.labels(*labels)


def serving(chains: Iterable[str], model: str) -> None:
    """At start: every chain's in-flight gauge at 0 and its ``ok`` runs at 0 for the
    served model, so dashboards and alerts see 0 rather than no data."""
    for chain in chains:
        _series(_ACTIVE, chain)
        _series(_RUNS, chain, model, "ok")


def run_started(chain: str) -> None:
    _series(_ACTIVE, chain).inc()


def run_ended(chain: str) -> None:
    _series(_ACTIVE, chain).dec()


def record_run(chain: str, model: str, outcome: str, *, input_tokens: int,
               output_tokens: int, cached_input_tokens: int, cost_brl: float | None,
               time_to_first_token: float | None, duration: float) -> None:
    """Count one finished run (the run recorder calls it once per run)."""
    _series(_RUNS, chain, model, outcome).inc()
    if input_tokens:
        _series(_TOKENS, chain, model, "input").inc(input_tokens)
    if output_tokens:
        _series(_TOKENS, chain, model, "output").inc(output_tokens)
    if cached_input_tokens:
        _series(_TOKENS, chain, model, "cached_input").inc(cached_input_tokens)
    if cost_brl:
        _series(_COST, chain, model).inc(cost_brl)
    if time_to_first_token is not None:
        _series(_TTFT, chain, model).observe(time_to_first_token)
    _series(_DURATION, chain, model).observe(duration)


def upstream_error(kind: str) -> None:
    _UPSTREAM_ERRORS.labels(kind).inc()


def request_refused(reason: str) -> None:
    """Count a request or connection cut at one of the input limits."""
    _REFUSED.labels(reason).inc()


def redis_unavailable(outcome: str) -> None:
    """Count a request that needed Redis while it was down: ``refused`` or ``served``."""
    _REDIS_DOWN.labels(outcome).inc()


def unpaid_tokens(outcome: str, tokens: int) -> None:
    """Count ``tokens`` of charges Redis could not take: ``owed``, ``settled`` or
    ``dropped``."""
    _UNPAID.labels(outcome).inc(tokens)


def unpaid_tokens_pending(change: int) -> None:
    """The tokens owed to the quotas went up or down by ``change``."""
    _UNPAID_PENDING.inc(change)


def registry() -> CollectorRegistry:
    """What ``/metrics`` shows: this process's metrics, or every worker's in multiprocess mode."""
    if not _MULTIPROCESS:
        return _REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return merged


def mark_process_dead() -> None:
    """At a worker's shutdown: its in-flight gauge no longer counts (multiprocess mode)."""
    if _MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())


def multiprocess_dir_for_workers(environ: dict[str, str] | Any = os.environ) -> str:
    """For ``--workers N``: a fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` (kept if
    already set), removed when this process exits. Call it before the workers start."""
    if current := environ.get(MULTIPROC_ENV):
        return str(current)
    path = tempfile.mkdtemp(prefix="maritaca-chains-metrics-")
    environ[MULTIPROC_ENV] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _networks(entries: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def add_metrics_route(app: FastAPI, settings: ServerSettings,
                      check: Callable[[Request], Any]) -> None:
    """``GET /metrics`` behind ``check`` (the access guard), except for clients whose
    address is in ``MARITACA_CHAINS_METRICS_ALLOW`` (addresses or CIDRs: the scraper)."""
    allowed = _networks(settings.metrics_allow)

    async def guard(request: Request) -> None:
        client = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            address = None
        if address is not None and any(address in network for network in allowed):
            return
        result = check(request)
        if inspect.isawaitable(result):
            await result

    @app.get(METRICS_PATH, include_in_schema=False, dependencies=[Depends(guard)])
    def metrics() -> Response:
        return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
