"""The ``maritaca-chains`` command: ``serve [--host H] [--port P] [--workers N]``, ``backend``.

Settings come from the environment or ``.env`` (``settings.ServerSettings``); the flags
override host and port. ``python server.py`` in a clone runs the same ``serve``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import uvicorn

from .connection_limits import BoundedHttpToolsProtocol, bounded_http_protocol
from .settings import ServerSettings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maritaca-chains",
        description="Streaming LCEL chains on Maritaca AI's Sabiá models, served with LangServe.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    serve = commands.add_parser("serve", help="serve every chain over HTTP",
                                description="Serve every chain (LangServe routes, plain "
                                            "text, WebSocket, UI). Settings: environment "
                                            "variables or .env; see the README.")
    serve.add_argument("--host", help="listen address (default MARITACA_CHAINS_HOST or "
                                      "127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default MARITACA_CHAINS_PORT "
                                                "or 8000)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (each starts its own embedded model if used)")
    serve.add_argument("--allow-public", action="store_true",
                       help="serve a non-loopback host without access keys")
    commands.add_parser("backend", help="print which backend serve would use (local or "
                                        "maritaca), from the same settings")
    return parser


def serve(host: str | None = None, port: int | None = None, workers: int = 1,
          allow_public: bool = False) -> None:
    """Run the server in this process (and ``workers`` - 1 more) until interrupted."""
    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items()
                                 if v is not None}
    if allow_public:
        overrides["allow_public"] = True
    settings = ServerSettings(**overrides)
    try:
        settings.check_exposure()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers > 1:
        # each worker builds its app from the environment; pass the flag on through it
        os.environ.update({"MARITACA_CHAINS_ALLOW_PUBLIC": "true"} if allow_public else {})
        # /metrics adds up every worker: prometheus-client's multiprocess mode needs its
        # directory in the environment before the workers import it
        from .metrics import multiprocess_dir_for_workers

        multiprocess_dir_for_workers()
        # the workers' protocol reads its limits from the same environment
        uvicorn.run("maritaca_chains.app:app_factory", factory=True, host=settings.host,
                    port=settings.port, workers=workers, log_level=settings.log_level,
                    http=f"{BoundedHttpToolsProtocol.__module__}:BoundedHttpToolsProtocol",
                    **uvicorn_limits(settings))
    else:
        from .app import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=settings.log_level,
                    http=bounded_http_protocol(settings.max_header_bytes,
                                               settings.header_timeout_seconds),
                    **uvicorn_limits(settings))


def uvicorn_limits(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn's own input limits, from the settings: a WebSocket frame is a body."""
    return {"ws_max_size": settings.max_body_bytes,
            "h11_max_incomplete_event_size": settings.max_header_bytes}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``maritaca-chains`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.workers, args.allow_public)
    elif args.command == "backend":
        print(ServerSettings().backend_in_use.value)
