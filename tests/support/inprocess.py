"""The reactor loop in-process against a real PostgreSQL: PgStore, the real Listener and the stand-in models,
driven by the test's own asyncio loop, so a test can act between two steps of the loop (hold a writer's
transaction open across the arming step, say) instead of waiting on log lines of a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from reactor.db import make_pool
from reactor.enrich import Enricher
from reactor.listener import Listener
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.store import PgStore
from reactor.wakeup import Doorbell
from reactor.worker import Options, Reactor

FAST = Options(poll_s=600.0, max_wait_ms=1.0, heartbeat_s=0.5, lease_s=30.0)


def store_for(url: str, worker_id: str = "test-worker", store_class: type[PgStore] = PgStore) -> PgStore:
    return store_class(
        make_pool(url, max_size=4),
        worker_id=worker_id,
        job_key="feedback_analysis",
        job_name="feedback_analysis",
        outbox=False,
    )


@contextlib.asynccontextmanager
async def running(
    url: str, *, store: PgStore | None = None, rechecks_s: tuple[float, ...] = (0.05, 0.2), **options: Any
) -> AsyncIterator[Reactor]:
    """A started Reactor (its listener connected and its probe answered); stopped on exit."""
    store = store or store_for(url)
    reactor = Reactor(
        store,
        Listener(url, keepalive_s=1.0),
        Enricher(StandInSentiment(), StandInZeroShot()),
        worker_id=store.worker_id,
        job_key="feedback_analysis",
        options=replace(FAST, **options),
        doorbell=Doorbell(store, rechecks_s=rechecks_s),
    )
    task = asyncio.create_task(reactor.run())
    try:
        await until(lambda: reactor.doorbell.notifications_ok is True, what="the notification probe")
        yield reactor
    finally:
        reactor.request_stop("test")
        await asyncio.wait_for(task, 10)


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def wakeups(reactor: Reactor, by: str) -> float:
    return reactor.metrics.registry.get_sample_value("reactor_wakeups_total", {"by": by}) or 0.0
