"""The wheel works on its own: built from the repo, installed into a fresh venv, used from a
folder outside the repo, against the emulator; and ``maritaca-chains serve`` streams."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maritaca.testing import MaritacaEmulator
from tests.child_servers import serve

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"

pytestmark = pytest.mark.skipif(not UV.exists(), reason="uv is not in the venv (make test installs it)")


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          timeout=600, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = _run(UV, "build", "--wheel", "--out-dir", out, ROOT)
    (out / "build.log").write_text(build.stdout + build.stderr)
    (built,) = out.glob("maritaca_chains-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel (no extras) and the locked versions of its dependencies."""
    root = tmp_path_factory.mktemp("venv")
    constraints = root / "constraints.txt"
    constraints.write_text(_run(UV, "export", "--frozen", "--no-emit-project", "--no-hashes",
                                "--no-header", "--format", "requirements-txt",
                                cwd=ROOT).stdout)
    env_dir = root / "env"
    _run(UV, "venv", "--python", sys.executable, env_dir)
    _run(UV, "pip", "install", "--python", env_dir / "bin" / "python", "-c", constraints, wheel)
    yield env_dir
    shutil.rmtree(root, ignore_errors=True)


def test_wheel_ships_packages_and_prompts_under_their_own_names(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"maritaca", "maritaca_chains", "chains"}
    assert {"chains/prompts/story.yaml", "chains/prompts/qa.yaml",
            "chains/prompts/summarize.yaml"} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "maritaca-chains = maritaca_chains.cli:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()


def test_wheel_builds_without_deprecations_and_ships_its_license(wheel: Path) -> None:
    # setuptools stops building deprecated metadata (the license table) after 2027-02-18
    log = (wheel.parent / "build.log").read_text()
    assert "DeprecationWarning" not in log, log
    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(next(n for n in archive.namelist()
                                 if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    license_text = next(n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    assert archive.read(license_text).decode().startswith("MIT License")


def _outside_env(emu: MaritacaEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARITACA", "PYTHON"))}
    return {**env, "MARITACA_API_KEY": emu.api_key, "MARITACA_BASE_URL": emu.base_url}


def test_installed_chain_streams_from_outside_the_repo(venv: Path, tmp_path: Path) -> None:
    script = ("from chains import story_chain\n"
              "chunks = list(story_chain.stream({'topic': 'Brasil'}))\n"
              "print(len(chunks), ''.join(chunks)[:40])\n"
              "import chains; print(chains.__file__)\n")
    with MaritacaEmulator(reply_tokens=8) as emu:
        out = _run(venv / "bin" / "python", "-c", script, cwd=tmp_path,
                   env=_outside_env(emu)).stdout.splitlines()
        assert len(emu.requests) == 1 and emu.requests[0].status == 200
    assert int(out[0].split()[0]) > 1, out  # streamed in several chunks
    assert str(venv) in out[-1] and str(ROOT) not in out[-1]  # the installed copy


def test_console_script_serves_and_streams(venv: Path, tmp_path: Path) -> None:
    with MaritacaEmulator(reply_tokens=8) as emu, \
            serve(_outside_env(emu), cwd=tmp_path, log=tmp_path / "server.log",
                  command=[str(venv / "bin" / "maritaca-chains")], timeout=60) as (url, _):
        with httpx.stream("POST", f"{url}/story/stream", json={"input": {"topic": "Brasil"}},
                          timeout=30, trust_env=False) as response:
            body = response.read().decode()
        assert response.status_code == 200
        assert body.count("event: data") > 1 and "event: end" in body
