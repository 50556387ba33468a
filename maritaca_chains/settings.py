"""Server settings: the one place that reads the environment (and ``.env``).

    MARITACA_API_KEY        key for Maritaca's API; without it the embedded model serves
    MARITACA_BASE_URL       API base URL (default https://chat.maritaca.ai/api)
    MARITACA_BACKEND        auto | local | maritaca  (auto: key -> maritaca, else local)
    MARITACA_MODEL          default model of every chain (default sabia-4)
    MARITACA_CHAINS_HOST / _PORT             where to listen (127.0.0.1:8000)
    MARITACA_CHAINS_API_KEYS                 comma-separated keys clients must send
    MARITACA_CHAINS_ALLOW_PUBLIC             serve a non-loopback host without keys
    MARITACA_CHAINS_ALLOWED_HOSTS            more Host names it answers (loopback + HOST always)
    MARITACA_CHAINS_CORS_ORIGINS             other sites' origins allowed to call it (CORS)
    MARITACA_CHAINS_UI                       mount the Gradio chat at /ui (default true)
    MARITACA_CHAINS_FULL_GC_SECONDS          full GC collections every N seconds, not by count (30; 0: Python's)
    MARITACA_CHAINS_REDIS_URL                Redis for state shared by replicas (e.g. resumable runs)
    MARITACA_CHAINS_RUN_GRACE_SECONDS        cancel a resumable run nobody reads for this long (30)
    MARITACA_CHAINS_RUN_TTL_SECONDS          keep a finished run's events this long (600)
    MARITACA_CHAINS_RUN_MAX_EVENTS           events kept per run, oldest dropped first (40000)
    MARITACA_CHAINS_RUN_MAX_RUNS             runs held at once; beyond, new ones get 503 (200)
    MARITACA_CHAINS_RUN_KEY_SHARE            share of those one access key may hold (0.25; 429)
    MARITACA_CHAINS_METRICS                  Prometheus /metrics and their counting (default true)
    MARITACA_CHAINS_METRICS_ALLOW            addresses/CIDRs that may read /metrics without a key
    MARITACA_CHAINS_RUN_LOG                  one log line per run, maritaca_chains.runs (true)
    MARITACA_CHAINS_RATE_LIMIT               requests per key, limits notation (60/minute; see quotas)
    MARITACA_CHAINS_TOKEN_BUDGET             input+output tokens per key (200000/day; see quotas)
    MARITACA_CHAINS_BATCH_MAX_INPUTS         inputs one LangServe /batch may hold; beyond, 413 (16)
    MARITACA_CHAINS_DIR                      directories of your own chain files, ':'-separated
    MARITACA_CHAINS_MAX_BODY_BYTES           largest request body, and WebSocket frame (8 MiB)
    MARITACA_CHAINS_MAX_HEADER_BYTES         largest request head, line + headers (32 KiB; 431)
    MARITACA_CHAINS_HEADER_TIMEOUT_SECONDS   close a connection without a complete head by then (10)
    MARITACA_CHAINS_MAX_JSON_DEPTH           deepest JSON nesting accepted on any face (32)
    MARITACA_CHAINS_WS_MAX_QUEUED            WebSocket inputs waiting behind the running one (2)
    MARITACA_CHAINS_REDIS_FAIL_OPEN          quotas: serve while Redis is down (false: 503)
    MARITACA_CHAINS_SESSION_SECONDS          a browser login lasts this long (43200: 12 h)
    MARITACA_CHAINS_LOGIN_ATTEMPTS           wrong keys per client address (5/minute; then 429)
    MARITACA_CHAINS_DRAIN_SECONDS            at SIGTERM, let streams finish this long (30; see lifecycle)
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from maritaca import DEFAULT_BASE_URL
from maritaca.models import DEFAULT_MODEL


class Backend(StrEnum):
    """Which model serves the chains."""

    MARITACA = "maritaca"
    LOCAL = "local"


class BackendChoice(StrEnum):
    AUTO = "auto"
    MARITACA = "maritaca"
    LOCAL = "local"


def default_database_url() -> str:
    """Where threads live unless MARITACA_CHAINS_DATABASE_URL says: a SQLite file,
    ``$XDG_DATA_HOME/maritaca-chains/threads.db`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "share")
    return "sqlite:///" + os.path.join(base, "maritaca-chains", "threads.db")


class ServerSettings(BaseSettings):
    """Everything the server can be told, from the environment, ``.env`` or flags."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, validation_alias="MARITACA_API_KEY")
    base_url: str = Field(default=DEFAULT_BASE_URL, validation_alias="MARITACA_BASE_URL")
    backend: BackendChoice = Field(default=BackendChoice.AUTO, validation_alias="MARITACA_BACKEND")
    model: str = Field(default=DEFAULT_MODEL, validation_alias="MARITACA_MODEL")
    host: str = Field(default="127.0.0.1",
                      validation_alias=AliasChoices("MARITACA_CHAINS_HOST", "host"))
    port: int = Field(default=8000, ge=0, le=65535,
                      validation_alias=AliasChoices("MARITACA_CHAINS_PORT", "port"))
    access_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="MARITACA_CHAINS_API_KEYS")
    allow_public: bool = Field(default=False, validation_alias="MARITACA_CHAINS_ALLOW_PUBLIC")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MARITACA_CHAINS_ALLOWED_HOSTS")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MARITACA_CHAINS_CORS_ORIGINS")
    ui: bool = Field(default=True, validation_alias="MARITACA_CHAINS_UI")
    full_gc_seconds: float = Field(default=30.0, validation_alias="MARITACA_CHAINS_FULL_GC_SECONDS")
    log_level: str = Field(default="info", validation_alias="MARITACA_CHAINS_LOG_LEVEL")
    redis_url: SecretStr | None = Field(default=None, validation_alias="MARITACA_CHAINS_REDIS_URL")
    run_grace_seconds: float = Field(default=30.0, gt=0,
                                     validation_alias="MARITACA_CHAINS_RUN_GRACE_SECONDS")
    run_ttl_seconds: float = Field(default=600.0, gt=0,
                                   validation_alias="MARITACA_CHAINS_RUN_TTL_SECONDS")
    run_max_events: int = Field(default=40_000, ge=10,
                                validation_alias="MARITACA_CHAINS_RUN_MAX_EVENTS")
    run_max_runs: int = Field(default=200, ge=1, validation_alias="MARITACA_CHAINS_RUN_MAX_RUNS")
    run_key_share: float = Field(default=0.25, gt=0, le=1,
                                 validation_alias="MARITACA_CHAINS_RUN_KEY_SHARE")
    metrics: bool = Field(default=True, validation_alias="MARITACA_CHAINS_METRICS")
    metrics_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MARITACA_CHAINS_METRICS_ALLOW")
    run_log: bool = Field(default=True, validation_alias="MARITACA_CHAINS_RUN_LOG")
    rate_limit: str | None = Field(default=None, validation_alias="MARITACA_CHAINS_RATE_LIMIT")
    token_budget: str | None = Field(default=None,
                                     validation_alias="MARITACA_CHAINS_TOKEN_BUDGET")
    batch_max_inputs: int = Field(default=16, ge=1,
                                  validation_alias="MARITACA_CHAINS_BATCH_MAX_INPUTS")
    # every *.yaml there is a chain named after its file (serve --chains-dir adds more)
    chains_dirs: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("MARITACA_CHAINS_DIR",
                                                            "chains_dirs"))
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024,
                                validation_alias="MARITACA_CHAINS_MAX_BODY_BYTES")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024,
                                  validation_alias="MARITACA_CHAINS_MAX_HEADER_BYTES")
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias="MARITACA_CHAINS_HEADER_TIMEOUT_SECONDS")
    max_json_depth: int = Field(default=32, ge=4, le=500,
                                validation_alias="MARITACA_CHAINS_MAX_JSON_DEPTH")
    ws_max_queued: int = Field(default=2, ge=0, validation_alias="MARITACA_CHAINS_WS_MAX_QUEUED")
    redis_fail_open: bool = Field(default=False,
                                  validation_alias="MARITACA_CHAINS_REDIS_FAIL_OPEN")
    session_seconds: float = Field(default=12 * 3600.0, gt=0,
                                   validation_alias="MARITACA_CHAINS_SESSION_SECONDS")
    login_attempts: str = Field(default="5/minute",
                                validation_alias="MARITACA_CHAINS_LOGIN_ATTEMPTS")
    drain_seconds: float = Field(default=30.0, ge=0,
                                 validation_alias="MARITACA_CHAINS_DRAIN_SECONDS")
    # the chat chain's threads: a SQLite file (default) or postgresql://... (replicas share)
    database_url: SecretStr = Field(default_factory=lambda: SecretStr(default_database_url()),
                                    validation_alias="MARITACA_CHAINS_DATABASE_URL")
    # the earlier turns' budget in a thread's prompt (unset: the model's context less the
    # answer's budget and the new message)
    history_tokens: int | None = Field(default=None, ge=0,
                                       validation_alias="MARITACA_CHAINS_HISTORY_TOKENS")
    thread_lease_seconds: float = Field(default=30.0, ge=1,
                                        validation_alias="MARITACA_CHAINS_THREAD_LEASE_SECONDS")

    @field_validator("history_tokens", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key", "redis_url", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("access_keys", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("chains_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [d.strip() for d in value.split(":") if d.strip()]
        return value

    @field_validator("login_attempts")
    @classmethod
    def _a_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value.replace("|", ";"))  # ValueError names what is wrong
        return value

    @field_validator("metrics_allow", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        entries = [k.strip() for k in value.split(",") if k.strip()] \
            if isinstance(value, str) else value
        for entry in entries if isinstance(entries, list) else []:
            ipaddress.ip_network(entry, strict=False)  # ValueError names a bad entry
        return entries

    @property
    def runs_per_key(self) -> int | None:
        """Runs in progress one access key may hold (None without keys: one caller)."""
        if not self.access_keys:
            return None
        return max(1, int(self.run_max_runs * self.run_key_share))

    @property
    def backend_in_use(self) -> Backend:
        return choose_backend(self.backend, has_key=self.api_key is not None)

    def check_exposure(self) -> None:
        """Refuse to serve a non-loopback address without access keys, unless allowed."""
        if is_loopback(self.host) or self.access_keys or self.allow_public:
            return
        raise ValueError(
            f"Refusing to listen on {self.host} without access keys: anyone who can reach it "
            f"could spend your Maritaca credits. Set MARITACA_CHAINS_API_KEYS (clients then "
            f"send X-API-Key), or MARITACA_CHAINS_ALLOW_PUBLIC=true behind your own auth.")


def choose_backend(choice: BackendChoice, *, has_key: bool) -> Backend:
    """auto: the real API when a key is set, else the embedded model; or as forced."""
    if choice is BackendChoice.AUTO:
        return Backend.MARITACA if has_key else Backend.LOCAL
    return Backend(choice.value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's own."""
    return host == "localhost" or loopback_address(host)


@lru_cache(maxsize=1024)  # every request asks it of its client's and its Host's address
def loopback_address(host: str) -> bool:
    """Whether ``host`` is a loopback IP address (a name never is)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
