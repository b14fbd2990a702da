"""The writers' inbox and its promotion into reactor.queue (issue 11): queue ids follow the order in which the
changes committed, whatever order their feedback ids or the promotions' snapshots suggest."""

from __future__ import annotations

import threading

import psycopg

from reactor.sql import q
from tests.support.cli import execute
from tests.support.db import assert_consistent, insert, promote, scalar, wait_until, waiting, word_counts_of
from tests.support.inprocess import store_for


def queued(url: str) -> list[tuple[int, int]]:
    """(queue id, feedback id) of every queue row, in queue order."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [(qid, fid) for qid, fid in conn.execute("SELECT id, feedback_id FROM reactor.queue ORDER BY id")]


def drain(url: str) -> None:
    import asyncio

    async def go() -> None:
        from reactor.enrich import Enricher
        from reactor.nlp.standin import StandInSentiment, StandInZeroShot

        store = store_for(url)
        await store.open()
        try:
            enricher = Enricher(StandInSentiment(), StandInZeroShot())
            while (c := (await store.claim(token="t", limit=50, lease_s=30, max_attempts=5)).claim) is not None:
                await store.complete(c, enricher.enrich(c.items, c.labels), max_attempts=5)
        finally:
            await store.close()

    asyncio.run(go())


def test_a_late_commit_is_promoted_later_and_gets_the_higher_queue_id(pg_url):
    """The writer that took the lower feedback id commits last: it is not skipped, and its queue row comes
    after the one of the change that committed first (the per-feedback id comparison relies on that)."""
    with psycopg.connect(pg_url) as late:
        late_fid = late.execute("INSERT INTO feedbacks (text) VALUES ('committed last') RETURNING id").fetchone()[0]
        (early_fid,) = insert(pg_url, ["committed first"])
        assert late_fid < early_fid
        assert promote(pg_url) == 1  # only the committed change: the open one is invisible
        late.commit()
    assert promote(pg_url) == 1
    assert [fid for _, fid in queued(pg_url)] == [early_fid, late_fid]
    assert scalar(pg_url, "SELECT count(*) FROM reactor.inbox") == 0
    drain(pg_url)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 2
    assert_consistent(pg_url)


def test_a_text_change_committed_after_a_reprocess_row_was_claimed_wins(pg_url):
    """The hazard the inbox closes: a writer's text change is still open while a reprocess row of the same
    feedback is claimed (it reads the old text) and completed. The change is numbered only once it committed,
    so its queue id is the higher one and its analysis replaces the old one (a queue id taken inside the
    writer's transaction would have been the lower one, and the new text's result dropped as stale)."""
    (fid,) = insert(pg_url, ["the old text"])
    drain(pg_url)
    with psycopg.connect(pg_url) as writer:
        writer.execute("UPDATE feedbacks SET text = 'the new text' WHERE id = %s", [fid])
        execute(pg_url, f"INSERT INTO reactor.queue (feedback_id, op, priority) VALUES ({fid}, 'upsert', 2)")
        drain(pg_url)  # the reprocess row: claimed and completed on the old text
        assert word_counts_of(pg_url, fid) == {"old": 1, "text": 1}
        writer.commit()
    drain(pg_url)
    assert word_counts_of(pg_url, fid) == {"new": 1, "text": 1}
    assert_consistent(pg_url)


def test_concurrent_promotions_never_move_a_row_twice(pg_url):
    """A second promotion while one is open skips (no reactor queues behind another's row locks); the next one
    after the commit moves the rest: every change is promoted once, the later ones with higher ids. Without
    the lock, a promotion that reached a row another one deleted first skips it."""
    first_rows = insert(pg_url, ["one", "two", "three"])
    with psycopg.connect(pg_url) as first:
        assert first.execute(q("promote_lock")).fetchone()[0]
        assert first.execute(q("promote"), {"n": 100}).rowcount == 3  # uncommitted
        later_rows = insert(pg_url, ["four", "five"])
        assert promote(pg_url) == 0  # busy: skipped, not waiting
        with psycopg.connect(pg_url) as unlocked:  # the statement alone, past the lock
            moved: list[int] = []
            moving = threading.Thread(target=lambda: moved.append(unlocked.execute(q("promote"), {"n": 100}).rowcount))
            moving.start()
            row_waiters = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            wait_until(lambda: scalar(pg_url, row_waiters) == 1, 10, "a promotion blocked on a row the first moves")
            first.commit()
            moving.join(10)
            unlocked.commit()
    assert moved == [2]
    rows = queued(pg_url)
    assert sorted(fid for _, fid in rows) == first_rows + later_rows  # each change once
    assert {fid for _, fid in rows[:3]} == set(first_rows) and {fid for _, fid in rows[3:]} == set(later_rows)
    drain(pg_url)
    assert_consistent(pg_url)


def test_promotion_moves_at_most_its_chunk_and_the_claims_take_the_rest(pg_url):
    insert(pg_url, [f"row {i}" for i in range(7)])
    with psycopg.connect(pg_url) as conn:
        conn.execute(q("promote_lock"))
        assert conn.execute(q("promote"), {"n": 5}).rowcount == 5
    assert scalar(pg_url, "SELECT count(*) FROM reactor.inbox") == 2
    drain(pg_url)
    assert waiting(pg_url) == 0
    assert_consistent(pg_url)
