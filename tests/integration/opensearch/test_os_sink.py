"""The outbox → OpenSearch sink against a real OpenSearch server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError

from reactor.config import Settings
from reactor.sinks.opensearch import make_sink
from tests.support.db import assert_consistent
from tests.support.opensearch import (
    OutageProxy,
    all_docs,
    assert_index_matches,
    delete_analysed,
    doc_count,
    drain_all,
    outbox_count,
    pg,
    queue_docs,
    running,
    seed_feedbacks,
    sink_for,
    text_for,
    write_analysed,
)


def test_make_sink_is_optional() -> None:
    assert make_sink(Settings(), pool=None) is None  # type: ignore[arg-type]


def test_ten_thousand_rows_and_word_totals(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names)
            try:
                assert await sink.ensure_indices()
                assert await sink.ensure_indices()  # idempotent
                await seed_feedbacks(conn, 1, 10_000)
                total = await drain_all(sink)
                assert total.indexed == 10_000 + 400 + 1  # documents, words, the word-total document
                assert total.parked == 0 and total.retried == 0
                assert await outbox_count(conn) == 0
                await assert_index_matches(conn, sink.client, index_names)
                doc = (await all_docs(sink.client, index_names["feedback_index"]))["42"]
                assert doc["feedback_id"] == 42 and doc["sentiment"]["label"] == "positive"
                assert doc["topics"] == [{"label": "topic-2", "score": 0.9}] and doc["product_name"] == "product-0"
                assert doc["models"] == {"sentiment": "sent-model", "zero_shot": "zs-model"}
                assert doc["word_total"] == 2 and doc["attributes"] == {"media_urls": None}
                # A second round: texts changed (words gone and new), rows deleted.
                await write_analysed(conn, {1: "brand new words", 2: text_for(2)}, label="negative")
                await delete_analysed(conn, [3, 4, 5])
                total = await drain_all(sink)
                assert total.parked == 0 and total.retried == 0 and total.deleted >= 3
                await assert_index_matches(conn, sink.client, index_names)
            finally:
                await sink.close()

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_rejected_document_is_parked_others_indexed(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names)
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
                res = await drain_all(sink)
                assert (res.parked, res.retried) == (2, 0)
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
                await queue_docs(conn, [("feedback", "7", "index")])
                await conn.commit()
                assert (await sink.drain_once(100)).indexed == 1
                assert await doc_count(sink.client, index_names["feedback_index"]) == 19
            finally:
                await sink.close()

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_delete_and_delete_of_missing_doc(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names)
            try:
                await sink.ensure_indices()
                await seed_feedbacks(conn, 1, 5)
                await drain_all(sink)
                assert await doc_count(sink.client, index_names["feedback_index"]) == 5
                await delete_analysed(conn, [2, 4])
                await queue_docs(conn, [("feedback", "999", "delete")])
                await conn.commit()
                res = await drain_all(sink)
                assert (res.retried, res.parked) == (0, 0)  # 999 was never indexed: its 404 is fine
                docs = await all_docs(sink.client, index_names["feedback_index"])
                assert sorted(docs) == ["1", "3", "5"]
                assert await outbox_count(conn) == 0
                # An 'index' row whose analysis is gone is a delete (documents follow current state).
                await delete_analysed(conn, [5])
                await conn.execute("DELETE FROM reactor.outbox WHERE index_kind = 'feedback'")
                await queue_docs(conn, [("feedback", "5", "index")])
                await conn.commit()
                assert (await drain_all(sink)).deleted >= 1
                assert sorted(await all_docs(sink.client, index_names["feedback_index"])) == ["1", "3"]
                await assert_index_matches(conn, sink.client, index_names)
            finally:
                await sink.close()

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_change_during_send_is_sent_again(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    """A row bumped while its bulk is in flight stays in the outbox and its newer state goes out next."""

    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names)
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
                assert res.superseded == 1 and res.indexed == res.fetched
                assert await outbox_count(conn, "index_kind = 'feedback'") == 1
                await drain_all(sink)
                docs = await all_docs(sink.client, index_names["feedback_index"])
                assert docs["2"]["sentiment"]["label"] == "negative" and docs["1"]["sentiment"]["label"] == "positive"
                await assert_index_matches(conn, sink.client, index_names)
            finally:
                await sink.close()

    asyncio.run(main())
    assert_consistent(os_pg_url)


async def _outage_run(os_url: str, pg_url: str, index_names: dict[str, str], outage_s: float) -> None:
    proxy = OutageProxy(os_url)
    await proxy.open()
    async with pg(pg_url) as (pool, conn):
        sink = sink_for(proxy.url, pool, index_names, poll_interval=0.2, pause_cap=2.0, timeout=5)
        try:
            async with running(sink) as task:
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
            expected = next_id - 1
            client = AsyncOpenSearch(hosts=[os_url])
            try:
                docs = await all_docs(client, index_names["feedback_index"])  # asserts no duplicate _id
                assert len(docs) == expected and set(docs) == {str(i) for i in range(1, expected + 1)}
                await assert_index_matches(conn, client, index_names)
            finally:
                await client.close()
        finally:
            await proxy.close()


def test_outage_backlog_drains_without_loss(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    asyncio.run(_outage_run(os_url, os_pg_url, index_names, outage_s=12))
    assert_consistent(os_pg_url)


@pytest.mark.slow
def test_outage_sixty_seconds(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    asyncio.run(_outage_run(os_url, os_pg_url, index_names, outage_s=60))
    assert_consistent(os_pg_url)


def test_run_survives_unreachable_server_from_start(os_pg_url: str) -> None:
    """No OpenSearch at all: run() logs and backs off, never raises, and stops promptly."""

    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            await seed_feedbacks(conn, 1, 10)
            await conn.commit()
            sink = sink_for("http://127.0.0.1:9", pool, {}, pause_cap=0.5)
            async with running(sink) as task:  # stopping must end it promptly
                await asyncio.sleep(2)
                assert not task.done()
                assert sink.pause.failures >= 2  # it kept probing, with the endpoint's pause in between
            assert await outbox_count(conn, "attempts = 0") == await outbox_count(conn) >= 10

    asyncio.run(main())
    assert_consistent(os_pg_url)
