"""The layers hold: server package -> chains -> maritaca, nothing points upward, and no
package imports another's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# each package, and the packages of ours it may import
LAYERS = {
    "maritaca": set(),
    "chains": {"maritaca"},
    "maritaca_chains": {"chains", "maritaca"},
}
OURS = set(LAYERS)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_points_upward_or_into_private_modules(package: str) -> None:
    problems = []
    for path in _sources(package):
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] not in OURS or parts[0] == package:
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if parts[0] not in LAYERS[package]:
                problems.append(f"{where} (upward)")
            elif any(p.startswith("_") for p in parts[1:]):
                problems.append(f"{where} (private)")
    assert not problems, "\n".join(problems)


def test_entry_points_tests_and_benchmarks_use_public_names_only() -> None:
    problems = []
    for path in [ROOT / "server.py", *sorted((ROOT / "bench").glob("*.py"))]:
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] in OURS and any(p.startswith("_") for p in parts[1:]):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not problems, "\n".join(problems)


def test_no_module_is_a_monolith() -> None:
    long = {str(p.relative_to(ROOT)): n for package in LAYERS for p in _sources(package)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"modules over 450 lines, split them by concern: {long}"
