"""Command line of ``python -m maritaca.testing``, and the way back from options to argv."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Sequence
from typing import Any

from ._app import EmulatorApp
from ._runner import ServerThread
from ._scenarios import Scenario
from ._state import EmulatorConfig, EmulatorState

__all__ = ["argv_from_config", "main"]

_FIRST = {"empty": "", "null": None, "alternate": "alternate"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m maritaca.testing",
        description="Serve a Maritaca API emulator on 127.0.0.1 until SIGTERM/SIGINT. "
                    "Prints 'READY <base_url>' once it accepts connections.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--api-key", default="test-key", help="the key to accept (default test-key)")
    p.add_argument("--no-auth", action="store_true", help="accept any or no Authorization")
    p.add_argument("--reply", default=None, help="fixed reply text for every request")
    p.add_argument("--reply-tokens", type=int, default=40)
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between chunks")
    p.add_argument("--first-token-delay", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--faults", default=None,
                   help="comma-separated fault names, or a JSON list of Scenario dicts")
    p.add_argument("--model-name-suffix", default="-2026-01-06")
    p.add_argument("--first-delta-content", choices=sorted(_FIRST), default="alternate")
    p.add_argument("--max-records", type=int, default=100_000,
                   help="records kept for GET /_emulator/requests (oldest dropped)")
    return p


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    extra: dict[str, Any] = {}
    if ns.faults is not None:
        if ns.faults.lstrip().startswith("["):
            extra["faults"] = tuple(Scenario.from_dict(d) for d in json.loads(ns.faults))
        else:
            extra["faults"] = tuple(f.strip() for f in ns.faults.split(",") if f.strip())
    return EmulatorConfig(
        api_key=None if ns.no_auth else ns.api_key, reply=ns.reply,
        reply_tokens=ns.reply_tokens, token_delay=ns.token_delay,
        first_token_delay=ns.first_token_delay, fault_rate=ns.fault_rate,
        fault_seed=ns.fault_seed, model_name_suffix=ns.model_name_suffix,
        first_delta_content=_FIRST[ns.first_delta_content],  # type: ignore[arg-type]
        max_records=ns.max_records,
        **extra,
    )


def argv_from_config(cfg: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> list[str]:
    """The command-line options that rebuild ``cfg`` in a child process."""
    argv = ["--host", host, "--port", str(port),
            "--reply-tokens", str(cfg.reply_tokens), "--max-records", str(cfg.max_records),
            "--token-delay", repr(cfg.token_delay),
            "--first-token-delay", repr(cfg.first_token_delay),
            "--fault-rate", repr(cfg.fault_rate), "--fault-seed", str(cfg.fault_seed),
            "--model-name-suffix=" + cfg.model_name_suffix,
            "--faults", json.dumps([s.to_dict() for s in cfg.fault_scenarios]),
            "--first-delta-content",
            next(k for k, v in _FIRST.items() if v == cfg.first_delta_content)]
    argv += ["--no-auth"] if cfg.api_key is None else ["--api-key=" + cfg.api_key]
    if cfg.reply is not None:
        argv.append("--reply=" + cfg.reply)
    return argv


def main(argv: Sequence[str] | None = None) -> None:
    ns = _parser().parse_args(argv)
    server = ServerThread(EmulatorApp(EmulatorState(config_from_args(ns))), ns.host, ns.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"READY {server.base_url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
