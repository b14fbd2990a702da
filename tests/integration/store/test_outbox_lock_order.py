"""Completing batches and the outbox drain take outbox rows in one order, (index_kind, doc_id), so they never
wait on each other in a cycle. Two orders deadlocked on shared word documents 14 times in a 10-minute soak
(issue 22): PostgreSQL breaks a deadlock only after deadlock_timeout (1 s), so each cost both sides a second.

Forced: a third transaction holds the row that sorts first; the statement under test must block on it before
touching the row that sorts last (which has the lower id, so id order would take it first)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from reactor.sinks.drain_result import DrainResult
from reactor.sinks.opensearch import OpenSearchSink
from reactor.sql import q
from tests.support.opensearch import settings_for


def _seed(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = {}
        for word in ("zebra", "apple"):  # zebra first: the lower id
            ids[word] = conn.execute(
                "INSERT INTO reactor.outbox (index_kind, doc_id, action) VALUES ('word', %s, 'index') RETURNING id",
                [word],
            ).fetchone()[0]
        return ids


def _free(url: str, doc_id: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT 1 FROM reactor.outbox WHERE doc_id = %s FOR UPDATE SKIP LOCKED", [doc_id]).fetchone()
        conn.rollback()
        return row is not None


def _wait_blocked(url: str, pid: int) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            if row and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError("the statement never blocked on the held row")


def _holding_apple(url: str) -> psycopg.Connection[Any]:
    holder = psycopg.connect(url)
    holder.execute("SELECT 1 FROM reactor.outbox WHERE doc_id = 'apple' FOR UPDATE")
    return holder


def test_a_completing_batch_upserts_outbox_rows_in_key_order(pg_url):
    _seed(pg_url)
    holder = _holding_apple(pg_url)
    batch = psycopg.connect(pg_url)
    params = {"kinds": ["word", "word"], "doc_ids": ["zebra", "apple"], "actions": ["index", "index"]}
    upsert = threading.Thread(target=batch.execute, args=(q("outbox_upsert"), params))
    upsert.start()
    try:
        _wait_blocked(pg_url, batch.info.backend_pid)
        assert _free(pg_url, "zebra"), "the upsert took zebra before apple: a drain locking apple first deadlocks"
    finally:
        holder.rollback()
        upsert.join(10)
        batch.commit()
        holder.close()
        batch.close()


def test_the_drain_settles_outbox_rows_in_key_order(pg_url):
    ids = _seed(pg_url)
    holder = _holding_apple(pg_url)

    async def settle() -> None:
        pool = AsyncConnectionPool(pg_url, open=False)  # never opened: _settle gets its connection below
        sink = OpenSearchSink(settings_for("http://unused:1"), pool, client=object())  # type: ignore[arg-type]
        result = DrainResult(confirmed=[(ids["zebra"], "word"), (ids["apple"], "word")])
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            pid.append(conn.info.backend_pid)
            await sink._settle(conn, result)
            await conn.commit()

    pid: list[int] = []
    drain = threading.Thread(target=asyncio.run, args=(settle(),))
    drain.start()
    try:
        deadline = time.monotonic() + 10
        while not pid and drain.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pid, "the drain never connected"
        _wait_blocked(pg_url, pid[0])
        assert _free(pg_url, "zebra"), "the drain took zebra before apple: a batch upserting apple first deadlocks"
    finally:
        holder.rollback()
        drain.join(10)
        holder.close()
    with psycopg.connect(pg_url) as conn:
        left = conn.execute("SELECT doc_id FROM reactor.outbox WHERE index_kind = 'word' ORDER BY doc_id").fetchall()
    assert left == [("accumulated_word_counts",)]  # both confirmed and deleted; the word total queued
