"""Quotas shared through a real redis-server by two real server processes: one limit,
whichever replica a request reaches.

redis-server (Debian's) and both uvicorn servers listen on 127.0.0.1 at free ports, in a
tmp dir, and are stopped by the fixture; skips without /usr/bin/redis-server.
"""

from __future__ import annotations

import httpx

from maritaca.testing import MaritacaEmulator
from tests.child_servers import needs_redis, redis_cli, start_redis, start_replicas

KEY_1, KEY_2 = "replica-key-0001", "replica-key-0002"
STORY = {"input": {"topic": "Brasil"}}


@needs_redis
def test_two_replicas_enforce_one_shared_limit(tmp_path):
    with MaritacaEmulator(reply_tokens=12) as emu, start_redis(tmp_path) as port, \
            start_replicas(emu, MARITACA_CHAINS_API_KEYS=f"{KEY_1},{KEY_2}",
                           MARITACA_CHAINS_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                           MARITACA_CHAINS_RATE_LIMIT="3/minute",
                           MARITACA_CHAINS_TOKEN_BUDGET="*0002=20/hour") as (a, b):
        one = {"X-API-Key": KEY_1}
        with httpx.Client(timeout=30) as http:
            # three requests, spread over both replicas, use KEY_1's 3/minute
            for url in (a, b, a):
                assert http.post(f"{url}/story/invoke", json=STORY, headers=one
                                 ).status_code == 200
            upstream = len(emu.requests)
            for url in (b, a):
                refused = http.post(f"{url}/story/text", json=STORY, headers=one)
                assert refused.status_code == 429
                assert "Limite de pedidos desta chave de acesso (3 por minuto)" in refused.json()["detail"]
                assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert len(emu.requests) == upstream
            # tokens spent through one replica count on the other
            two = {"X-API-Key": KEY_2}
            assert http.post(f"{a}/story/text", json=STORY, headers=two).status_code == 200
            refused = http.post(f"{b}/story/stream", json=STORY, headers=two)
            assert refused.status_code == 429
            assert "Orçamento de tokens desta chave de acesso (20 por hora, entrada + saída)" in refused.json()["detail"]
            assert len(emu.requests) == upstream + 1
        assert redis_cli(port, "--scan", "--pattern", "maritaca_chains:quota*")  # in Redis
