"""One access key cannot take every resumable-run slot: each holds at most
``MARITACA_CHAINS_RUN_KEY_SHARE`` of ``MARITACA_CHAINS_RUN_MAX_RUNS`` in progress (429
beyond), and the other keys still start runs. In this process's store and in Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.child_servers import needs_redis, start_redis
from tests.conftest import RunningServer, emulator_model
from tests.test_runs import STORY

HOG, OTHER = "fairness-key-0001", "fairness-key-0002"


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    env = {"MARITACA_CHAINS_UI": False, "MARITACA_CHAINS_API_KEYS": f"{HOG},{OTHER}",
           "MARITACA_CHAINS_RUN_MAX_RUNS": 8, "MARITACA_CHAINS_RUN_KEY_SHARE": 0.25}
    with MaritacaEmulator(reply_tokens=2000, token_delay=0.02) as emu:
        if request.param == "redis":
            with start_redis(tmp_path) as port:
                env["MARITACA_CHAINS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
                app = create_app(ServerSettings(_env_file=None, **env),  # type: ignore[arg-type]
                                 model=emulator_model(emu))
                with RunningServer(app) as running:
                    yield running.url
        else:
            app = create_app(ServerSettings(_env_file=None, **env),  # type: ignore[arg-type]
                             model=emulator_model(emu))
            with RunningServer(app) as running:
                yield running.url


def test_one_key_holds_at_most_its_share_of_the_run_slots(server):
    hog = httpx.Client(base_url=server, headers={"x-api-key": HOG}, timeout=20)
    other = httpx.Client(base_url=server, headers={"x-api-key": OTHER}, timeout=20)
    with hog, other:
        runs = [hog.post("/story/runs", json=STORY) for _ in range(2)]  # 8 * 0.25
        assert [r.status_code for r in runs] == [201, 201]
        refused = hog.post("/story/runs", json=STORY)
        assert refused.status_code == 429, refused.text
        assert "RUN_KEY_SHARE" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) > 0
        # an AI SDK answer is a run too: the same 429, in the caller's language
        chat = {"id": "c", "messages": [{"role": "user", "parts": [
            {"type": "text", "text": "Brasil"}]}]}
        sdk = hog.post("/story/ai-sdk", json=chat)
        assert sdk.status_code == 429, sdk.text
        assert sdk.json()["detail"].startswith("Esta chave de acesso já tem execuções (runs) "
                                               "demais em andamento")
        assert int(sdk.headers["retry-after"]) > 0
        # the other key is not locked out
        assert other.post("/story/runs", json=STORY).status_code == 201
        # a run that ends gives its slot back
        assert hog.delete(runs[0].json()["status_url"]).json()["status"] == "cancelled"
        assert hog.post("/story/runs", json=STORY).status_code == 201
