"""The server's GC policy: full collections on a timer, not by allocation count; start-up
objects frozen out of their walk; and the process's collector as it was once the server
stops (the policy is a server's, the collector the whole process's)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from maritaca_chains.gc_policy import full_collections_on_a_timer


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """Counts the collector's full (generation 2) collections while the test runs."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            seen.append(1)

    assert gc.get_freeze_count() == 0, "a server earlier in this process left the GC frozen"
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)


def allocate(objects: int = 300_000) -> None:
    """What a busy server does to the collector: many container objects that live a
    while (they survive the young collections), then go."""
    kept = [[i] for i in range(objects)]
    del kept


async def test_full_collections_come_from_the_timer_not_from_allocations(full_collections):
    allocate()  # Python's policy: a burst like this one triggers full collections
    assert full_collections, "expected Python's own policy to run a full collection"
    full_collections.clear()
    async with full_collections_on_a_timer(3600):
        allocate()
        assert full_collections == [], "a full collection came by allocation count"
    full_collections.clear()
    async with full_collections_on_a_timer(0.05):
        await asyncio.sleep(0.5)
        assert len(full_collections) >= 2, "the timer ran no full collection"


async def test_start_up_objects_are_out_of_the_walk_while_it_serves(full_collections):
    walked_before = len(gc.get_objects(generation=2))
    async with full_collections_on_a_timer(3600):
        assert gc.get_freeze_count() > 0
        # a full collection now walks what the server allocates, not the modules
        assert len(gc.get_objects(generation=2)) < walked_before / 10
    assert gc.get_freeze_count() == 0
    assert len(gc.get_objects(generation=2)) >= walked_before * 0.9


@pytest.mark.parametrize("seconds", [30, 0])
async def test_the_collector_is_as_it_was_after_the_server_stops(full_collections, seconds):
    before = gc.get_threshold()
    async with full_collections_on_a_timer(seconds):
        assert gc.get_threshold() == (before[:2] + (1_000_000,) if seconds else before)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_overlapping_servers_restore_it_when_the_last_one_stops(full_collections):
    before = gc.get_threshold()
    first, second = full_collections_on_a_timer(30), full_collections_on_a_timer(30)
    await first.__aenter__()
    await second.__aenter__()
    await first.__aexit__(None, None, None)  # the first to start stops first
    assert gc.get_threshold()[2] == 1_000_000 and gc.get_freeze_count() > 0
    await second.__aexit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_someone_elses_freeze_is_left_alone(full_collections):
    gc.freeze()
    try:
        async with full_collections_on_a_timer(0):
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_the_app_leaves_the_collector_as_it_found_it(app, full_collections):
    before = gc.get_threshold()
    async with app.router.lifespan_context(app):
        assert gc.get_threshold()[2] == 1_000_000  # the default: full collections every 30 s
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
