"""The chain author's commands: ``new``, ``check`` and ``run`` (``eval`` is ``evaluate``).

    maritaca-chains new traducao --dir minhas-cadeias
    maritaca-chains check minhas-cadeias/traducao.yaml --render
    echo "Bom dia" | maritaca-chains run traducao --chains-dir minhas-cadeias

Each command uses the model ``serve`` would use (``MARITACA_API_KEY``: Maritaca's API,
or the emulator with ``MARITACA_BASE_URL``; no key: the embedded model). ``run``
streams the answer to standard output as it comes and a map-reduce's progress to
standard error; Ctrl-C closes the upstream request at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from chains import PROGRESS_EVENT, ChainFileError, ChainSpec, chain_specs, load_spec
from chains.chain_runtime import render_messages

from .backend import ServedModel, serve_model
from .settings import ServerSettings

__all__ = ["check_files", "find_spec", "new_chain", "parse_fields", "run_chain", "run_command",
           "served_model"]

TEMPLATE = """\
# {name}: a chain of your own. Edit it, then:
#   maritaca-chains check {name}.yaml --render     (is it valid? what does it send?)
#   maritaca-chains run {name} --chains-dir .       (ask it; stdin fills the main field)
#   maritaca-chains serve --chains-dir .            (every face: /{name}/text, /ui, ...)
#   maritaca-chains eval {name}.cases.yaml --chains-dir .
# Every key is checked: an unknown key, a {{variable}} no input declares or an input no
# message uses is an error naming the key.

# For people (pt-BR): the landing page, the UI's tab and the playground show these.
title: Tradução
description: Traduz um texto para o idioma pedido.
example: {{text: "Bom dia! Como vai você?"}}

# The field a plain text fills (text/WebSocket faces, stdin of `run`).
main: text

# Typed inputs: text, number, integer, boolean or choice. Without a default an input is
# required. label/placeholder/lines shape the UI's form; hidden: true leaves it out.
inputs:
  text:
    type: text
    label: Texto
    description: O texto a traduzir.
    placeholder: "ex.: Bom dia! Como vai você?"
    max_length: 4000
    lines: 4
    examples: ["Bom dia! Como vai você?"]
  target:
    type: text
    label: Idioma de destino
    description: Para qual idioma traduzir.
    default: inglês
    max_length: 40
  tone:
    type: choice
    label: Tom
    description: O registro da tradução.
    default: neutro
    # each value: the words it puts in the prompt and the tokens it adds to the budget
    # (when one value has max_tokens, every value of the input needs one)
    choices:
      neutro: {{text: "um tom neutro", max_tokens: 0}}
      formal: {{text: "um tom formal e cuidadoso", max_tokens: 50}}

# The answer's token budget when the client sets no max_tokens (plus the choices').
max_tokens: 300

# The messages: {{input}} is replaced by the input's value (a choice by its text).
messages:
  - role: system
    content: |
      Você é um tradutor cuidadoso. Traduza o texto do usuário para {{target}}, com
      {{tone}}. Responda só com a tradução.
  - role: user
    content: "{{text}}"

# output: text (the default), or JSON following a JSON Schema, parsed and validated:
# output:
#   json_schema:
#     type: object
#     properties: {{traducao: {{type: string}}}}
#     required: [traducao]
"""

CASES = """\
# Cases for `maritaca-chains eval {name}.cases.yaml --chains-dir .`: each runs the
# chain on its input and checks what came back; the command exits non-zero, naming
# the cases that failed (a CI gate).
cases:
  - name: traduz uma saudação
    chain: {name}
    input: {{text: "Bom dia!", target: inglês}}
    expect:
      not_contains: ["Bom dia"]     # also: contains, regex, json_schema,
      max_output_tokens: 300       # max_cost_brl, max_seconds
"""


# ------------------------------------------------------------------------------ new
def new_chain(name: str, directory: str | Path = ".") -> list[Path]:
    """Write ``DIR/NAME.yaml`` (a working, commented chain) and ``DIR/NAME.cases.yaml``;
    refuses to overwrite. Returns the paths written."""
    folder = Path(directory)
    chain_path = folder / f"{name}.yaml"
    cases_path = folder / f"{name}.cases.yaml"
    for path in (chain_path, cases_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists: choose another name or --dir")
    text = TEMPLATE.format(name=name)
    folder.mkdir(parents=True, exist_ok=True)
    chain_path.write_text(text, encoding="utf-8")
    try:
        load_spec(chain_path)
    except ChainFileError:
        chain_path.unlink()
        raise
    cases_path.write_text(CASES.format(name=name), encoding="utf-8")
    return [chain_path, cases_path]


# ---------------------------------------------------------------------------- check
def check_files(paths: Sequence[str], *, render: bool = False,
                out: TextIO = sys.stdout) -> int:
    """Validate each chain file (a directory: each of its ``*.yaml``, cases files
    left out); print ``ok`` or each problem (file: key: what to do). With ``render``,
    print the messages its example produces. Returns the exit code."""
    failed = 0
    files = [str(p) for path in paths for p in (
        sorted(f for f in Path(path).glob("*.yaml") if not f.name.endswith(".cases.yaml"))
        if Path(path).is_dir() else [Path(path)])]
    for path in files:
        try:
            spec = load_spec(Path(path))
        except ChainFileError as exc:
            failed += 1
            for problem in exc.problems:
                print(f"{exc.path}: {problem}", file=out)
            continue
        print(f"{path}: ok (chain {spec.name!r}, version {spec.version}, "
              f"output {spec.output_kind})", file=out)
        if render and spec.file is not None:
            messages, budget = render_messages(spec.name, spec.file, spec.example)
            print(f"  example input: {json.dumps(spec.example, ensure_ascii=False)}", file=out)
            print(f"  max_tokens: {budget}", file=out)
            for role, content in messages:
                print(f"  --- {role}", file=out)
                for line in content.rstrip("\n").split("\n"):
                    print(f"  {line}", file=out)
    return 1 if failed else 0


# ------------------------------------------------------------------------------ run
@asynccontextmanager
async def served_model(settings: ServerSettings) -> AsyncIterator[ServedModel]:
    """The model ``serve`` would use, started (the embedded model's process) and stopped."""
    served = serve_model(settings)
    if served.local_backend is not None:
        await served.local_backend.astart()
    try:
        yield served
    finally:
        if served.local_backend is not None:
            await served.local_backend.astop()


def find_spec(name_or_path: str, dirs: Sequence[str]) -> ChainSpec:
    """A chain by name (built-ins and ``dirs``) or by the path of its file."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_spec(Path(name_or_path))
    specs = chain_specs(dirs)
    if name_or_path not in specs:
        raise KeyError(f"no chain named {name_or_path!r}: the chains are "
                       f"{', '.join(sorted(specs))} (add yours with --chains-dir DIR or "
                       f"MARITACA_CHAINS_DIR)")
    return specs[name_or_path]


def parse_fields(spec: ChainSpec, pairs: Sequence[str], stdin: TextIO | None) -> Any:
    """``field=value`` arguments (and standard input for the main field) as the chain's
    validated input. ValueError/ValidationError say what is wrong."""
    value: dict[str, Any] = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field:
            raise ValueError(f"{pair!r}: write field=value (fields: "
                             f"{', '.join(spec.input_type.model_fields)})")
        value[field] = text
    if spec.main_field not in value and stdin is not None and not stdin.isatty():
        value[spec.main_field] = stdin.read().rstrip("\n")  # echo's newline is not input
    return spec.input_type.model_validate(value)


class _Progress(AsyncCallbackHandler):
    """A map-reduce's progress, on standard error."""

    def __init__(self, err: TextIO) -> None:
        self.err = err

    async def on_custom_event(self, name: str, data: Any, *, run_id: UUID,
                              **kwargs: Any) -> None:
        if name == PROGRESS_EVENT and isinstance(data, dict):
            stage = f" (round {data.get('round')})" if data.get("round", 1) > 1 else ""
            print(f"map-reduce{stage}: {data.get('done')}/{data.get('total')} parts",
                  file=self.err, flush=True)


async def run_chain(spec: ChainSpec, value: Any, settings: ServerSettings, *,
                    configurable: dict[str, Any], out: TextIO = sys.stdout,
                    err: TextIO = sys.stderr) -> None:
    """Stream ``spec``'s answer to ``value`` to ``out`` (a JSON chain: its JSON text,
    validated at the end)."""
    async with served_model(settings) as served:
        chain = spec.build(served.model, context_tokens=served.context_tokens)
        text_chain = getattr(chain, "text_chain", None) or chain
        config: RunnableConfig = {"callbacks": [_Progress(err)]}
        if configurable:
            config["configurable"] = configurable
        async with aclosing(text_chain.astream(value, config)) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                out.write(chunk)
                out.flush()
        out.write("\n")
        out.flush()


def run_command(name: str, pairs: Sequence[str], *, dirs: Sequence[str],
                model: str | None, temperature: float | None, max_tokens: int | None) -> int:
    """``maritaca-chains run``: returns the exit code (130 on Ctrl-C)."""
    settings = ServerSettings()
    settings = settings.model_copy(update={"chains_dirs": [*settings.chains_dirs, *dirs]})
    try:
        spec = find_spec(name, settings.chains_dirs)
        value = parse_fields(spec, pairs, sys.stdin)
    except ChainFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyError, ValueError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    configurable = {k: v for k, v in {"model": model, "temperature": temperature,
                                      "max_tokens": max_tokens}.items() if v is not None}
    try:
        asyncio.run(run_chain(spec, value, settings, configurable=configurable))
    except KeyboardInterrupt:
        # asyncio.run cancelled the run: its stream, and the upstream request, are closed
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"\nerror: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}"
                         for e in exc.errors(include_url=False))
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)

