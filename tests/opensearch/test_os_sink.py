"""The outbox → OpenSearch sink against a real OpenSearch server and a real Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from os_helpers import (
    OutageProxy,
    all_docs,
    doc_count,
    opened_pool,
    outbox_count,
    seed_feedbacks,
    set_words,
    settings_for,
)

from reactor.sinks.opensearch import DrainResult, OpenSearchSink, make_sink


async def drain_all(sink: OpenSearchSink, limit: int = 1000) -> DrainResult:
    """Drain until nothing is ready; returns the totals."""
    total = DrainResult()
    while True:
        res = await sink.drain_once(limit)
        assert res.unavailable is None, res.unavailable
        for name in ("fetched", "indexed", "deleted", "retried", "parked", "superseded"):
            setattr(total, name, getattr(total, name) + getattr(res, name))
        if res.fetched == 0:
            return total


def test_make_sink_is_optional(os_pg_url: str) -> None:
    from reactor.config import Settings

    assert make_sink(Settings(), pool=None) is None  # type: ignore[arg-type]


def test_ten_thousand_rows_and_word_totals(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    async def main() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            sink = OpenSearchSink(settings_for(os_url), pool, **index_names)
            try:
                await sink.ensure_indices()
                await sink.ensure_indices()  # idempotent
                await seed_feedbacks(conn, 1, 10_000)
                words = {f"word{i}": i + 1 for i in range(3000)}
                await set_words(conn, words)
                await conn.commit()
                total = await drain_all(sink)
                assert total.indexed == 13_000 and total.parked == 0 and total.retried == 0
                assert await outbox_count(conn) == 0
                fb = await all_docs(sink.client, index_names["feedback_index"])
                assert len(fb) == 10_000 and set(fb) == {str(i) for i in range(1, 10_001)}
                doc = fb["42"]
                assert doc["feedback_id"] == 42 and doc["sentiment"]["label"] == "positive"
                assert doc["topics"] == [{"label": "topic-2", "score": 0.9}] and doc["product_name"] == "product-0"
                assert doc["models"] == {"sentiment": "sent-model", "zero_shot": "zs-model"}
                cur = await conn.execute("SELECT word, count FROM reactor.word_counts")
                pg_words = {w: c for w, c in await cur.fetchall()}
                os_words = await all_docs(sink.client, index_names["word_index"])
                assert {k: v["count"] for k, v in os_words.items()} == pg_words
                assert all(v["word"] == k for k, v in os_words.items())
                # A second round of changes: totals updated, some words gone.
                await set_words(conn, {"word0": 0, "word1": 0, "word2": 99, "newword": 5})
                await conn.commit()
                total = await drain_all(sink)
                assert (total.indexed, total.deleted) == (2, 2)
                cur = await conn.execute("SELECT word, count FROM reactor.word_counts")
                pg_words = {w: c for w, c in await cur.fetchall()}
                os_words = await all_docs(sink.client, index_names["word_index"])
                assert {k: v["count"] for k, v in os_words.items()} == pg_words
            finally:
                await sink.close()

    asyncio.run(main())


def test_rejected_document_is_parked_others_indexed(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    async def main() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            sink = OpenSearchSink(settings_for(os_url), pool, **index_names)
            try:
                await sink.ensure_indices()
                await seed_feedbacks(conn, 1, 20)
                # Poison two rows: a string where the mapping wants a float, and a field the strict mapping lacks.
                await conn.execute(
                    'UPDATE reactor.feedback_analysis SET topics = \'[{"label": "x", "score": "high"}]\''
                    " WHERE feedback_id = 7"
                )
                await conn.execute(
                    'UPDATE reactor.feedback_analysis SET topics = \'[{"label": "x", "score": 1, "oops": 1}]\''
                    " WHERE feedback_id = 13"
                )
                await conn.commit()
                res = await sink.drain_once(100)
                assert (res.fetched, res.indexed, res.parked, res.retried) == (20, 18, 2, 0)
                assert await doc_count(sink.client, index_names["feedback_index"]) == 18
                cur = await conn.execute(
                    "SELECT doc_id, last_error, attempts FROM reactor.outbox WHERE parked_at IS NOT NULL ORDER BY id"
                )
                parked = await cur.fetchall()
                assert [p[0] for p in parked] == ["7", "13"]
                assert "parsing_exception" in parked[0][1] and "400" in parked[0][1]
                assert "strict_dynamic_mapping_exception" in parked[1][1]
                assert (await sink.drain_once(100)).fetched == 0  # parked rows are not retried in a loop
                # Fixing the row re-queues it (the complete transaction's upsert clears parked_at): it goes in.
                await conn.execute("UPDATE reactor.feedback_analysis SET topics = '[]' WHERE feedback_id = 7")
                await conn.execute(
                    "INSERT INTO reactor.outbox (index_kind, doc_id, action) VALUES ('feedback', '7', 'index')"
                    " ON CONFLICT (index_kind, doc_id) DO UPDATE SET action = excluded.action,"
                    " id = nextval('reactor.outbox_id_seq'), attempts = 0, not_before = '-infinity',"
                    " last_error = NULL, parked_at = NULL"
                )
                await conn.commit()
                assert (await sink.drain_once(100)).indexed == 1
                assert await doc_count(sink.client, index_names["feedback_index"]) == 19
            finally:
                await sink.close()

    asyncio.run(main())


def test_delete_and_delete_of_missing_doc(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    async def main() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            sink = OpenSearchSink(settings_for(os_url), pool, **index_names)
            try:
                await sink.ensure_indices()
                await seed_feedbacks(conn, 1, 5)
                await conn.commit()
                await drain_all(sink)
                assert await doc_count(sink.client, index_names["feedback_index"]) == 5
                await conn.execute("DELETE FROM reactor.feedback_analysis WHERE feedback_id IN (2, 4)")
                await conn.execute(
                    "INSERT INTO reactor.outbox (index_kind, doc_id, action)"
                    " VALUES ('feedback', '2', 'delete'), ('feedback', '4', 'delete'), ('feedback', '999', 'delete')"
                )
                await conn.commit()
                res = await drain_all(sink)
                assert (res.deleted, res.retried, res.parked) == (3, 0, 0)  # 999 was never indexed: 404 is fine
                docs = await all_docs(sink.client, index_names["feedback_index"])
                assert sorted(docs) == ["1", "3", "5"]
                assert await outbox_count(conn) == 0
                # An 'index' row whose analysis is gone is a delete (documents follow current state).
                await conn.execute("DELETE FROM reactor.feedback_analysis WHERE feedback_id = 5")
                await conn.execute(
                    "INSERT INTO reactor.outbox (index_kind, doc_id, action) VALUES ('feedback','5','index')"
                )
                await conn.commit()
                assert (await drain_all(sink)).deleted == 1
                assert sorted(await all_docs(sink.client, index_names["feedback_index"])) == ["1", "3"]
            finally:
                await sink.close()

    asyncio.run(main())


def test_change_during_send_is_sent_again(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    """A row bumped while its bulk is in flight stays in the outbox and its newer state goes out next."""

    async def main() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            sink = OpenSearchSink(settings_for(os_url), pool, **index_names)
            await conn.set_autocommit(True)
            try:
                await sink.ensure_indices()
                await seed_feedbacks(conn, 1, 3)
                original = sink._send

                async def send_and_change(*args: Any) -> None:
                    await original(*args)
                    await seed_feedbacks(conn, 2, 1, label="negative")  # committed while the drain is open

                sink._send = send_and_change  # type: ignore[method-assign]
                res = await sink.drain_once(100)
                sink._send = original  # type: ignore[method-assign]
                assert (res.indexed, res.superseded) == (3, 1)
                assert await outbox_count(conn) == 1
                assert (await sink.drain_once(100)).indexed == 1
                docs = await all_docs(sink.client, index_names["feedback_index"])
                assert docs["2"]["sentiment"]["label"] == "negative" and docs["1"]["sentiment"]["label"] == "positive"
            finally:
                await sink.close()

    asyncio.run(main())


async def _outage_run(os_url: str, pg_url: str, index_names: dict[str, str], outage_s: float) -> None:
    proxy = OutageProxy(os_url)
    await proxy.open()
    async with opened_pool(pg_url) as pool, await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        sink = OpenSearchSink(
            settings_for(proxy.url), pool, **index_names, poll_interval=0.2, max_outage_backoff=2.0, timeout=5
        )
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        try:
            await seed_feedbacks(conn, 1, 500)
            sink.wake()
            deadline = time.monotonic() + 30
            while await outbox_count(conn) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await outbox_count(conn) == 0
            await proxy.close()  # OpenSearch goes away
            with pytest.raises(OSConnectionError):
                await sink.client.info()
            started, next_id, sizes = time.monotonic(), 501, []
            while time.monotonic() - started < outage_s:
                await seed_feedbacks(conn, next_id, 200)
                await seed_feedbacks(conn, next_id - 150, 50, label="neutral")  # updates of rows already sent
                next_id += 200
                sink.wake()
                await asyncio.sleep(1.0)
                sizes.append(await outbox_count(conn))
                assert not task.done()
            assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # the outbox only grew
            assert await outbox_count(conn, "parked_at IS NOT NULL OR attempts > 0") == 0  # nobody blamed rows
            await proxy.open()  # back
            deadline = time.monotonic() + 60
            while await outbox_count(conn) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await outbox_count(conn) == 0
            assert not task.done()
            stop.set()
            await asyncio.wait_for(task, 10)
            expected = next_id - 1
            client = AsyncOpenSearch(hosts=[os_url])
            try:
                docs = await all_docs(client, index_names["feedback_index"])  # asserts no duplicate _id
                assert len(docs) == expected and set(docs) == {str(i) for i in range(1, expected + 1)}
                assert (await client.count(index=index_names["feedback_index"]))["count"] == expected
                cur = await conn.execute("SELECT feedback_id, sentiment_label FROM reactor.feedback_analysis")
                assert {str(i): label for i, label in await cur.fetchall()} == {
                    k: v["sentiment"]["label"] for k, v in docs.items()
                }
            finally:
                await client.close()
        finally:
            stop.set()
            if not task.done():
                task.cancel()
            await sink.close()
            await proxy.close()


def test_outage_backlog_drains_without_loss(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    asyncio.run(_outage_run(os_url, os_pg_url, index_names, outage_s=12))


@pytest.mark.slow
def test_outage_sixty_seconds(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    asyncio.run(_outage_run(os_url, os_pg_url, index_names, outage_s=60))


def test_run_survives_unreachable_server_from_start(os_pg_url: str) -> None:
    """No OpenSearch at all: run() logs and backs off, never raises, and stops promptly."""

    async def main() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            await seed_feedbacks(conn, 1, 10)
            await conn.commit()
            sink = OpenSearchSink(settings_for("http://127.0.0.1:9"), pool, max_outage_backoff=0.5)
            stop = asyncio.Event()
            task = asyncio.create_task(sink.run(stop))
            await asyncio.sleep(2)
            assert not task.done()
            stop.set()
            await asyncio.wait_for(task, 5)
            await sink.close()
            assert await outbox_count(conn) == 10

    asyncio.run(main())
