"""The emulator's options and its mutable state (queue, records, caches), thread-safe.

The ASGI app runs on the server thread's loop; tests call ``enqueue``/``reset``/``requests``
from their own thread, hence the lock.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._records import RecordedRequest
from ._replies import reply_text
from ._scenarios import FAULTS, Scenario
from ._text import prompt_token_counts

__all__ = ["EmulatorConfig", "EmulatorState"]

FirstDelta = Literal["", "alternate"] | None


@dataclass(frozen=True)
class EmulatorConfig:
    """Options of :class:`~maritaca.testing.MaritacaEmulator` (see its docstring)."""

    api_key: str | None = "test-key"
    reply: str | None = None
    reply_tokens: int = 40
    token_delay: float = 0.0
    first_token_delay: float = 0.0
    fault_rate: float = 0.0
    fault_seed: int = 0
    faults: tuple[str | Scenario, ...] = FAULTS
    model_name_suffix: str = "-2026-01-06"
    first_delta_content: FirstDelta = "alternate"
    max_records: int = 100_000
    fault_scenarios: tuple[Scenario, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        made = tuple(f if isinstance(f, Scenario) else Scenario.fault(f) for f in self.faults)
        object.__setattr__(self, "fault_scenarios", made)
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.fault_rate and not made:
            raise ValueError("fault_rate > 0 needs at least one fault")
        if self.reply_tokens < 0:
            raise ValueError("reply_tokens must be >= 0")


class EmulatorState:
    """Scenario queue, request records, the fault RNG and the prompt-prefix cache."""

    _PREFIX_CACHE_MAX = 200_000

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._queue: deque[Scenario] = deque()
        self._records: deque[RecordedRequest] = deque(maxlen=config.max_records)
        self._prefixes: set[bytes] = set()
        self._rng = random.Random(config.fault_seed)
        self._streams = 0

    # --- called from tests ---------------------------------------------------------------
    def enqueue(self, scenarios: Sequence[Scenario]) -> None:
        with self._lock:
            self._queue.extend(scenarios)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._records.clear()
            self._prefixes.clear()
            self._rng = random.Random(self.config.fault_seed)
            self._streams = 0

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def expected_text(self, messages: Sequence[Mapping[str, Any]],
                      reply_tokens: int | None = None) -> str:
        n = self.config.reply_tokens if reply_tokens is None else reply_tokens
        return "".join(reply_text(messages, self.config.reply, n))

    # --- called from the app -------------------------------------------------------------
    def record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._records.append(rec)

    def next_scenario(self) -> Scenario | None:
        """The next queued scenario, else (with ``fault_rate``) maybe a random fault."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            rate = self.config.fault_rate
            if rate and self._rng.random() < rate:
                return self._rng.choice(self.config.fault_scenarios)
        return None

    def next_stream_index(self) -> int:
        with self._lock:
            self._streams += 1
            return self._streams - 1

    def prompt_usage(self, messages: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """``(prompt_tokens, cached_tokens)``: the cached part is the longest message
        prefix of this prompt that an earlier request already sent."""
        counts = prompt_token_counts(messages)
        digest = hashlib.blake2b(digest_size=16)
        keys = []
        for m in messages:
            digest.update(json.dumps(m, sort_keys=True, ensure_ascii=False, default=str).encode())
            digest.update(b"\x00")
            keys.append(digest.copy().digest())
        cached = 0
        with self._lock:
            for key, count in zip(keys, counts, strict=True):
                if key in self._prefixes:
                    cached = count
            if len(self._prefixes) > self._PREFIX_CACHE_MAX:
                self._prefixes.clear()
            self._prefixes.update(keys)
        return (counts[-1] if counts else 0), cached
