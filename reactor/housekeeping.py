"""The reactor's periodic chores, beside the loop and never on its hot path: heartbeats (what `reactor status`
lists), gauges for /metrics and /health, and pruning what would grow forever: `jobs` rows past
`jobs_retention_days` and tombstones no queue row needs, in small batches so writers never wait on it; and
freed heap given back to the OS (reactor.memory); and a VACUUM of the inbox, queue, outbox and analysis table
after every few thousand rows, so a burst (a reprocess, an outbox catch-up) does not leave them grown to its size."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

import psycopg

from reactor import logs
from reactor.batching import sleep_unless
from reactor.control import JobConfig
from reactor.db import TRANSIENT
from reactor.memory import release_free_heap
from reactor.observability import Metrics
from reactor.ports import Listener, Store

log = logging.getLogger("reactor.housekeeping")
PRUNE_BATCH = 1000
VACUUM_EVERY_ROWS = 5000  # rows this process handled between two VACUUMs (store.vacuum_queues)
VACUUM_CHECK_S = 1.0


class Housekeeping:
    def __init__(
        self,
        store: Store,
        listener: Listener,
        metrics: Metrics,
        state: Callable[[], str],
        config: Callable[[], JobConfig],
        handled: Callable[[], int] = lambda: 0,
        *,
        vacuum_every_rows: int = VACUUM_EVERY_ROWS,
        heartbeat_s: float = 5.0,
        gauges_s: float = 2.0,
        prune_s: float = 60.0,
    ) -> None:
        self.store, self.listener, self.metrics, self.state, self.config = store, listener, metrics, state, config
        self.heartbeat_s, self.gauges_s, self.prune_s = heartbeat_s, gauges_s, prune_s
        self.handled, self.vacuum_every_rows = handled, vacuum_every_rows
        self.oldest_ready_s: float | None = None
        self._beat = asyncio.Event()

    def beat_now(self) -> None:
        """Publish a state change (paused, resumed) at once rather than at the next heartbeat."""
        self._beat.set()

    def tasks(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._heartbeat(stop), name="heartbeat"),
            asyncio.create_task(self._gauges(stop), name="gauges"),
            asyncio.create_task(self._prune(stop), name="prune"),
            asyncio.create_task(self._release_memory(stop), name="release-memory"),
            asyncio.create_task(self._vacuum(stop), name="vacuum"),
        ]

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        host, pid = socket.gethostname(), os.getpid()
        while not stop.is_set():
            self._beat.clear()
            with contextlib.suppress(*TRANSIENT, psycopg.errors.UndefinedTable):
                await self.store.heartbeat(self.state(), host, pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_beat_or_stop(stop), self.heartbeat_s)

    async def _wait_beat_or_stop(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._beat.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _gauges(self, stop: asyncio.Event) -> None:
        """Queue/outbox/failed gauges every few seconds (cheap counts)."""
        while not stop.is_set():
            with contextlib.suppress(*TRANSIENT, psycopg.errors.UndefinedTable):
                g = await self.store.gauges()
                self.metrics.queue_depth.set(g.queue)
                self.metrics.failed_rows.set(g.failed)
                self.metrics.outbox_depth.set(g.outbox)
                self.oldest_ready_s = g.oldest_ready_s
            self.metrics.paused.set(1 if self.state() == "paused" else 0)
            self.metrics.notify_queue.set(self.listener.queue_usage)
            await sleep_unless(stop, self.gauges_s)

    async def _vacuum(self, stop: asyncio.Event) -> None:
        """VACUUM the inbox, queue, outbox and analysis table after every `vacuum_every_rows` rows this process
        handled: their dead rows are reused before a burst can grow the tables (autovacuum comes a minute apart)."""
        last = self.handled()
        while not stop.is_set():
            await sleep_unless(stop, VACUUM_CHECK_S)
            done = self.handled()
            if self.vacuum_every_rows and done - last >= self.vacuum_every_rows:
                last = done
                with contextlib.suppress(*TRANSIENT, psycopg.errors.UndefinedTable):
                    if not await self.store.vacuum_queues():
                        logs.event(log, "housekeeping.vacuum_off", reason="this role does not own the reactor tables")
                        return  # autovacuum alone, as before

    async def _release_memory(self, stop: asyncio.Event) -> None:
        """Freed heap back to the OS once a minute, so RSS follows the work rather than its busiest minute."""
        while not stop.is_set():
            await sleep_unless(stop, self.prune_s)
            release_free_heap()

    async def _prune(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_unless(stop, self.prune_s)
            with contextlib.suppress(*TRANSIENT, psycopg.errors.UndefinedTable):
                days = self.config().jobs_retention_days
                while not stop.is_set():
                    removed = await self.store.prune(retention_days=days, batch=PRUNE_BATCH)
                    if not any(removed.values()):
                        break
                    logs.event(log, "housekeeping.pruned", retention_days=days, **removed)
                    await sleep_unless(stop, 0.1)  # small batches, spaced: the application never waits on them
