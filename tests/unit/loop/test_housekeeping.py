"""Housekeeping's VACUUM cadence: after every `vacuum_every_rows` rows this process handled, never before."""

from __future__ import annotations

import asyncio

from reactor import housekeeping
from reactor.control import JobConfig
from reactor.housekeeping import Housekeeping
from reactor.observability import Metrics
from reactor.testing import FakeListener, InMemoryStore


def _vacuums_seen(store: InMemoryStore, handled_steps: list[int], every: int) -> list[int]:
    """Run the chores while the handled-rows count takes each value in turn; vacuums counted after each."""

    async def go() -> list[int]:
        handled, seen = [0], []
        chores = Housekeeping(
            store, FakeListener(), Metrics(), lambda: "running", JobConfig, lambda: handled[0],
            vacuum_every_rows=every, heartbeat_s=60, gauges_s=60, prune_s=60,
        )  # fmt: skip
        stop = asyncio.Event()
        tasks = chores.tasks(stop)
        await asyncio.sleep(0.05)  # the chore starts counting from 0 rows
        for rows in handled_steps:
            handled[0] = rows
            await asyncio.sleep(0.05)
            seen.append(store.calls.count("vacuum_queues"))
        stop.set()
        await asyncio.gather(*tasks)
        return seen

    return asyncio.run(go())


def test_the_queue_tables_are_vacuumed_after_every_n_rows_handled(monkeypatch):
    monkeypatch.setattr(housekeeping, "VACUUM_CHECK_S", 0.01)
    seen = _vacuums_seen(InMemoryStore(), [40, 99, 100, 150, 199, 260, 260, 261], every=100)
    assert seen == [0, 0, 1, 1, 1, 2, 2, 2]


def test_a_role_that_may_not_vacuum_is_asked_once(monkeypatch):
    monkeypatch.setattr(housekeeping, "VACUUM_CHECK_S", 0.01)
    assert _vacuums_seen(InMemoryStore(may_vacuum=False), [20, 40, 60], every=10) == [1, 1, 1]
