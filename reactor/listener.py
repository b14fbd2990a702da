"""The dedicated LISTEN connection: hears wake-ups and control messages, nothing else.

It runs no queries but a periodic keep-alive (which also reads `pg_notification_queue_usage()`), so a
half-open connection is noticed within one keep-alive interval. After every (re)connect it calls the handler's
`on_connect`, which makes the reactor run a catch-up pass (rows committed while nobody listened are found) and
probe that notifications sent through the work connection arrive here (behind PgBouncer in transaction mode
they do not: the LISTEN connection then needs its own session URL, REACTOR_LISTEN_URL).
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
from psycopg import sql

from reactor import backoff, logs
from reactor.batching import sleep_unless
from reactor.db import CONNECTION_LOST, explain, with_keepalive
from reactor.ports import ListenHandler
from reactor.sql import q

WORK_CHANNEL = "reactor_work"
CONTROL_CHANNEL = "reactor_control"
log = logging.getLogger("reactor.listener")


class Listener:
    def __init__(self, url: str, *, keepalive_s: float = 10.0, max_backoff_s: float = 30.0) -> None:
        self.url = with_keepalive(url)
        self.keepalive_s, self.max_backoff_s = keepalive_s, max_backoff_s
        self.connected = asyncio.Event()
        self.queue_usage = 0.0
        self.last_ok = time.monotonic()
        self.reconnects = 0

    async def run(self, stop: asyncio.Event, handler: ListenHandler) -> None:
        """Listen until `stop` is set, reconnecting with capped exponential backoff."""
        failures = 0
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="reactor-listener"
                ) as conn:
                    for channel in (WORK_CHANNEL, CONTROL_CHANNEL):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    self.last_ok = time.monotonic()
                    if failures or self.reconnects:
                        logs.event(log, "listener.reconnected", attempts=failures)
                    failures = 0
                    await handler.on_connect()
                    await self._serve(conn, stop, handler)
            except CONNECTION_LOST as exc:
                self.connected.clear()
                failures += 1
                self.reconnects += 1
                delay = backoff.delay(failures, base=0.4, cap=self.max_backoff_s)
                logs.event(
                    log, "listener.disconnected", logging.WARNING, error=explain(exc, self.url), retry_in_s=delay
                )
                await sleep_unless(stop, delay)
        self.connected.clear()

    async def _serve(self, conn: psycopg.AsyncConnection, stop: asyncio.Event, handler: ListenHandler) -> None:
        while not stop.is_set():
            async for note in conn.notifies(timeout=min(self.keepalive_s, 1.0)):
                if note.channel == WORK_CHANNEL:
                    handler.on_work(note.payload)
                else:
                    handler.on_control(note.payload)
                if stop.is_set():
                    return
            if time.monotonic() - self.last_ok >= self.keepalive_s:
                await self._keepalive(conn)

    async def _keepalive(self, conn: psycopg.AsyncConnection) -> None:
        cur = await asyncio.wait_for(conn.execute(q("notification_queue_usage")), self.keepalive_s)
        row = await cur.fetchone()
        self.queue_usage = float(row[0]) if row else 0.0
        self.last_ok = time.monotonic()
        if self.queue_usage > 0.5:
            logs.event(log, "listener.notify_queue_high", logging.WARNING, usage=self.queue_usage)
