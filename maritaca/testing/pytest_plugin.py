"""pytest fixtures for the Maritaca emulator.

Enable in a conftest with ``pytest_plugins = ["maritaca.testing.pytest_plugin"]``, then::

    import httpx

    @pytest.mark.maritaca_emulator(token_delay=0.01)     # optional: MaritacaEmulator options
    def test_models(maritaca_emulator):
        r = httpx.get(f"{maritaca_emulator.base_url}/models",
                      headers={"Authorization": f"Bearer {maritaca_emulator.api_key}"})
        assert r.json()["data"][0]["id"] == "sabia-4"

The fixture is synchronous and function-scoped; it works in async tests too (the
server has its own thread and loop).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._emulator import MaritacaEmulator

__all__ = ["maritaca_emulator"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "maritaca_emulator(**options): MaritacaEmulator options for the fixture")


@pytest.fixture
def maritaca_emulator(request: pytest.FixtureRequest) -> Iterator[MaritacaEmulator]:
    """A started :class:`MaritacaEmulator`, stopped after the test."""
    marker = request.node.get_closest_marker("maritaca_emulator")
    with MaritacaEmulator(**(marker.kwargs if marker else {})) as emu:
        yield emu
