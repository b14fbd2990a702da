"""What two batches in flight at once (reactor.pipeline) ask of PgStore, against a real PostgreSQL: the
interleavings forced by holding a completing transaction open, never by timing."""

from __future__ import annotations

import asyncio

import psycopg

from reactor.store import PgStore, _complete
from tests.integration.store.test_store import ENRICHER, claim, drain, finish, lock_waiters, with_store
from tests.support.cli import execute
from tests.support.db import analysed, assert_consistent, insert, scalar, waiting, word_counts_of
from tests.support.inprocess import running, until


def test_a_delete_in_batch_n_plus_1_committed_while_batch_n_completes(pg_url):
    """Batch N's complete is open (holding its word-count rows) when a feedback of batch N+1 is deleted and the
    delete commits; N+1's complete, which shares words with N, waits for N, then applies that feedback's delete
    (its result was computed on the old text): no analysis left for it, word totals exact."""
    ids = insert(pg_url, [f"word{i}" for i in range(4)])
    with_store(pg_url, drain)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE feedbacks SET text = 'shared ' || text")  # every row: a re-analysis
    gone = ids[2]

    async def go(store: PgStore) -> None:
        n, n1 = await claim(store, "n", limit=2), await claim(store, "n+1", limit=2)
        assert n is not None and n1 is not None
        assert [i.feedback_id for i in n1.items] == ids[2:]
        results_n1 = ENRICHER.enrich(n1.items, n1.labels)  # computed before the delete, as the model would
        async with store.pool.connection() as conn, conn.transaction():  # batch N's complete, held open
            out = await _complete(conn, n, ENRICHER.enrich(n.items, n.labels), 5, 1.0, store.outbox)
            assert out.analysed == 2
            await asyncio.to_thread(execute, pg_url, f"DELETE FROM feedbacks WHERE id = {gone}")  # commits now
            completing = asyncio.create_task(store.complete(n1, results_n1, max_attempts=5))
            await until(lambda: lock_waiters(pg_url) == 1, what="N+1's complete to wait for N's word rows")
            assert not completing.done()
        out = await completing
        assert (out.analysed, out.deleted) == (1, 1)  # the deleted feedback's old analysis removed
        assert word_counts_of(pg_url, gone) is None
        await drain(store)  # the delete's own queue row: nothing left to apply

    with_store(pg_url, go)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = %s", [gone]) == 0
    assert scalar(pg_url, "SELECT count(*) FROM reactor.word_counts WHERE word = 'word2'") == 0
    assert scalar(pg_url, "SELECT count FROM reactor.word_counts WHERE word = 'shared'") == 3
    assert_consistent(pg_url)


def test_a_stop_committed_between_two_claims(pg_url):
    insert(pg_url, [f"row {i}" for i in range(4)])

    async def go(store: PgStore) -> None:
        first = await claim(store, "first", limit=2)
        assert first is not None
        execute(pg_url, "UPDATE job_configs SET config = config || '{\"run_next_job\": false}'::jsonb")
        assert await claim(store, "second", limit=2) is None  # the gate is in the claim itself
        out = await finish(store, first)  # the batch already in flight still completes
        assert out.analysed == 2
        execute(pg_url, "UPDATE job_configs SET config = config || '{\"run_next_job\": true}'::jsonb")
        assert await drain(store) == 1

    with_store(pg_url, go)
    assert_consistent(pg_url)


def test_a_kill_with_two_batches_in_flight_loses_nothing_and_applies_nothing_twice(pg_url):
    """Two batches claimed, then the reactor dies (no complete, no release): once their leases lapse, their
    rows are claimed again and completed once; a late complete of a dead batch applies nothing."""
    insert(pg_url, [f"killed mid-flight {i} shared" for i in range(6)])

    async def go(store: PgStore) -> None:
        a, b = await claim(store, "a", limit=3), await claim(store, "b", limit=3)
        assert a is not None and b is not None and a.size == b.size == 3
        execute(pg_url, "UPDATE reactor.queue SET claimed_until = now() - interval '1 s'")  # the leases lapse
        execute(pg_url, "UPDATE reactor.job_runs SET lease_until = now() - interval '1 s'")
        assert await drain(store) >= 2  # crashed batches come back apart, in halves
        assert analysed(pg_url) == 6 and scalar(pg_url, "SELECT count(*) FROM reactor.queue") == 0
        assert scalar(pg_url, "SELECT count(*) FROM reactor.job_runs WHERE error LIKE 'lease expired%'") == 2
        late = [await finish(store, a), await finish(store, b)]  # their results arrive after all
        assert [(o.analysed, o.stale) for o in late] == [(0, 3), (0, 3)]

    with_store(pg_url, go)
    assert scalar(pg_url, "SELECT count FROM reactor.word_counts WHERE word = 'shared'") == 6
    assert_consistent(pg_url)


def test_the_loop_with_two_batches_in_flight_analyses_every_row_once(pg_url):
    ids = insert(pg_url, [f"backlog row {i} great app" for i in range(60)])
    execute(pg_url, "UPDATE job_configs SET config = config || '{\"batch_size\": 7}'::jsonb")

    async def go() -> None:
        async with running(pg_url, in_flight=2) as reactor:
            assert reactor.pipeline.depth == 2
            await until(lambda: analysed(pg_url) == len(ids), what="the backlog drained")
            execute(pg_url, f"DELETE FROM feedbacks WHERE id IN ({ids[0]}, {ids[-1]})")
            execute(pg_url, f"UPDATE feedbacks SET text = 'changed text' WHERE id = {ids[1]}")
            await until(lambda: word_counts_of(pg_url, ids[1]) == {"changed": 1, "text": 1} and waiting(pg_url) == 0)
            await until(lambda: reactor.rows >= len(ids) + 3)  # counted once complete has returned, after commit
            assert analysed(pg_url) == len(ids) - 2 and reactor.rows >= len(ids) + 3

    asyncio.run(go())
    assert_consistent(pg_url)
