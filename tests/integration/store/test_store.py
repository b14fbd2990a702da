"""PgStore's transactions in-process against a real PostgreSQL, with races forced by holding a second
connection's transaction open or by running two store calls in a chosen order (issues 12 and 13)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from reactor.batch import Claim, QueueRow
from reactor.control import JobConfig
from reactor.enrich import Enricher
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.sql import q
from reactor.store import PgStore, _complete
from tests.support.cli import execute
from tests.support.db import (
    assert_consistent,
    insert,
    promote,
    scalar,
    store_config_bypassing_validation,
    word_counts_of,
)
from tests.support.inprocess import running, store_for, until
from tests.support.processes import run_cli

ENRICHER = Enricher(StandInSentiment(), StandInZeroShot())


def with_store(url: str, fn: Callable[[PgStore], Awaitable[Any]], worker_id: str = "w") -> Any:
    async def go() -> Any:
        store = store_for(url, worker_id)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def claim(store: PgStore, token: str, limit: int = 10, lease_s: float = 30) -> Claim | None:
    return (await store.claim(token=token, limit=limit, lease_s=lease_s, max_attempts=5)).claim


async def finish(store: PgStore, c: Claim):  # type: ignore[no-untyped-def]
    return await store.complete(c, ENRICHER.enrich(c.items, c.labels), max_attempts=5)


async def drain(store: PgStore) -> int:
    n = 0
    while (c := await claim(store, f"drain-{n}")) is not None:
        await finish(store, c)
        n += 1
    return n


def test_claim_then_complete_applies_each_result_once(pg_url):
    insert(pg_url, ["fast delivery great price", "slow app crashes", None])

    async def go(store: PgStore) -> None:
        c = await claim(store, "a")
        assert c is not None and c.size == 3 and c.labels == []
        first = await finish(store, c)
        again = await finish(store, c)  # a lost commit acknowledgement: completing again changes nothing
        assert (first.analysed, again.analysed, again.stale) == (3, 0, 3)
        assert await claim(store, "b") is None

    with_store(pg_url, go)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue") == 0
    assert scalar(pg_url, "SELECT status FROM jobs") == "completed"
    assert_consistent(pg_url)


def test_a_feedback_leased_by_one_batch_is_left_alone_by_the_next(pg_url):
    (fid,) = insert(pg_url, ["first text"])

    async def go(store: PgStore) -> None:
        a = await claim(store, "a")
        assert a is not None
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE feedbacks SET text = 'second text' WHERE id = %s", [fid])
        assert await claim(store, "b") is None  # its newer row waits for the lease
        await finish(store, a)
        b = await claim(store, "b")
        assert b is not None and b.items[0].text == "second text"
        await finish(store, b)

    with_store(pg_url, go)
    assert word_counts_of(pg_url, fid) == {"second": 1, "text": 1}
    assert_consistent(pg_url)


def _claim_in_open_transaction(conn: psycopg.Connection, token: str) -> Claim:
    """The claim's statements in a transaction the caller commits later (its lease stays invisible till then)."""
    params = {"key": "feedback_analysis", "n": 10, "token": token, "lease": 30}
    params |= {"crashed_only": False, "fresh_only": False, "beside": []}
    rows = [QueueRow(*r) for r in conn.execute(q("claim"), params).fetchall()]
    fids = sorted({r.feedback_id for r in rows})
    texts = dict(conn.execute(q("read_feedbacks"), {"ids": fids}).fetchall())
    job = conn.execute(q("open_job"), {"job_name": "feedback_analysis"}).fetchone()[0]
    conn.execute(q("open_job_run"), {"job_id": job, "token": token, "worker": "w", "rows": len(rows), "lease": 30})
    return Claim.from_rows(token, job, rows, texts, [])


def test_an_older_result_never_lands_after_a_newer_delete(pg_url):
    """Two claims race on one feedback (the first one's lease not committed yet, so invisible to the second's
    check), the newer delete completes first, the row even comes back with its id: the older result is dropped."""
    (fid,) = insert(pg_url, ["the old text"])
    promote(pg_url)
    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url, autocommit=True) as app:
        older = _claim_in_open_transaction(first, "older")  # holds row N, lease uncommitted
        app.execute("DELETE FROM feedbacks WHERE id = %s", [fid])
        assert promote(pg_url) == 1  # row M > N
        with psycopg.connect(pg_url) as second:
            newer = _claim_in_open_transaction(second, "newer")  # takes M: N is locked, its lease unseen
            second.commit()
        first.commit()
        assert older.items and newer.deletes == [fid]
        app.execute("INSERT INTO feedbacks (id, text) VALUES (%s, 'the new text')", [fid])  # row K > M

    async def go(store: PgStore) -> None:
        await finish(store, newer)  # the delete first
        out = await finish(store, older)  # then the result of the older row, computed on the old text
        assert (out.analysed, out.stale) == (0, 1)
        assert word_counts_of(pg_url, fid) is None
        assert await drain(store) == 1  # row K: the new text

    with_store(pg_url, go)
    assert word_counts_of(pg_url, fid) == {"new": 1, "text": 1}
    assert_consistent(pg_url)


def test_truncate_while_a_batch_computes_leaves_no_analysis_behind(pg_url):
    insert(pg_url, ["in flight when the table was truncated", "another one"])

    async def go(store: PgStore) -> None:
        c = await claim(store, "a")
        assert c is not None and c.size == 2
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("TRUNCATE feedbacks")
        out = await finish(store, c)
        assert out.analysed == 0
        await drain(store)

    with_store(pg_url, go)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 0
    assert_consistent(pg_url)


def test_complete_waits_for_an_open_truncate_and_then_drops_its_results(pg_url):
    insert(pg_url, ["analysed long ago"])
    with_store(pg_url, drain)
    insert(pg_url, ["claimed before the truncate"])

    async def go(store: PgStore) -> None:
        c = await claim(store, "a")
        assert c is not None
        truncate = await psycopg.AsyncConnection.connect(pg_url)
        await truncate.execute("TRUNCATE feedbacks")  # holds ACCESS EXCLUSIVE until commit
        completing = asyncio.create_task(finish(store, c))
        await until(lambda: lock_waiters(pg_url) == 1, what="complete to wait for the truncate's lock")
        assert not completing.done()
        await truncate.commit()
        await truncate.close()
        out = await completing
        assert out.analysed == 0
        await drain(store)  # the truncate trigger's delete of the old analysis

    with_store(pg_url, go)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 0
    assert_consistent(pg_url)


def test_a_truncate_that_waits_for_a_complete_still_removes_its_result(pg_url):
    insert(pg_url, ["completed while a truncate waits"])

    async def go(store: PgStore) -> None:
        c = await claim(store, "a")
        assert c is not None
        # complete's own transaction, held open before its commit
        async with store.pool.connection() as conn, conn.transaction():
            out = await _complete(conn, c, ENRICHER.enrich(c.items, c.labels), 5, 1.0, store.outbox)
            assert out.analysed == 1
            truncating = asyncio.create_task(asyncio.to_thread(execute, pg_url, "TRUNCATE feedbacks"))
            await until(lambda: lock_waiters(pg_url) == 1, what="the truncate to wait for complete's locks")
            assert not truncating.done()
        await truncating  # complete committed first: the truncate's trigger sees its result
        await drain(store)

    with_store(pg_url, go)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 0
    assert_consistent(pg_url)


def lock_waiters(url: str) -> int:
    """Sessions of this database waiting for a lock (the other side of a forced interleaving)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    return int(scalar(url, query))  # type: ignore[arg-type]


def test_a_crashed_batch_is_claimed_again_in_halves(pg_url):
    insert(pg_url, [f"row {i}" for i in range(10)])  # with fresh rows too: test_crash_bisection.py

    async def go(store: PgStore) -> list[int]:
        sizes = []
        first = await claim(store, "dies", limit=10)
        assert first is not None and first.size == 10
        token = "dies"
        for round_ in range(4):
            execute(
                pg_url,
                f"UPDATE reactor.queue SET claimed_until = now() - interval '1 second' WHERE claimed_by = '{token}'",
            )
            token = f"retry-{round_}"
            c = await claim(store, token, limit=10)
            assert c is not None
            sizes.append(c.size)
        return sizes

    assert with_store(pg_url, go) == [5, 2, 1, 1]  # only rows of the dead batch, half as many each time


@pytest.mark.parametrize(
    ("config", "running"),
    [
        ('{"run_next_job": true}', True),
        ("{}", True),
        ('{"batch_size": 5}', True),
        ('{"run_next_job": false}', False),
        ('{"run_next_job": "false"}', False),
        ('{"run_next_job": "FALSE"}', False),
        ('{"run_next_job": "true"}', False),
        ('{"run_next_job": 0}', False),
        ('{"run_next_job": 1}', False),
        ('{"run_next_job": null}', False),
        ('{"run_next_job": "no"}', False),
        ('{"run_next_job": "off"}', False),
        ('{"batch_size": 1e5000}', True),
        ("[1, 2]", False),
        ('"run"', False),
        ("null", False),
    ],
)
def test_one_definition_of_stopped_for_the_claim_the_reactor_and_status(pg_url, config, running):
    insert(pg_url, ["waiting"])
    store_config_bypassing_validation(pg_url, config)

    async def go(store: PgStore) -> tuple[bool, bool]:
        cfg = await store.read_config(JobConfig())
        return cfg.run_next_job, await claim(store, "a") is not None

    reactor_reads, claimed = with_store(pg_url, go)
    status = run_cli(pg_url, "status", "--json")
    assert status.returncode == (1 if running else 0), status.stderr  # the claim left its job incomplete
    assert (reactor_reads, claimed, '"state": "running"' in status.stdout) == (running, running, running)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"batch_size": "abc"}', 'batch_size must be an integer from 1 to 10000, not "abc"'),
        ('{"batch_size": 1e5000}', "batch_size must be an integer from 1 to 10000"),
        ('{"max_attempts": 0}', "max_attempts must be an integer from 1 to 100, not 0"),
        ('{"run_next_job": "no"}', 'run_next_job must be true or false, not "no"'),
        ('{"jobs_retention_days": -1}', "jobs_retention_days must be an integer from 1 to 36500, not -1"),
        ("[1]", "config must be a JSON object"),
    ],
)
def test_an_invalid_value_is_refused_where_the_operator_writes_it(pg_url, value, message):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as err:
            conn.execute(
                "UPDATE job_configs SET config = CASE WHEN jsonb_typeof(%s::jsonb) = 'object'"
                " THEN config || %s::jsonb ELSE %s::jsonb END WHERE key = 'feedback_analysis'",
                [value, value, value],
            )
        assert message in err.value.diag.message_primary and "feedback_analysis" in err.value.diag.message_primary
        conn.execute("INSERT INTO job_configs (key, config) VALUES ('another_job', %s::jsonb)", [value])  # free


def test_stop_works_on_an_invalid_stored_config_and_nothing_invalid_unpauses(pg_url):
    store_config_bypassing_validation(pg_url, "[1, 2]")
    assert run_cli(pg_url, "stop").returncode == 0
    assert scalar(pg_url, "SELECT config FROM job_configs WHERE key = 'feedback_analysis'") == {"run_next_job": False}
    store_config_bypassing_validation(pg_url, '{"run_next_job": false, "batch_size": "abc"}')
    insert(pg_url, ["must wait"])
    # an invalid value elsewhere in the row neither blocks `resume` nor makes the reactor run before it
    assert with_store(pg_url, lambda s: claim(s, "a")) is None
    assert run_cli(pg_url, "resume").returncode == 0
    assert with_store(pg_url, lambda s: claim(s, "a")) is not None


def test_reprocess_stale_also_requeues_reindex_only_and_in_flight_rows(pg_url):
    analysed, metadata_only, in_flight = insert(pg_url, ["analysed once", "only its sender changes", "claimed"])
    with_store(pg_url, drain)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE feedbacks SET text = 'claimed, text changed' WHERE id = %s", [in_flight])
    computing = with_store(pg_url, lambda s: claim(s, "computing-with-old-topics"))
    assert computing is not None and computing.labels == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE feedbacks SET sender = 'someone' WHERE id = %s", [metadata_only])  # a 'reindex' row
        conn.execute("INSERT INTO topics (label) VALUES ('delivery'), ('price')")
    out = run_cli(pg_url, "reprocess", "--stale", env=None)
    assert out.returncode == 0, out.stderr

    async def go(store: PgStore) -> None:
        await finish(store, computing)  # completes with the old (empty) topic set
        await drain(store)

    with_store(pg_url, go)
    reference = scalar(pg_url, "SELECT topic_set FROM reactor.feedback_analysis WHERE feedback_id = %s", [analysed])
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE topic_set <> %s", [reference]) == 0
    assert scalar(pg_url, "SELECT count(DISTINCT topic_set) FROM reactor.feedback_analysis") == 1
    assert scalar(
        pg_url, "SELECT topics->0->>'label' FROM reactor.feedback_analysis WHERE feedback_id = %s", [in_flight]
    ) in (
        "delivery",
        "price",
    )
    assert_consistent(pg_url)


def test_a_fresh_row_behind_exhausted_ones_is_not_left_waiting_for_the_poll(pg_url):
    insert(pg_url, [f"exhausted {i}" for i in range(60)])
    promote(pg_url)
    execute(pg_url, "UPDATE reactor.queue SET attempts = 5, last_error = 'model failed'")
    execute(pg_url, """UPDATE job_configs SET config = config || '{"batch_size": 60}'""")

    async def go() -> None:
        async with running(pg_url, poll_s=30.0) as reactor:
            await asyncio.to_thread(insert, pg_url, ["fresh row behind 60 exhausted ones"])
            await until(lambda: reactor.rows >= 1, timeout=10, what="the fresh row, long before the 30 s poll")
            assert reactor.parked == 60

    asyncio.run(go())
    assert scalar(pg_url, "SELECT count(*) FROM reactor.failed") == 60


def test_the_reactor_prunes_jobs_past_the_retention_and_obsolete_tombstones(pg_url):
    ids = insert(pg_url, [f"row {i}" for i in range(5)])
    for fid in ids:  # five batches, five jobs rows
        with_store(pg_url, drain)
        execute(pg_url, f"DELETE FROM feedbacks WHERE id = {fid}")
    with_store(pg_url, drain)
    execute(pg_url, "UPDATE jobs SET updated_at = now() - interval '40 days'")
    execute(pg_url, "UPDATE reactor.tombstones SET deleted_at = now() - interval '2 minutes'")
    assert scalar(pg_url, "SELECT count(*) FROM reactor.tombstones") == 5

    async def go() -> None:
        async with running(pg_url, prune_s=0.1):
            await until(
                lambda: (
                    scalar(pg_url, "SELECT count(*) FROM jobs") == 1
                    and scalar(pg_url, "SELECT count(*) FROM reactor.tombstones") == 0
                ),
                what="the jobs retention (30 days) and the tombstones pruned",
            )

    asyncio.run(go())
    assert scalar(pg_url, "SELECT count(*) FROM reactor.job_runs") == 1  # the newest job is kept with its run


def test_a_row_waiting_behind_another_batchs_lease_is_not_ready(pg_url):
    """A change to a feedback whose earlier row another batch holds cannot be claimed until that batch is done:
    `ready_rows` must not call it ready, or a sleeping reactor hands straight back to an empty claim, in a loop.
    The batch holding the lease claims it next."""
    (fid,) = insert(pg_url, ["first text"])

    async def go(store: PgStore) -> None:
        held = await claim(store, "holder")
        assert held is not None
        execute(pg_url, f"UPDATE feedbacks SET text = 'second text' WHERE id = {fid}")
        assert await store.ready_rows()  # in the inbox: a claim would promote it
        assert await claim(store, "other") is None  # promoted, but its feedback is leased
        assert not await store.ready_rows()
        await finish(store, held)
        assert await store.ready_rows()
        assert await drain(store) == 1

    with_store(pg_url, go)
    assert word_counts_of(pg_url, fid) == {"second": 1, "text": 1}
    assert_consistent(pg_url)
