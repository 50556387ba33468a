"""The chain author's commands, as a person runs them: real subprocesses of the
``maritaca-chains`` script against the emulator (chosen as ``serve`` chooses: a key and
a base URL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator
from tests.child_servers import wait_until
from tests.conftest import wait_disconnected

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "maritaca_chains"]


def env_for(emu: MaritacaEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARITACA_")}
    return {**env, "MARITACA_API_KEY": emu.api_key, "MARITACA_BASE_URL": emu.base_url,
            **extra}


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, text=True, capture_output=True,
                          env=env, cwd=cwd, timeout=90)


@pytest.fixture
def authored(tmp_path):
    done = cli("new", "traducao", "--dir", str(tmp_path / "mine"))
    assert done.returncode == 0, done.stderr
    return tmp_path / "mine"


def test_new_writes_a_working_chain_and_its_cases(authored):
    assert sorted(p.name for p in authored.iterdir()) == ["traducao.cases.yaml",
                                                          "traducao.yaml"]
    text = (authored / "traducao.yaml").read_text(encoding="utf-8")
    assert text.count("#") > 10  # commented, to edit
    again = cli("new", "traducao", "--dir", str(authored))
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = cli("new", "Tradução!", "--dir", str(authored))
    assert bad.returncode != 0 and "cannot name a chain" in bad.stderr


def test_check_passes_renders_and_names_each_error(authored):
    path = authored / "traducao.yaml"
    ok = cli("check", str(path), "--render")
    assert ok.returncode == 0, ok.stdout
    assert f"{path}: ok" in ok.stdout and "--- system" in ok.stdout
    assert "para inglês, com\n  um tom neutro" in ok.stdout and "max_tokens: 300" in ok.stdout
    broken = authored / "quebrada.yaml"
    broken.write_text(path.read_text(encoding="utf-8").replace("{target}", "{destino}"),
                      encoding="utf-8")
    unknown = authored / "desconhecida.yaml"
    unknown.write_text(path.read_text(encoding="utf-8").replace(
        "max_tokens: 300", "max_tokens: 300\nmodelo: x"), encoding="utf-8")
    bad = cli("check", str(path), str(broken), str(unknown))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert f"{unknown}: modelo: unknown key: remove it or fix its spelling" in lines
    assert any(line.startswith(f"{broken}: messages.0.content: uses {{destino}}")
               for line in lines)
    assert any(line.startswith(f"{path}: ok") for line in lines)
    whole = cli("check", str(authored))  # a directory: its chain files, not its cases
    assert whole.returncode == 1 and "cases.yaml" not in whole.stdout
    assert f"{unknown}: modelo: unknown key" in whole.stdout


def test_run_streams_reads_stdin_for_the_main_field_and_takes_options(authored):
    with MaritacaEmulator(reply_tokens=10) as emu:
        done = cli("run", "traducao", "--chains-dir", str(authored), "tone=formal",
                   "--temperature", "0.2", stdin="Olá, mundo", env=env_for(emu))
        assert done.returncode == 0, done.stderr
        body = emu.requests[-1].body
        assert done.stdout == emu.expected_text(body["messages"]) + "\n"
        assert body["messages"][-1]["content"] == "Olá, mundo"
        assert body["max_tokens"] == 350 and body["temperature"] == 0.2
        cli("run", str(authored / "traducao.yaml"), "text=Oi", "--max-tokens", "42",
            env=env_for(emu))
        assert emu.requests[-1].body["max_tokens"] == 42
        bad = cli("run", "traducao", "--chains-dir", str(authored), "tone=gritado",
                  stdin="x", env=env_for(emu))
        assert bad.returncode == 2 and "tone" in bad.stderr
        missing = cli("run", "nada", stdin="x", env=env_for(emu))
        assert missing.returncode == 2 and "no chain named 'nada'" in missing.stderr


def test_run_a_json_chain_prints_its_json(tmp_path):
    (tmp_path / "ficha.yaml").write_text("""\
title: Ficha
description: Uma ficha.
example: {texto: x}
inputs: {texto: {type: text}}
max_tokens: 100
messages: [{role: user, content: "{texto}"}]
output: {json_schema: {type: object, properties: {nome: {type: string}}, required: [nome]}}
""", encoding="utf-8")
    with MaritacaEmulator() as emu:
        done = cli("run", "ficha", "--chains-dir", str(tmp_path), "texto=O sabiá",
                   env=env_for(emu))
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"nome"}


def test_run_shows_map_reduce_progress_on_stderr():
    # a model outside the catalogue: an 8k context, so 40k characters are split
    text = "\n\n".join("O sabiá canta na palmeira ao amanhecer. " * 10 for _ in range(100))
    with MaritacaEmulator(reply_tokens=10) as emu:
        done = cli("run", "summarize", stdin=text,
                   env=env_for(emu, MARITACA_MODEL="modelo-de-teste"))
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("map-reduce")]
    assert progress and progress[-1].endswith(" parts")
    done_, total = progress[-1].split(": ")[1].split(" ")[0].split("/")
    assert done_ == total and int(total) >= 2
    assert done.stdout.strip() == emu.expected_text(emu.requests[-1].body["messages"])


def _interruptible() -> None:
    """Ctrl-C as a terminal gives it: a test run started in the background (``make test &``
    in a script) has SIGINT ignored, and children inherit that, so Python would ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_run_closes_the_upstream_at_once():
    with MaritacaEmulator(reply_tokens=400, token_delay=0.05) as emu:
        process = subprocess.Popen([*CLI, "run", "story", "topic=Brasil"], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env_for(emu), preexec_fn=_interruptible)
        try:
            first = process.stdout.read(1)  # the answer has started streaming
            assert first
            record = emu.requests[-1]
            assert not record.client_disconnected
            since = time.monotonic()
            process.send_signal(signal.SIGINT)
            wait_disconnected(record, since)
            assert process.wait(10) == 130
            assert "interrupted" in process.stderr.read()
            assert record.chunks_sent < 200
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_eval_passes_fails_names_the_failures_and_writes_json(authored, tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text("""\
cases:
  - name: passa
    chain: traducao
    input: {text: "Bom dia!"}
    expect: {not_contains: ["Bom dia"], max_output_tokens: 300, max_seconds: 60,
             max_cost_brl: 0.1, regex: "\\\\w+"}
  - name: falha
    chain: traducao
    input: "Boa noite"
    expect: {contains: ["uma palavra que não vem"]}
  - name: historia
    chain: story
    input: {topic: Brasil}
    config: {max_tokens: 50}
    expect: {json_schema: {type: object}}
""", encoding="utf-8")
    out = tmp_path / "results.json"
    with MaritacaEmulator(reply_tokens=10) as emu:
        done = cli("eval", str(cases), "--chains-dir", str(authored), "--concurrency", "2",
                   "--json", str(out), env=env_for(emu))
        assert emu.requests[-1].body["max_tokens"] in (50, 300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 of 3 cases failed: falha, historia" in done.stdout
    assert "FAIL falha: does not contain 'uma palavra que não vem'" in done.stdout
    assert "FAIL historia: is not JSON" in done.stdout
    header = done.stdout.splitlines()[0].split()
    assert header == ["case", "result", "seconds", "tokens", "cost", "(BRL)"]
    assert "[3/3]" in done.stderr  # progress
    results = {r["name"]: r for r in json.loads(out.read_text(encoding="utf-8"))}
    assert results["passa"]["passed"] and not results["falha"]["passed"]
    assert results["passa"]["output_tokens"] == 10


def test_eval_of_new_cases_passes_and_a_bad_cases_file_is_named(authored, tmp_path):
    with MaritacaEmulator(reply_tokens=10) as emu:
        done = cli("eval", str(authored / "traducao.cases.yaml"), "--chains-dir",
                   str(authored), env=env_for(emu))
        assert done.returncode == 0, done.stdout + done.stderr
        bad = tmp_path / "bad.yaml"
        bad.write_text("cases:\n  - {name: a, chain: story, input: x, expect: {contain: [y]}}\n",
                       encoding="utf-8")
        refused = cli("eval", str(bad), env=env_for(emu))
    assert refused.returncode == 2
    assert f"{bad}: cases.0.expect.contain: unknown key" in refused.stderr


def test_serve_refuses_to_start_on_a_broken_file(tmp_path):
    (tmp_path / "quebrada.yaml").write_text("title: x\n", encoding="utf-8")
    with MaritacaEmulator() as emu:
        done = cli("serve", "--port", "0", "--chains-dir", str(tmp_path), env=env_for(emu))
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'quebrada.yaml'}: ")
    assert "description: missing" in lines[0]


@pytest.mark.timeout(300)
def test_serve_reload_picks_up_an_edited_chain_file(authored):
    import httpx

    path = authored / "traducao.yaml"
    port = free_port()
    with MaritacaEmulator() as emu:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--chains-dir", str(authored), "--reload"],
            env=env_for(emu, MARITACA_CHAINS_UI="false"), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            def versions() -> dict[str, str]:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                return {c["name"]: c["version"] for c in health["chains"]}

            # a busy machine starts it slowly
            before = wait_until(versions, "the server", 150, process=process)
            path.write_text(path.read_text(encoding="utf-8").replace(
                "title: Tradução", "title: Tradução revista"), encoding="utf-8")
            wait_until(lambda: versions()["traducao"] != before["traducao"],
                       "the edited file's reload", 120, process=process)
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
            assert "Tradução revista" in page
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.local_model
def test_run_without_a_key_uses_the_embedded_model_as_serve_would():
    from maritaca import _local_install, local

    if not local.is_installed():
        pytest.skip("the embedded backend is not installed. " + _local_install.install_hint())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARITACA_")}
    backend = cli("backend", env=env)
    assert backend.stdout.strip() == "local"
    done = cli("run", "story", "topic=Brasil", "--max-tokens", "16", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the tiny model's words, whatever they are


def test_the_readmes_walkthrough_runs_as_written(tmp_path):
    """README, "Your own chain": new, check, run and eval, as a newcomer types them (the
    editor and the long-running serve left out), against the emulator."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Your own chain", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines()
                if line.strip() and not line.startswith(("$EDITOR", "maritaca-chains serve"))]
    assert [c.split(" | ")[-1].split()[1] for c in commands] == ["new", "check", "run", "eval"]
    with MaritacaEmulator(reply_tokens=10) as emu:
        env = env_for(emu, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        for command in commands:
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, text=True,
                                  capture_output=True, timeout=90)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert emu.requests[0].body["messages"][-1]["content"] == "Bom dia! Como vai?"
