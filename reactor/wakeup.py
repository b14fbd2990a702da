"""The wake-up protocol, the reactor's half (the writers' half is in sql/triggers.sql).

A NOTIFY costs every writer a database-wide lock held through its commit's WAL flush, so writers notify only
while some reactor is armed in `reactor.sleepers`. A reactor arms just before it sleeps and disarms once it has
work again: a busy reactor needs no wake-up, it drains until the queue is empty. Writers do not query that
table: each arm and disarm publishes the latest deadline in a sequence, which the trigger reads with a function
call (`reactor.armed()`; PgStore.arm/disarm).

The race it must close: a writer reads the flag just before the reactor's arm commits, then commits its row
after the reactor's last look at the queue. So after arming the reactor looks again at once (the hand-off), then
on a short decaying schedule (a writer's transaction usually lasts milliseconds), then every poll interval as
the last net. Every wake-up is counted by what found the work (`reactor_wakeups_total{by=...}`): `notify`,
`handoff`, and the two that mean a notification was missed, `recheck` and `poll`.

A killed reactor's flag expires after `ttl_s` (a sleeping reactor re-arms every third of it), so writers never
notify for long on behalf of the dead; each reactor has its own row, so a dead one never hides the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from reactor import logs
from reactor.batching import Debouncer
from reactor.ports import Store

log = logging.getLogger("reactor.wakeup")
PROBE_PREFIX = "probe:"
RECHECKS_S = (0.01, 0.05, 0.25, 1.0)  # after the hand-off, before falling back to the poll
ARM_TTL_S = 30.0


class Doorbell:
    """Arms, re-checks and waits; `ring` is called for every notification on the work channel."""

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = ARM_TTL_S,
        rechecks_s: tuple[float, ...] = RECHECKS_S,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.store = store
        self.ttl_s, self.rechecks_s, self.probe_timeout_s = ttl_s, rechecks_s, probe_timeout_s
        self.debouncer = Debouncer()
        self.armed = False
        self.notifications_ok: bool | None = None  # None until a probe answered
        self._probe: tuple[str, asyncio.Event] | None = None

    # --- notifications ------------------------------------------------------------------------------------

    def ring(self, payload: str = "") -> None:
        """A notification on the work channel: a wake-up, or the answer to our own probe."""
        if payload.startswith(PROBE_PREFIX):
            if self._probe and payload == self._probe[0]:
                self._probe[1].set()
            return
        self.debouncer.notify(1)

    def kick(self) -> None:
        """Look at the queue now (start, resume, reconnect): not a notification, just the end of a sleep."""
        self.debouncer.kick()

    async def probe(self) -> bool:
        """Check that a NOTIFY sent through the work connection reaches the LISTEN connection."""
        payload = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        arrived = asyncio.Event()
        self._probe = (payload, arrived)
        try:
            await self.store.send_probe(payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), self.probe_timeout_s)
        finally:
            self._probe = None
        ok = arrived.is_set()
        if ok != self.notifications_ok:
            if ok:
                logs.event(log, "wakeup.notifications_ok")
            else:
                logs.event(
                    log,
                    "wakeup.notifications_not_delivered",
                    logging.WARNING,
                    waited_s=self.probe_timeout_s,
                    action="polling only: new rows wait up to the poll interval",
                    hint="behind PgBouncer in transaction mode LISTEN needs a session connection: "
                    "set REACTOR_LISTEN_URL to one (direct to PostgreSQL or a session-mode pool); before "
                    "PgBouncer 1.21 also set REACTOR_PREPARED_STATEMENTS=off",
                )
        self.notifications_ok = ok
        if ok:
            self.kick()  # a sleeper that could not arm before may arm now
        return ok

    # --- arming -------------------------------------------------------------------------------------------

    async def arm(self) -> None:
        await self.store.arm(self.ttl_s)
        self.armed = True

    async def disarm(self) -> None:
        if self.armed:
            self.armed = False
            await self.store.disarm()

    # --- sleeping -----------------------------------------------------------------------------------------

    async def sleep(
        self, stop: asyncio.Event, *, poll_s: float, batch_size: int, max_wait_s: float, may_arm: bool
    ) -> str:
        """Wait for work; returns what ended the wait: notify, handoff, recheck, poll, kick or stop."""
        deadline = time.monotonic() + poll_s
        if self.debouncer.pending or self.debouncer.kicked:  # rung while we were busy: go at once
            return await self._debounced(stop, 0.0, batch_size, max_wait_s) or "kick"
        if not (may_arm and self.notifications_ok):
            await self.disarm()
            return await self._debounced(stop, poll_s, batch_size, max_wait_s) or "poll"
        await self.arm()
        if await self.store.ready_rows():
            return "handoff"
        for delay in self.rechecks_s:
            left = deadline - time.monotonic()
            if left <= 0:
                return "poll"
            woke = await self._debounced(stop, min(delay, left), batch_size, max_wait_s)
            if woke:
                return woke
            if await self.store.ready_rows():
                return "recheck"
        while (left := deadline - time.monotonic()) > 0:
            woke = await self._debounced(stop, min(left, self.ttl_s / 3), batch_size, max_wait_s)
            if woke:
                return woke
            if deadline - time.monotonic() > 0:
                await self.arm()  # still asleep: keep the flag from expiring
        return "poll"

    async def _debounced(self, stop: asyncio.Event, wait_s: float, batch_size: int, max_wait_s: float) -> str | None:
        """None when nothing came within `wait_s`; else why we woke (after debouncing a notification)."""
        if stop.is_set():
            return "stop"
        reason = await self.debouncer.wait(batch_size=batch_size, max_wait_s=max_wait_s, poll_s=wait_s)
        if stop.is_set():
            return "stop"
        if reason == "poll":
            return None
        return "kick" if reason == "kick" else "notify"
