"""Debounce wake-ups into batches: claim as soon as a full batch is waiting, or `max_wait` after the first
wake-up, or on the poll fallback when no wake-up came at all (a lost notification costs one poll interval)."""

from __future__ import annotations

import asyncio
import contextlib
import time


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile (backoffs and periodic tasks end at once on SIGTERM)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class Debouncer:
    def __init__(self) -> None:
        self._pending = 0
        self._event = asyncio.Event()

    def notify(self, count: int = 1) -> None:
        """Record `count` wake-ups (one per committed transaction that queued work)."""
        self._pending += count
        self._event.set()

    @property
    def pending(self) -> int:
        return self._pending

    async def wait(self, *, batch_size: int, max_wait_s: float, poll_s: float) -> str:
        """Return "full", "timer" or "poll" once a claim is worth trying; resets the pending count."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=poll_s)
        except TimeoutError:
            self._reset()
            return "poll"
        deadline = time.monotonic() + max_wait_s
        while self._pending < batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), timeout=left)
            except TimeoutError:
                break
        reason = "full" if self._pending >= batch_size else "timer"
        self._reset()
        return reason

    def _reset(self) -> None:
        self._pending = 0
        self._event.clear()
