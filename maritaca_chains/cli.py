"""The ``maritaca-chains`` command.

- ``serve [--host H] [--port P] [--workers N] [--chains-dir DIR]... [--reload]
  [--forwarded-allow-ips IPS]``
- ``backend``: which model ``serve`` would use: one word on stdout (``maritaca``,
  ``local``, or ``none``: no key and nothing installed to answer) for scripts, and why
  (and what is installed) on stderr for people
- ``new NAME [--dir DIR]``, ``check FILE... [--render]``, ``run CHAIN [field=value]...``,
  ``eval CASES.yaml``: for chain authors (``authoring``, ``evaluate``)

Settings come from the environment or ``.env`` (``settings.ServerSettings``); the flags
override host, port and add chain directories. ``python server.py`` in a clone runs the
same ``serve``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from chains import ChainFileError, chain_specs

from .connection_limits import BoundedHttpToolsProtocol, bounded_http_protocol
from .settings import ServerSettings

# With --workers N, uvicorn's supervisor pings each worker and replaces one that does not
# answer within this time (its default, 5 s, kills workers still importing the stack on a
# busy machine). A worker that hangs for longer is still replaced.
WORKER_HEALTHCHECK_SECONDS = 30

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
    serve.add_argument("--forwarded-allow-ips", metavar="IPS",
                       help="proxies whose X-Forwarded-For/-Proto are trusted, comma-"
                            "separated ('*': any); default FORWARDED_ALLOW_IPS or "
                            "127.0.0.1 (uvicorn's setting)")
    serve.add_argument("--chains-dir", action="append", default=[], metavar="DIR",
                       help="serve every DIR/*.yaml as a chain named after its file "
                            "(repeatable; added to MARITACA_CHAINS_DIR)")
    serve.add_argument("--reload", action="store_true",
                       help="restart when a chain file (or the code) changes: for "
                            "development")
    commands.add_parser("backend", help="print which backend serve would use (maritaca, "
                                        "local, or none), from the same settings, and why")
    new = commands.add_parser("new", help="write a working, commented chain file to edit",
                              description="Write DIR/NAME.yaml (a working, commented chain) "
                                          "and DIR/NAME.cases.yaml (cases for eval).")
    new.add_argument("name", help="the chain's name (its route: /NAME)")
    new.add_argument("--dir", default=".", help="where to write (default: here)")
    check = commands.add_parser("check", help="validate chain files (exit 0 or 1)",
                                description="Validate chain files; print each problem "
                                            "with its file and key.")
    check.add_argument("files", nargs="+", metavar="FILE",
                       help="chain files, or directories of them")
    check.add_argument("--render", action="store_true",
                       help="also show the messages each file's example produces")
    run = commands.add_parser(
        "run", help="run a chain, streaming its answer to standard output",
        description="Run a chain (built-in, from --chains-dir, or a file path) on the model "
                    "serve would use. The main field may come from standard input; "
                    "a map-reduce's progress goes to standard error; Ctrl-C stops the "
                    "upstream request at once.")
    run.add_argument("chain", help="a chain name, or the path of a chain file")
    run.add_argument("fields", nargs="*", metavar="field=value")
    run.add_argument("--chains-dir", action="append", default=[], metavar="DIR")
    run.add_argument("--model", help="which model answers (default: the server's)")
    run.add_argument("--temperature", type=float)
    run.add_argument("--max-tokens", type=int,
                     help="longest answer (default: the chain's own budget)")
    evaluate = commands.add_parser(
        "eval", help="run a cases file; exit 1 naming the cases that failed",
        description="Run every case of CASES.yaml (chain, input, expect: contains, "
                    "not_contains, regex, json_schema, max_output_tokens, max_cost_brl, "
                    "max_seconds) on the model serve would use; print a table; exit 1 "
                    "naming each failed case.")
    evaluate.add_argument("cases", metavar="CASES.yaml")
    evaluate.add_argument("--chains-dir", action="append", default=[], metavar="DIR")
    evaluate.add_argument("--concurrency", type=int, default=4,
                          help="cases run at once (default 4)")
    evaluate.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return parser


def serve(host: str | None = None, port: int | None = None, workers: int = 1,
          allow_public: bool = False, chains_dirs: list[str] | None = None,
          reload: bool = False, forwarded_allow_ips: str | None = None) -> None:
    """Run the server in this process (and ``workers`` - 1 more) until interrupted."""
    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items()
                                 if v is not None}
    if allow_public:
        overrides["allow_public"] = True
    settings = ServerSettings(**overrides)
    if chains_dirs:
        settings = settings.model_copy(
            update={"chains_dirs": [*settings.chains_dirs, *chains_dirs]})
    try:
        settings.check_exposure()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    proxies: dict[str, Any] = {} if forwarded_allow_ips is None else {
        "forwarded_allow_ips": forwarded_allow_ips}
    try:  # a broken chain file stops the start, naming the file: never half a chain
        chain_specs(settings.chains_dirs)
    except ChainFileError as exc:
        sys.exit(f"error: {exc}")
    if workers > 1 or reload:
        # each worker builds its app from the environment: pass the flags on through it
        os.environ["MARITACA_CHAINS_DIR"] = ":".join(settings.chains_dirs)
    if reload:
        os.environ.update({"MARITACA_CHAINS_ALLOW_PUBLIC": "true"} if allow_public else {})
        uvicorn.run("maritaca_chains.app:app_factory", factory=True, host=settings.host,
                    port=settings.port, log_level=settings.log_level, reload=True,
                    reload_dirs=[*settings.chains_dirs, *_code_dirs()],
                    reload_includes=["*.yaml", "*.py"],
                    http=f"{BoundedHttpToolsProtocol.__module__}:BoundedHttpToolsProtocol",
                    **uvicorn_limits(settings), **proxies)
    elif workers > 1:
        # each worker builds its app from the environment; pass the flag on through it
        os.environ.update({"MARITACA_CHAINS_ALLOW_PUBLIC": "true"} if allow_public else {})
        # /metrics adds up every worker: prometheus-client's multiprocess mode needs its
        # directory in the environment before the workers import it
        from .metrics import multiprocess_dir_for_workers

        multiprocess_dir_for_workers()
        # the workers' protocol reads its limits from the same environment
        uvicorn.run("maritaca_chains.app:app_factory", factory=True, host=settings.host,
                    port=settings.port, workers=workers, log_level=settings.log_level,
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
                    http=f"{BoundedHttpToolsProtocol.__module__}:BoundedHttpToolsProtocol",
                    **uvicorn_limits(settings), **proxies)
    else:
        from .app import create_app, quiet_http_client_log
        from .lifecycle.uvicorn_drain import serve as serve_draining  # drains at SIGTERM

        quiet_http_client_log(settings.log_level)
        try:
            app = create_app(settings)
        except ValueError as exc:  # e.g. MARITACA_BACKEND=maritaca without a key
            sys.exit(f"error: {exc}")
        serve_draining(app, host=settings.host, port=settings.port,
                       log_level=settings.log_level,
                       http=bounded_http_protocol(settings.max_header_bytes,
                                                  settings.header_timeout_seconds),
                       **uvicorn_limits(settings), **proxies)


def uvicorn_limits(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn's own input limits, from the settings: a WebSocket frame is a body."""
    return {"ws_max_size": settings.max_body_bytes,
            "h11_max_incomplete_event_size": settings.max_header_bytes}


def _code_dirs() -> list[str]:
    """The packages' folders (``--reload`` also restarts on code edits)."""
    import chains

    from . import __file__ as here

    return [str(Path(here).parent), str(Path(chains.__file__).parent)]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``maritaca-chains`` console script."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # run's field=value pairs may come after its options
    if extra and (args.command != "run" or any("=" not in e or e.startswith("-")
                                                for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.fields = [*args.fields, *extra]
    if args.command == "serve":
        serve(args.host, args.port, args.workers, args.allow_public, args.chains_dir,
              args.reload, args.forwarded_allow_ips)
    elif args.command == "backend":
        from .backend import backend_report

        word, why = backend_report(ServerSettings())
        print(word)
        print(why, file=sys.stderr)
    elif args.command == "new":
        from .authoring import new_chain

        try:
            written = new_chain(args.name, args.dir)
        except (FileExistsError, ChainFileError) as exc:
            sys.exit(f"error: {exc}")
        for path in written:
            print(f"wrote {path}")
    elif args.command == "check":
        from .authoring import check_files

        sys.exit(check_files(args.files, render=args.render))
    elif args.command == "run":
        from .authoring import run_command

        sys.exit(run_command(args.chain, args.fields, dirs=args.chains_dir,
                             model=args.model, temperature=args.temperature,
                             max_tokens=args.max_tokens))
    elif args.command == "eval":
        from .evaluate import eval_command

        sys.exit(eval_command(args.cases, dirs=args.chains_dir, concurrency=args.concurrency,
                              json_out=args.json))
