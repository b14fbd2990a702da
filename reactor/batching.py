"""Debounce wake-ups into batches: claim as soon as a full batch is waiting, or `max_wait` after the first
wake-up, or on the poll fallback when no wake-up came at all (a lost notification costs one poll interval).
A kick (start, resume, reconnect) ends the wait at once: it is a reason to look, not a notification."""

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
        self._kicked = False
        self._event = asyncio.Event()

    def notify(self, count: int = 1) -> None:
        """Record `count` wake-ups (one per committed transaction that queued work)."""
        self._pending += count
        self._event.set()

    def kick(self) -> None:
        """End the current (or next) wait at once, without debouncing."""
        self._kicked = True
        self._event.set()

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def kicked(self) -> bool:
        return self._kicked

    async def wait(self, *, batch_size: int, max_wait_s: float, poll_s: float) -> str:
        """Return "full", "timer", "kick" or "poll" once a claim is worth trying; resets the pending count."""
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), timeout=poll_s)
            except TimeoutError:
                self._reset()
                return "poll"
        if self._kicked and not self._pending:
            self._reset()
            return "kick"
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
        self._kicked = False
        self._event.clear()
