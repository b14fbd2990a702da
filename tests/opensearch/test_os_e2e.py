"""End to end: `reactor listen` with OPENSEARCH_ENDPOINT set indexes what it analyses and deletes what is
deleted, through the outbox written by the complete transaction."""

from __future__ import annotations

import asyncio

import psycopg
from opensearchpy import AsyncOpenSearch

from tests.conftest import scalar, wait_until
from tests.integration.helpers import insert, stored_counts


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
        lambda: {d["word"]: d["count"] for d in _docs(os_url, wi).values()} == stored_counts(pg_url),
        60,
        "word documents equal Postgres totals",
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM feedbacks WHERE id = %s", [ids[1]])
    wait_until(lambda: str(ids[1]) not in _docs(os_url, fi), 60, "document deleted")
    wait_until(
        lambda: {d["word"]: d["count"] for d in _docs(os_url, wi).values()} == stored_counts(pg_url),
        60,
        "deleted words removed",
    )
    assert "great" not in {d["word"] for d in _docs(os_url, wi).values()}
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM reactor.outbox") == 0, 30, "outbox drained")
    reactor.stop()
