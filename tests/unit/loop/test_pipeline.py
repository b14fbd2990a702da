"""The pipeline (reactor.pipeline) in-process: K batches in flight, with every interleaving forced by the test
(a model call returns when the test says so, a store call waits for the test's event), never by timing."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from reactor.batch import ClaimResult
from reactor.control import JobConfig
from reactor.enrich import Enricher
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.pipeline import depth_for, model_device
from reactor.testing import HeldSentiment, InMemoryStore, make_claim
from tests.unit.loop.test_worker import Harness, run, until


def held(store: InMemoryStore, model: HeldSentiment, **opt: float) -> Harness:
    return Harness(store, enricher=Enricher(model, StandInZeroShot()), **opt)


def texts(claims) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.items[0].text for c in claims]


def completed(store: InMemoryStore) -> list[str]:
    return texts(c for c, _ in store.completes)


def test_batch_n_plus_1_is_claimed_while_n_is_on_the_model_and_completes_after_it():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("one"), make_claim("two"), make_claim("three"))
        try:
            async with held(store, model, in_flight=2) as h:
                await until(lambda: model.started == [["one"]] and len(h.reactor.in_flight) == 2)
                assert texts(h.reactor.in_flight) == ["one", "two"]  # two claimed while one is on the model
                assert store.count("claim") == 2 and not store.completes
                model.go()  # one returns: it completes, two takes the model, three is claimed
                await until(lambda: completed(store) == ["one"] and model.started == [["one"], ["two"]])
                await until(lambda: texts(h.reactor.in_flight) == ["two", "three"])
                model.go(2)
                await until(lambda: completed(store) == ["one", "two", "three"] and store.armed)
                assert not h.reactor.in_flight and store.most_outstanding == 2
        finally:
            model.open()

    run(go())


def test_one_batch_in_flight_is_the_serial_loop():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("one"), make_claim("two"))
        try:
            async with held(store, model, in_flight=1) as h:
                await until(lambda: model.started == [["one"]])
                await asyncio.sleep(0.02)  # room for a wrong second claim to happen (none may)
                assert store.count("claim") == 1 and texts(h.reactor.in_flight) == ["one"]
                model.go(2)
                await until(lambda: completed(store) == ["one", "two"])
                claims_and_completes = [c for c in store.calls if c in ("claim", "complete")]
                assert claims_and_completes[:4] == ["claim", "complete", "claim", "complete"]
        finally:
            model.open()

    run(go())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_never_more_than_k_batches_in_flight(k):
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(*(make_claim(f"row {i}") for i in range(7)))
        try:
            async with held(store, model, in_flight=k) as h:
                for done in range(1, 8):
                    await until(lambda: len(model.started) == done)  # noqa: B023
                    await until(lambda: len(h.reactor.in_flight) == min(k, 8 - done))  # noqa: B023
                    assert len(store.outstanding) <= k
                    model.go()
                await until(lambda: len(store.completes) == 7)
        finally:
            model.open()
        assert store.most_outstanding == k  # reached, never passed

    run(go())


def test_a_dead_batchs_rows_run_alone_and_every_claim_says_what_is_in_flight():
    """Crash bisection (issue 21) charges a death to a row only if the process held nothing else: the store is
    told the batches already in flight (`beside`), and a claim of a dead batch's rows (`isolated`) is followed
    by no other claim until it is done."""

    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(
            make_claim("fresh"),
            ClaimResult(make_claim("a dead batch's row"), isolated=True),
            make_claim("after it"),
        )
        try:
            async with held(store, model, in_flight=3) as h:
                await until(lambda: len(h.reactor.in_flight) == 2)
                await asyncio.sleep(0.02)  # room for a wrong third claim (none may come while the row runs)
                assert store.count("claim") == 2 and [len(b) for b in store.beside_seen] == [0, 1]
                model.go()  # "fresh" done; the isolated batch still runs: still no claim
                await until(lambda: completed(store) == ["fresh"])
                await asyncio.sleep(0.02)
                assert store.count("claim") == 2
                model.go()
                await until(lambda: completed(store)[:2] == ["fresh", "a dead batch's row"])
                await until(lambda: store.count("claim") >= 3)
                model.go()
                await until(lambda: completed(store) == ["fresh", "a dead batch's row", "after it"])
        finally:
            model.open()

    run(go())


def test_every_batch_in_flight_keeps_its_lease_while_it_waits_for_the_model():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("on the model"), make_claim("waiting its turn"))
        try:
            async with held(store, model, in_flight=2, lease_s=0.03) as h:
                await until(lambda: len(h.reactor.in_flight) == 2)
                tokens = [c.token for c in h.reactor.in_flight]
                await until(lambda: all(store.leases.count(t) >= 2 for t in tokens))
                model.go(2)
                await until(lambda: len(store.completes) == 2)
        finally:
            model.open()

    run(go())


def test_a_stop_committed_between_two_claims_stops_the_claims():
    """The second claim runs after the stop committed: it gets nothing (the gate in the claim), and once the
    reactor has read the stop no claim starts at all, though a finished batch would otherwise look again."""

    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("claimed before the stop"), make_claim("must wait for resume"))
        second_claim = store.hold("claim", call=2)
        try:
            async with held(store, model, in_flight=2) as h:
                await until(lambda: store.count("claim") == 2 and model.started == [["claimed before the stop"]])
                store.config = JobConfig(run_next_job=False)  # the stop commits
                h.listener.control("feedback_analysis|0")
                await until(lambda: h.reactor.state == "paused")
                second_claim.set()
                model.go()
                await until(lambda: completed(store) == ["claimed before the stop"])
                await asyncio.sleep(0.02)
                assert store.count("claim") == 2 and not h.reactor.in_flight
                assert texts(c.claim for c in store.claims) == ["must wait for resume"]
                store.config = JobConfig()
                h.listener.control("feedback_analysis|0")
                model.go()
                await until(lambda: len(store.completes) == 2)
        finally:
            model.open()

    run(go())


def test_sigterm_finishes_both_batches_in_flight_within_the_grace_period():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("on the model"), make_claim("waiting its turn"))
        try:
            async with held(store, model, in_flight=2, grace_s=5.0) as h:
                await until(lambda: len(h.reactor.in_flight) == 2)
                h.reactor.request_stop("test")
                model.go(2)
                await asyncio.wait_for(h.task, 2)
        finally:
            model.open()
        assert completed(store) == ["on the model", "waiting its turn"] and not store.released
        assert store.count("claim") == 2 and not store.outstanding

    run(go())


def test_sigterm_past_the_grace_period_gives_back_both_batches_and_never_starts_the_second():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("on the model"), make_claim("waiting its turn"))
        try:
            async with held(store, model, in_flight=2, grace_s=0.05) as h:
                await until(lambda: len(h.reactor.in_flight) == 2)
                h.reactor.request_stop("test")
                await asyncio.wait_for(h.task, 1)  # the model call still runs: it is abandoned
                assert h.reactor.model_call_running and not h.reactor.in_flight
        finally:
            model.open()
        h.reactor.pipeline.executor.shutdown(wait=True)  # the abandoned call returns; nothing runs after it
        assert sorted(texts(store.released)) == ["on the model", "waiting its turn"] and not store.completes
        assert model.started == [["on the model"]] and not store.outstanding  # the queued call was cancelled

    run(go())


def test_sigterm_finishes_the_batch_whose_model_returns_in_time_and_gives_back_the_other():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("returns in time"), make_claim("outlives the grace period"))
        try:
            async with held(store, model, in_flight=2, grace_s=0.3) as h:
                await until(lambda: len(h.reactor.in_flight) == 2)
                h.reactor.request_stop("test")
                model.go()
                await asyncio.wait_for(h.task, 2)
        finally:
            model.open()
        assert completed(store) == ["returns in time"]
        assert texts(store.released) == ["outlives the grace period"] and not store.outstanding

    run(go())


def test_a_batch_whose_complete_fails_does_not_lose_the_other(caplog):
    def bug_in_first(claim, results):  # type: ignore[no-untyped-def]
        if claim.items[0].text == "its complete hits a bug":
            raise RuntimeError("a bug in complete")

    async def go():
        store, model = InMemoryStore(complete_hook=bug_in_first), HeldSentiment()
        store.script(make_claim("its complete hits a bug"), make_claim("on the model meanwhile"))
        try:
            async with held(store, model, in_flight=2) as h:
                await until(lambda: len(h.reactor.in_flight) == 2)
                model.go()
                await until(lambda: store.count("complete") == 1 and len(h.reactor.in_flight) == 1)
                assert texts(h.reactor.in_flight) == ["on the model meanwhile"]  # not forgotten, nor claimed over
                assert store.count("claim") == 2
                model.go()
                await until(lambda: completed(store) == ["on the model meanwhile"] and not h.reactor.in_flight)
                failures = h.reactor.metrics.registry.get_sample_value
                await until(lambda: failures("reactor_failures_total", {"kind": "unexpected"}) == 1)
        finally:
            model.open()
        (failed,) = (c for c in store.outstanding)  # its rows come back after the lease, like a crash's
        assert failed.endswith(":1") and not store.released

    with caplog.at_level(logging.ERROR):
        run(go())
    assert [r.getMessage() for r in caplog.records].count("reactor.unexpected_error") == 1


def test_the_default_is_serial_on_cpu_and_two_batches_on_cuda():
    cpu = Enricher(StandInSentiment(), StandInZeroShot())
    cuda_model = SimpleNamespace(session=SimpleNamespace(cuda=True), model_id="m", random_weights=True)
    cuda = Enricher(cuda_model, StandInZeroShot())  # type: ignore[arg-type]
    assert (model_device(cpu), depth_for(cpu), depth_for(cpu, 3)) == ("cpu", 1, 3)
    assert (model_device(cuda), depth_for(cuda), depth_for(cuda, 1)) == ("cuda", 2, 1)
    assert Harness(InMemoryStore()).reactor.pipeline.depth == 1


def test_batch_n_plus_1_is_tokenized_while_n_is_on_the_model():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("one"), make_claim("two"))
        try:
            async with held(store, model, in_flight=2):
                await until(lambda: model.started == [["one"]] and model.prepared == [["one"], ["two"]])
                model.go(2)
                await until(lambda: completed(store) == ["one", "two"])
        finally:
            model.open()

    run(go())


def test_the_serial_loop_tokenizes_in_the_model_call():
    async def go():
        store, model = InMemoryStore(), HeldSentiment()
        store.script(make_claim("one"))
        try:
            async with held(store, model, in_flight=1):
                model.go()
                await until(lambda: completed(store) == ["one"])
                assert model.prepared == []  # nothing to overlap: no thread hop
        finally:
            model.open()

    run(go())
