import asyncio
import time

from reactor.batching import Debouncer


def run(coro):
    return asyncio.run(coro)


def test_poll_when_nothing_arrives():
    async def go():
        return await Debouncer().wait(batch_size=10, max_wait_s=0.01, poll_s=0.05)

    assert run(go()) == "poll"


def test_full_batch_returns_at_once():
    async def go():
        d = Debouncer()
        d.notify(10)
        t = time.monotonic()
        reason = await d.wait(batch_size=10, max_wait_s=5, poll_s=5)
        return reason, time.monotonic() - t, d.pending

    reason, took, pending = run(go())
    assert reason == "full" and took < 1 and pending == 0


def test_partial_batch_waits_for_timer_then_goes():
    async def go():
        d = Debouncer()
        d.notify(1)
        return await d.wait(batch_size=10, max_wait_s=0.05, poll_s=5)

    assert run(go()) == "timer"


def test_wake_ups_during_wait_fill_the_batch():
    async def go():
        d = Debouncer()

        async def feed():
            for _ in range(5):
                await asyncio.sleep(0.005)
                d.notify(1)

        task = asyncio.create_task(feed())
        reason = await d.wait(batch_size=5, max_wait_s=5, poll_s=5)
        await task
        return reason

    assert run(go()) == "full"
