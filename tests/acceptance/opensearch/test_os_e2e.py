"""End to end: `reactor listen` with OPENSEARCH_ENDPOINT set indexes what it analyses, re-indexes renamed rows
and deletes what is deleted, through the outbox written by the complete transaction."""

from __future__ import annotations

import asyncio
import os
import time

import psycopg
import pytest
from opensearchpy import AsyncOpenSearch

from reactor.sinks.documents import TOTAL_DOC_ID
from tests.support.db import assert_consistent, insert, scalar, stored_counts, wait_until


def _docs(os_url: str, index: str) -> dict[str, dict]:
    async def go() -> dict[str, dict]:
        client = AsyncOpenSearch(hosts=[os_url])
        try:
            if not await client.indices.exists(index=index):
                return {}
            await client.indices.refresh(index=index)
            res = await client.search(index=index, body={"query": {"match_all": {}}, "size": 10_000})
            return {h["_id"]: h["_source"] for h in res["hits"]["hits"]}
        finally:
            await client.close()

    return asyncio.run(go())


def _words(os_url: str, index: str) -> dict[str, int]:
    """Per-word documents as {word: count}; checks accumulated_word_counts says the same."""
    docs = _docs(os_url, index)
    total = docs.pop(TOTAL_DOC_ID, {"word_counts": {}})
    words = {d["word"]: d["count"] for d in docs.values()}
    return words if total["word_counts"] == words else {"accumulated_word_counts differs": -1}


def test_reactor_indexes_and_deletes_documents(pg_url, os_url, index_names, start_reactor):
    fi, wi = index_names["feedback_index"], index_names["word_index"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO topics (label) VALUES ('price'), ('delivery')")
    reactor = start_reactor(OPENSEARCH_ENDPOINT=os_url, OPENSEARCH_FEEDBACK_INDEX=fi, OPENSEARCH_WORD_INDEX=wi)
    ids = insert(pg_url, ["parcel arrived late", "great price great value", None])
    wait_until(lambda: len(_docs(os_url, fi)) == 3, 60, "three feedback documents")
    docs = _docs(os_url, fi)
    assert docs[str(ids[0])]["text"] == "parcel arrived late"
    wait_until(
        lambda: _words(os_url, wi) == stored_counts(pg_url),
        60,
        "word documents equal Postgres totals",
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a rename re-indexes the document, no re-analysis
        conn.execute("UPDATE feedbacks SET product_name = 'renamed' WHERE id = %s", [ids[0]])
    wait_until(lambda: _docs(os_url, fi)[str(ids[0])]["product_name"] == "renamed", 60, "renamed document")
    assert _docs(os_url, fi)[str(ids[0])]["analyzed_at"] == docs[str(ids[0])]["analyzed_at"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM feedbacks WHERE id = %s", [ids[1]])
    wait_until(lambda: str(ids[1]) not in _docs(os_url, fi), 60, "document deleted")
    wait_until(
        lambda: _words(os_url, wi) == stored_counts(pg_url),
        60,
        "deleted words removed",
    )
    assert "great" not in _words(os_url, wi)
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM reactor.outbox") == 0, 30, "outbox drained")
    reactor.stop()
    assert_consistent(pg_url)


class ThreadedProxy:
    """The OutageProxy on its own event loop thread, so a subprocess reactor can talk through it."""

    def __init__(self, upstream: str) -> None:
        import threading

        from tests.support.opensearch import OutageProxy

        self.proxy = OutageProxy(upstream)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def open(self) -> None:
        self._call(self.proxy.open())

    def close(self) -> None:
        self._call(self.proxy.close())

    def shutdown(self) -> None:
        self.close()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.slow
def test_opensearch_down_60s_while_2000_rows_arrive(pg_url, os_url, index_names, start_reactor):
    """Enrichment continues during the outage; afterwards the index converges: no loss, no duplicates."""
    outage_s = float(os.environ.get("OS_OUTAGE_S", "60"))
    fi, wi = index_names["feedback_index"], index_names["word_index"]
    proxy = ThreadedProxy(os_url)
    proxy.open()
    try:
        start_reactor(
            OPENSEARCH_ENDPOINT=proxy.proxy.url, OPENSEARCH_FEEDBACK_INDEX=fi, OPENSEARCH_WORD_INDEX=wi
        ).wait_for_log("reactor.started")
        insert(pg_url, ["before the outage"] * 10)
        wait_until(lambda: len(_docs(os_url, fi)) == 10, 60, "indexing works before the outage")
        proxy.close()
        t0 = time.monotonic()
        for n in range(20):  # 2,000 rows spread over the outage
            insert(pg_url, [f"during outage {n} row {i} slow refund" for i in range(100)])
            time.sleep(max(0.0, t0 + (n + 1) * outage_s / 25 - time.monotonic()))
        wait_until(
            lambda: scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 2010,
            60,
            "analysis continues while OpenSearch is down",
        )
        assert time.monotonic() - t0 < outage_s, "all rows were analysed within the outage"
        assert scalar(pg_url, "SELECT count(*) FROM reactor.outbox WHERE index_kind = 'feedback'") >= 2000
        time.sleep(max(0.0, t0 + outage_s - time.monotonic()))
        print(f"[os-e2e] OpenSearch unreachable for {time.monotonic() - t0:.0f}s; 2,000 rows analysed meanwhile")
        proxy.open()
        wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM reactor.outbox") == 0, 120, "backlog drained")
        docs = _docs(os_url, fi)
        with psycopg.connect(pg_url) as conn:
            ids = {str(r[0]) for r in conn.execute("SELECT id FROM feedbacks")}
        assert len(docs) == 2010 and set(docs) == ids
        assert _words(os_url, wi) == stored_counts(pg_url)
        assert_consistent(pg_url)
    finally:
        proxy.shutdown()
