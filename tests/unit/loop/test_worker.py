"""The reactor loop in-process against `reactor.testing`'s fakes: no PostgreSQL, milliseconds per test.

The fakes replay scripted claims and record what the loop asked for; what the SQL does with those calls is
tested against PostgreSQL in tests/integration/test_store.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg
import pytest

from reactor.batch import ClaimResult
from reactor.control import JobConfig
from reactor.enrich import Analysis, Enricher, ItemError
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.store import SchemaMissing
from reactor.testing import FakeListener, InMemoryStore, make_claim
from reactor.wakeup import Doorbell
from reactor.worker import Options, Reactor

FAST = {"poll_s": 30.0, "max_wait_ms": 1.0, "heartbeat_s": 30.0, "db_retry_base_s": 0.001}


class SlowSentiment(StandInSentiment):
    """Takes `seconds` for a batch holding a text with "slow" in it (the warm-up stays fast)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, texts):  # type: ignore[no-untyped-def]
        if any("slow" in t for t in texts):
            time.sleep(self.seconds)
        return super().predict(texts)


class Harness:
    """A running Reactor over an InMemoryStore and a FakeListener; stops it on exit."""

    def __init__(self, store: InMemoryStore, *, enricher: Enricher | None = None, probe: bool = True, **opt: float):
        self.store, self.listener = store, FakeListener()
        if probe:
            store.echo = None  # set once the reactor exists: probes come back through the fake listener
        options = Options(**{**FAST, **opt})  # type: ignore[arg-type]
        doorbell = Doorbell(store, rechecks_s=(0.005, 0.01, 0.02), probe_timeout_s=0.05)
        self.reactor = Reactor(
            store,
            self.listener,
            enricher or Enricher(StandInSentiment(), StandInZeroShot()),
            worker_id="w1",
            job_key="feedback_analysis",
            options=options,
            doorbell=doorbell,
        )
        if probe:
            store.echo = self.reactor
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.reactor.run())
        await until(self.listener.connected.is_set)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reactor.request_stop("test")
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def wakeups(self, by: str) -> float:
        return self.reactor.metrics.registry.get_sample_value("reactor_wakeups_total", {"by": by}) or 0.0


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 10))


def analysed_ids(store: InMemoryStore) -> list[int]:
    return [r.feedback_id for _, results in store.completes for r in results if isinstance(r, Analysis)]


def test_drains_scripted_batches_in_order_then_sleeps_armed():
    async def go():
        store = InMemoryStore()
        store.script(make_claim("fast app", "slow app", job_id=1), make_claim("great price", job_id=2))
        async with Harness(store) as h:
            await until(lambda: store.count("complete") == 2 and store.armed)
            assert [c.job_id for c, _ in store.completes] == [1, 2]
            assert analysed_ids(store) == [1, 2, 1]
            assert h.reactor.batches == 2 and h.reactor.rows == 3
        assert "worker_gone" in store.calls and not store.armed

    run(go())


def test_paused_reactor_claims_nothing_and_a_resume_notification_drains_the_backlog():
    async def go():
        store = InMemoryStore(config=JobConfig(run_next_job=False))
        store.script(make_claim("waiting while paused"))
        async with Harness(store) as h:
            await asyncio.sleep(0.05)
            assert store.count("claim") == 0 and not store.armed  # paused: no claim, writers need not wake us
            assert h.reactor.state == "paused"
            store.config = JobConfig()
            h.listener.control("feedback_analysis|0")
            await until(lambda: store.count("complete") == 1)
            assert h.reactor.state == "running"

    run(go())


def test_control_messages_for_other_keys_are_ignored():
    async def go():
        store = InMemoryStore(config=JobConfig(run_next_job=False))
        async with Harness(store) as h:
            reads = store.count("read_config")
            h.listener.control("someone_else|0")
            await asyncio.sleep(0.02)
            assert store.count("read_config") == reads

    run(go())


def test_sigterm_past_the_grace_period_gives_the_batch_back():
    async def go():
        store = InMemoryStore()
        store.script(make_claim("a slow model call"))
        async with Harness(store, enricher=Enricher(SlowSentiment(0.3), StandInZeroShot()), grace_s=0.02) as h:
            await until(lambda: h.reactor.model_call_running)
            h.reactor.request_stop("test")
            await asyncio.wait_for(h.task, 1)  # before the model call returns
            assert h.reactor.model_call_running  # the CLI exits without waiting for it
        assert [c.items[0].text for c in store.released] == ["a slow model call"] and not store.completes

    run(go())


def test_sigterm_within_the_grace_period_finishes_the_batch():
    async def go():
        store = InMemoryStore()
        enricher = Enricher(SlowSentiment(0.1), StandInZeroShot())
        async with Harness(store, enricher=enricher, grace_s=5.0) as h:
            store.script(make_claim("a slow one finishes during shutdown"))
            h.listener.work()
            await until(lambda: bool(h.reactor.in_flight))
            h.reactor.request_stop("test")
            await asyncio.wait_for(h.task, 3)
        assert len(store.completes) == 1 and not store.released

    run(go())


def test_waiting_out_the_grace_period_does_not_spin():
    """After SIGTERM the loop waits for the model call, it does not poll: the finished stop event must not wake
    every wait at once (it did: ~100,000 turns per second of grace)."""

    async def go():
        store = InMemoryStore()
        store.script(make_claim("a slow call outlives the stop request"))  # the start's catch-up claims it
        async with Harness(store, enricher=Enricher(SlowSentiment(1.0), StandInZeroShot()), grace_s=5.0) as h:
            turns = 0
            past_deadline = h.reactor.pipeline._past_deadline

            def counted() -> bool:
                nonlocal turns
                turns += 1
                return past_deadline()

            h.reactor.pipeline._past_deadline = counted  # type: ignore[method-assign]
            await until(lambda: h.reactor.model_call_running)
            h.reactor.request_stop("test")
            await asyncio.wait_for(h.task, 3)
        assert len(store.completes) == 1
        assert turns <= 5, f"{turns} turns of the wait loop while the model call ran"

    run(go())


def test_a_result_the_database_refuses_is_stored_one_feedback_at_a_time():
    def refuse_feedback_2(claim, results):  # type: ignore[no-untyped-def]
        if any(isinstance(r, Analysis) and r.feedback_id == 2 for r in results):
            raise psycopg.errors.NumericValueOutOfRange("value out of range")

    async def go():
        store = InMemoryStore(complete_hook=refuse_feedback_2)
        store.script(make_claim("one", "two", "three"))
        async with Harness(store):
            await until(lambda: len(store.completes) == 3)
        by_fid = {results[0].feedback_id: results[0] for _, results in store.completes}
        assert isinstance(by_fid[1], Analysis) and isinstance(by_fid[3], Analysis)
        assert isinstance(by_fid[2], ItemError) and "could not store the result" in by_fid[2].error

    run(go())


def test_transient_failures_of_complete_are_retried():
    async def go():
        store = InMemoryStore()
        store.fail("complete", psycopg.OperationalError("server closed the connection"), times=2)
        store.script(make_claim("retried"))
        async with Harness(store):
            await until(lambda: len(store.completes) == 1)
        assert store.count("complete") == 3

    run(go())


def test_a_transient_claim_error_backs_off_and_the_loop_goes_on():
    async def go():
        store = InMemoryStore()
        store.fail("claim", psycopg.OperationalError("connection refused"))
        store.script(make_claim("after the outage"))
        async with Harness(store) as h:
            await until(lambda: len(store.completes) == 1)
            assert h.reactor.metrics.registry.get_sample_value("reactor_failures_total", {"kind": "database"}) == 1

    run(go())


def test_a_claim_that_only_parked_exhausted_rows_does_not_end_the_drain():
    async def go():
        store = InMemoryStore()
        store.script(ClaimResult(None, parked=60), make_claim("fresh row behind 60 exhausted ones"))
        async with Harness(store) as h:
            await until(lambda: len(store.completes) == 1, timeout=1.0)  # no poll needed (poll_s is 30)
            assert h.reactor.parked == 60

    run(go())


def test_a_notification_wakes_the_armed_reactor_which_disarms_while_busy():
    async def go():
        store = InMemoryStore()
        async with Harness(store) as h:
            # start-up sleep: all its looks done, or one of them (not the notification) finds the new row
            await until(lambda: store.armed and store.count("ready_rows") >= 4)
            store.script(make_claim("new row"))
            h.listener.work()
            await until(lambda: h.wakeups("notify") == 1 and store.armed)
            assert len(store.completes) == 1 and store.calls.index("disarm") > store.calls.index("arm")

    run(go())


def test_rows_committed_before_arming_are_found_by_the_hand_off_look():
    async def go():
        store = InMemoryStore()
        async with Harness(store) as h:
            await until(lambda: store.armed and store.count("ready_rows") >= 4)  # start-up sleep: all looks done
            store.script(ClaimResult(), make_claim("committed while the flag was down"))
            store.ready.append(True)  # the look right after arming finds it
            h.reactor.doorbell.kick()  # end this sleep: drain (nothing), arm, look
            await until(lambda: h.wakeups("handoff") == 1)
            assert len(store.completes) == 1 and h.wakeups("recheck") == 0

    run(go())


def test_a_missed_notification_is_found_by_a_recheck_and_counted():
    async def go():
        store = InMemoryStore()
        async with Harness(store) as h:
            await until(lambda: store.armed and store.count("ready_rows") >= 4)
            store.script(ClaimResult(), make_claim("its writer read the flag just before it was set"))
            store.ready.extend([False, False, True])  # hand-off look, first recheck, second recheck
            h.reactor.doorbell.kick()
            await until(lambda: h.wakeups("recheck") == 1)
            assert len(store.completes) == 1 and h.wakeups("notify") == 0

    run(go())


def test_when_notifications_do_not_arrive_the_reactor_polls_and_never_arms(caplog):
    async def go():
        store = InMemoryStore()
        async with Harness(store, probe=False, poll_s=0.05) as h:
            await until(lambda: h.reactor.doorbell.notifications_ok is False)
            store.script(make_claim("found by the poll"))
            await until(lambda: h.wakeups("poll") == 1)
            assert len(store.completes) == 1
        assert store.count("arm") == 0

    with caplog.at_level(logging.WARNING):
        run(go())
    assert any("REACTOR_LISTEN_URL" in str(getattr(r, "fields", {}).get("hint")) for r in caplog.records)


def test_exit_when_idle_stops_once_the_queue_is_empty():
    async def go():
        store = InMemoryStore()
        store.script(make_claim("last one"))
        h = Harness(store, exit_when_idle=True)
        code = await asyncio.wait_for(h.reactor.run(), 2)
        assert code == 0 and len(store.completes) == 1

    run(go())


def test_health_is_down_with_the_fix_when_the_schema_is_missing():
    async def go():
        store = InMemoryStore()
        async with Harness(store) as h:
            ok, info = await h.reactor.health()
            assert ok and info["status"] == "UP"
            store.fail("ping", SchemaMissing("the reactor schema is not installed in this database: run `reactor sql`"))
            ok, info = await h.reactor.health()
            assert not ok and "reactor sql" in str(info["reason"])

    run(go())


def test_the_lease_is_extended_while_models_run():
    async def go():
        store = InMemoryStore()
        store.script(make_claim("a slow long text"))
        async with Harness(store, enricher=Enricher(SlowSentiment(0.2), StandInZeroShot()), lease_s=0.06):
            await until(lambda: len(store.completes) == 1)
        assert len(store.leases) >= 2

    run(go())


@pytest.mark.parametrize("problem", ['batch_size must be an integer from 1 to 10000, not "abc"'])
def test_an_invalid_config_value_is_logged_once(caplog, problem):
    async def go():
        store = InMemoryStore(config=JobConfig(problems=(problem,)))
        async with Harness(store) as h:
            h.listener.control("feedback_analysis|0")
            await until(lambda: store.count("read_config") >= 3)

    with caplog.at_level(logging.WARNING):
        run(go())
    assert [r.getMessage() for r in caplog.records].count("control.invalid_config") == 1


class PickyZeroShot(StandInZeroShot):
    """Cannot score labels longer than 20 characters (as a real model whose max length a hypothesis fills)."""

    def split_labels(self, labels):  # type: ignore[no-untyped-def]
        return [lb for lb in labels if len(lb) <= 20], {lb: "hypothesis too long" for lb in labels if len(lb) > 20}


def test_a_topic_label_the_model_cannot_score_is_reported_once_and_the_rows_still_complete(caplog):
    async def go():
        store = InMemoryStore()
        labels = ("delivery", "a label far longer than the model can take")
        store.script(make_claim("late parcel", labels=labels), make_claim("broken box", labels=labels))
        async with Harness(store, enricher=Enricher(StandInSentiment(), PickyZeroShot())) as h:
            await until(lambda: len(store.completes) == 2)
            assert h.reactor.metrics.registry.get_sample_value("reactor_topics_skipped") == 1
        assert all(isinstance(r, Analysis) for _, results in store.completes for r in results)

    with caplog.at_level(logging.WARNING):
        run(go())
    assert [r.getMessage() for r in caplog.records].count("topics.skipped") == 1
