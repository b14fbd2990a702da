"""PgStore.vacuum_queues: the reactor helping autovacuum, so a burst through the queue tables, or a reprocess
rewriting the analysis table, does not leave them grown to its size (issue 22)."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.db import scalar
from tests.support.inprocess import store_for
from tests.support.processes import run_cli

SIZE = "SELECT pg_relation_size('reactor.queue')"


def _churn(url: str, rows: int) -> None:
    """A burst: rows queued, claimed and removed, as the reactor does (insert, update, delete)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reactor.queue (feedback_id, op, priority) SELECT g, 'upsert', 2 FROM generate_series(1, %s) g",
            [rows],
        )
        conn.execute("UPDATE reactor.queue SET claimed_by = 'w', claimed_until = now() + interval '1 minute'")
        conn.execute("DELETE FROM reactor.queue")


def _vacuum(url: str) -> None:
    async def go() -> None:
        store = store_for(url)
        await store.open()
        try:
            await store.vacuum_queues()
        finally:
            await store.close()

    asyncio.run(go())


def test_a_second_burst_reuses_the_space_the_vacuum_freed(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:  # only this test's VACUUM may act
        for table in ("inbox", "queue", "outbox", "feedback_analysis"):
            conn.execute(f"ALTER TABLE reactor.{table} SET (autovacuum_enabled = false)")
    _churn(pg_url, 5000)
    first = scalar(pg_url, SIZE)
    _churn(pg_url, 5000)
    unvacuumed = scalar(pg_url, SIZE)
    assert unvacuumed > first * 1.5, "without a vacuum the second burst needs new pages (else this shows nothing)"
    _vacuum(pg_url)
    _churn(pg_url, 5000)
    _vacuum(pg_url)
    _churn(pg_url, 5000)
    assert scalar(pg_url, SIZE) <= unvacuumed, "after each vacuum a burst of the same size fits in the freed pages"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        vacuumed = dict(
            conn.execute(
                "SELECT relname, vacuum_count FROM pg_stat_user_tables"
                " WHERE schemaname = 'reactor' AND relname IN ('inbox', 'queue', 'outbox', 'feedback_analysis')"
            ).fetchall()
        )
    assert vacuumed == {"inbox": 2, "queue": 2, "outbox": 2, "feedback_analysis": 2}


def test_a_second_rewrite_of_every_analysis_reuses_the_space_the_vacuum_freed(pg_url):
    size = "SELECT pg_relation_size('reactor.feedback_analysis')"
    rewrite = "UPDATE reactor.feedback_analysis SET sentiment_score = random(), analyzed_at = clock_timestamp()"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE reactor.feedback_analysis SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO reactor.feedback_analysis (feedback_id, source_queue_id, sentiment_label)"
            " SELECT g, g, 'POSITIVE' FROM generate_series(1, 5000) g"
        )
        conn.execute(rewrite)  # a reprocess: every row rewritten
        once = scalar(pg_url, size)
        _vacuum(pg_url)
        conn.execute(rewrite)
        _vacuum(pg_url)
        conn.execute(rewrite)
        assert scalar(pg_url, size) <= once * 1.05, "each rewrite fits in what the vacuum before it freed"
        conn.execute("DELETE FROM reactor.feedback_analysis")  # rows without feedbacks: not left for the invariants


def test_a_listener_role_that_does_not_own_the_tables_leaves_them_to_autovacuum(pg_url):
    role = f"listener_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    assert run_cli(pg_url, "sql", "--grant-listener", role).returncode == 0
    params = conninfo_to_dict(pg_url) | {"user": role}

    async def go(url: str) -> bool:
        store = store_for(url)
        await store.open()
        try:
            return await store.vacuum_queues()
        finally:
            await store.close()

    assert asyncio.run(go(pg_url)) is True  # the owner
    assert asyncio.run(go(make_conninfo("", **params))) is False
