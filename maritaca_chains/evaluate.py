"""``maritaca-chains eval CASES.yaml``: run cases against chains and gate CI on them.

A cases file (strict: an unknown key is an error naming it)::

    cases:
      - name: conta uma história curta
        chain: story                        # a built-in, or one of --chains-dir
        input: {topic: Brasil}
        config: {temperature: 0}            # optional: model, temperature, max_tokens
        expect:
          contains: [Brasil]                # every string must appear
          not_contains: ["Como modelo"]     # none may appear
          regex: "(?s)^.{20,}$"             # must match (re.search)
          json_schema: {type: object}       # the answer (JSON) must follow it
          max_output_tokens: 400            # all of the run's model calls together
          max_cost_brl: 0.01
          max_seconds: 30

Cases run ``--concurrency`` at a time on the model ``serve`` would use; a progress bar
goes to standard error, a table (case, pass/fail, seconds, tokens, cost in BRL) to
standard output, and the command exits 1 naming every failed case (``--json OUT``
writes the results).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chains import ChainFileError, ChainSpec, chain_specs

from .authoring import served_model
from .ledger import RunAccounts, RunLedger, format_brl
from .settings import ServerSettings

__all__ = ["CasesFile", "CaseResult", "eval_command", "load_cases", "run_cases"]


class CasesFileError(ValueError):
    """A cases file that cannot be read or breaks the format (file and key named)."""


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    regex: str | None = None
    json_schema: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_cost_brl: float | None = Field(default=None, ge=0)
    max_seconds: float | None = Field(default=None, gt=0)

    @field_validator("contains", "not_contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    chain: str = Field(min_length=1)
    input: dict[str, Any] | str
    config: RunSettings = Field(default_factory=RunSettings)
    expect: Expect = Field(default_factory=Expect)


class CasesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[Case] = Field(min_length=1)


def load_cases(path: str | Path) -> CasesFile:
    """Read and validate a cases file; CasesFileError names the file and each key."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CasesFileError(f"{path}: cannot read the cases file: {exc}") from exc
    try:
        cases = CasesFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(file)'}: "
            f"{'unknown key: remove it or fix its spelling' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors(include_url=False))
        raise CasesFileError(f"{path}: {problems}") from exc
    names = [c.name for c in cases.cases]
    if duplicated := sorted({n for n in names if names.count(n) > 1}):
        raise CasesFileError(f"{path}: cases.name: {duplicated} appear more than once: "
                             f"give each case its own name")
    return cases


@dataclass
class CaseResult:
    """One case's outcome: ``failures`` says why it failed (empty: it passed)."""

    name: str
    chain: str
    passed: bool
    seconds: float
    output_tokens: int | None
    input_tokens: int | None
    cost_brl: float | None
    failures: list[str] = field(default_factory=list)
    answer: str = ""


# a case's run is kept in a ledger like a served run's (nothing logged, counted or charged)
_ACCOUNTS = RunAccounts(backend="eval", model="", quotas=None, log=False, metrics=False)


def _checks(case: Case, answer: str, seconds: float, usage: RunLedger) -> list[str]:
    expect, failures = case.expect, []
    for text in expect.contains:
        if text not in answer:
            failures.append(f"does not contain {text!r}")
    for text in expect.not_contains:
        if text in answer:
            failures.append(f"contains {text!r}")
    if expect.regex is not None and not re.search(expect.regex, answer):
        failures.append(f"does not match /{expect.regex}/")
    if expect.json_schema is not None:
        from jsonschema import Draft202012Validator

        try:
            value = json.loads(answer)
        except ValueError:
            failures.append("is not JSON")
        else:
            error = next(iter(Draft202012Validator(expect.json_schema).iter_errors(value)), None)
            if error is not None:
                where = "/".join(map(str, error.path)) or "(answer)"
                failures.append(f"breaks json_schema at {where}: {error.message}")
    if expect.max_output_tokens is not None and usage.output_tokens > expect.max_output_tokens:
        failures.append(f"{usage.output_tokens} output tokens > {expect.max_output_tokens}")
    if expect.max_cost_brl is not None:
        cost = usage.cost_brl
        if cost is None:
            failures.append("cost unknown (the model has no price), max_cost_brl set")
        elif cost > expect.max_cost_brl:
            failures.append(f"cost R$ {cost:.6f} > R$ {expect.max_cost_brl:g}")
    if expect.max_seconds is not None and seconds > expect.max_seconds:
        failures.append(f"{seconds:.1f} s > {expect.max_seconds:g} s")
    return failures


async def _run_case(case: Case, spec: ChainSpec, chain: Runnable[Any, Any]) -> CaseResult:
    ledger = _ACCOUNTS.open(None, case.chain)
    config: RunnableConfig = ledger.config()
    configurable = case.config.model_dump(exclude_none=True)
    if configurable:
        config["configurable"] = configurable
    text_chain = getattr(chain, "text_chain", None) or chain
    started = time.perf_counter()
    parts: list[str] = []
    try:
        value = case.input if isinstance(case.input, dict) else {spec.main_field: case.input}
        async for chunk in text_chain.astream(spec.input_type.model_validate(value), config):
            parts.append(chunk)
    except (ValidationError, ValueError, Exception) as exc:  # a failed run fails the case
        seconds = time.perf_counter() - started
        run = ledger.last
        return CaseResult(case.name, case.chain, False, seconds,
                          run.output_tokens if run else 0, run.input_tokens if run else 0,
                          run.cost_brl if run else None,
                          [f"run failed: {type(exc).__name__}: {exc}"], "".join(parts))
    seconds = time.perf_counter() - started
    answer = "".join(parts)
    run = ledger.last
    assert run is not None  # the run ended: its ledger is closed
    failures = _checks(case, answer, seconds, run)
    return CaseResult(case.name, case.chain, not failures, seconds, run.output_tokens,
                      run.input_tokens, run.cost_brl, failures, answer)


class _Bar:
    """A progress bar on standard error (one line per case when it is not a terminal)."""

    def __init__(self, total: int, err: TextIO) -> None:
        self.total, self.done, self.failed, self.err = total, 0, 0, err
        self.tty = err.isatty()

    def step(self, result: CaseResult) -> None:
        self.done += 1
        self.failed += not result.passed
        if self.tty:
            width = 30
            filled = width * self.done // self.total
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                  f"  {self.failed} failed", end="", file=self.err, flush=True)
            if self.done == self.total:
                print(file=self.err)
        else:
            print(f"[{self.done}/{self.total}] {'pass' if result.passed else 'FAIL'} "
                  f"{result.name}", file=self.err, flush=True)


async def run_cases(cases: CasesFile, specs: dict[str, ChainSpec], settings: ServerSettings,
                    *, concurrency: int = 4, err: TextIO = sys.stderr) -> list[CaseResult]:
    """Every case, ``concurrency`` at a time, on the model ``serve`` would use."""
    unknown = sorted({c.chain for c in cases.cases} - set(specs))
    if unknown:
        raise CasesFileError(f"cases name chains that do not exist: {unknown} (the chains "
                             f"are {sorted(specs)}; add yours with --chains-dir)")
    gate = asyncio.Semaphore(max(1, concurrency))
    bar = _Bar(len(cases.cases), err)
    async with served_model(settings) as served:
        chains = {name: specs[name].build(served.model, context_tokens=served.context_tokens)
                  for name in {c.chain for c in cases.cases}}

        async def one(case: Case) -> CaseResult:
            async with gate:
                result = await _run_case(case, specs[case.chain], chains[case.chain])
            bar.step(result)
            return result

        return list(await asyncio.gather(*(one(c) for c in cases.cases)))


def table(results: Sequence[CaseResult]) -> str:
    """The results as a plain-text table."""
    rows = [("case", "result", "seconds", "tokens", "cost (BRL)")]
    for r in results:
        tokens = "-" if r.output_tokens is None else f"{(r.input_tokens or 0)}+{r.output_tokens}"
        rows.append((r.name, "pass" if r.passed else "FAIL", f"{r.seconds:.2f}", tokens,
                     format_brl(r.cost_brl) if r.cost_brl is not None else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        for why in r.failures:
            lines.append(f"FAIL {r.name}: {why}")
    return "\n".join(lines)


def eval_command(path: str, *, dirs: Sequence[str], concurrency: int,
                 json_out: str | None, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> int:
    """``maritaca-chains eval``: returns the exit code (1 when a case failed)."""
    settings = ServerSettings()
    settings = settings.model_copy(update={"chains_dirs": [*settings.chains_dirs, *dirs]})
    try:
        cases = load_cases(path)
        specs = chain_specs(settings.chains_dirs)
        results = asyncio.run(run_cases(cases, specs, settings, concurrency=concurrency,
                                        err=err))
    except (CasesFileError, ChainFileError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=err)
        return 130
    print(table(results), file=out)
    if json_out:
        Path(json_out).write_text(json.dumps([asdict(r) for r in results], ensure_ascii=False,
                                             indent=2), encoding="utf-8")
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(f"{len(failed)} of {len(results)} cases failed: {', '.join(failed)}", file=out)
        return 1
    print(f"all {len(results)} cases passed", file=out)
    return 0
