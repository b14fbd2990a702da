"""Helpers for the OpenSearch sink tests: rows written the way the complete transaction writes them,
index reads, and a TCP proxy that can simulate an outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from opensearchpy import AsyncOpenSearch

from reactor.config import Settings


def settings_for(url: str) -> Settings:
    return Settings(opensearch_endpoint=url)


# -- writing rows the way the complete transaction does -----------------------------------------------------

OUTBOX_UPSERT = (
    "INSERT INTO reactor.outbox (index_kind, doc_id, action) SELECT %s, d, %s FROM unnest(%s::text[]) AS d"
    " ON CONFLICT (index_kind, doc_id) DO UPDATE SET action = excluded.action,"
    " id = nextval('reactor.outbox_id_seq'), attempts = 0, not_before = '-infinity', last_error = NULL,"
    " parked_at = NULL"
)


async def seed_feedbacks(
    conn: psycopg.AsyncConnection[Any], first: int, count: int, *, label: str = "positive"
) -> None:
    """Feedbacks first..first+count-1 analysed, with outbox rows, in one transaction."""
    last = first + count - 1
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO public.feedbacks (id, text, product_name, sender, created_at)"
            " SELECT g, 'feedback number ' || g, 'product-' || (g %% 7), 'sender-' || (g %% 13),"
            " now() - g * interval '1 minute' FROM generate_series(%s::bigint, %s::bigint) g"
            " ON CONFLICT (id) DO NOTHING",
            (first, last),
        )
        await conn.execute(
            "INSERT INTO reactor.feedback_analysis (feedback_id, sentiment_label, sentiment_score, topics,"
            " word_counts, sentiment_model, zero_shot_model, topic_set, source_queue_id)"
            " SELECT g, %s, 0.5 + (g %% 50) / 100.0,"
            " jsonb_build_array(jsonb_build_object('label', 'topic-' || (g %% 5), 'score', 0.9)),"
            " jsonb_build_object('feedback', 1, 'number', 1), 'sent-model', 'zs-model', 'abc', g"
            " FROM generate_series(%s::bigint, %s::bigint) g"
            " ON CONFLICT (feedback_id) DO UPDATE SET sentiment_label = excluded.sentiment_label,"
            " topics = excluded.topics, source_queue_id = excluded.source_queue_id",
            (label, first, last),
        )
        await conn.execute(OUTBOX_UPSERT, ("feedback", "index", [str(i) for i in range(first, last + 1)]))


async def set_words(conn: psycopg.AsyncConnection[Any], counts: dict[str, int]) -> None:
    """Set word totals (0 means the word is gone) and queue them, in one transaction."""
    async with conn.transaction():
        words = list(counts)
        await conn.execute(
            "INSERT INTO reactor.word_counts (word, count) SELECT * FROM unnest(%s::text[], %s::bigint[])"
            " ON CONFLICT (word) DO UPDATE SET count = excluded.count",
            (words, [counts[w] for w in words]),
        )
        await conn.execute("DELETE FROM reactor.word_counts WHERE count = 0")
        for action in ("index", "delete"):
            chosen = [w for w in words if (counts[w] > 0) == (action == "index")]
            if chosen:
                await conn.execute(OUTBOX_UPSERT, ("word", action, chosen))


async def outbox_count(conn: psycopg.AsyncConnection[Any], where: str = "true") -> int:
    cur = await conn.execute(f"SELECT count(*) FROM reactor.outbox WHERE {where}")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def doc_count(client: AsyncOpenSearch, index: str) -> int:
    await client.indices.refresh(index=index)
    return int((await client.count(index=index))["count"])


async def all_docs(client: AsyncOpenSearch, index: str) -> dict[str, dict[str, Any]]:
    """Every document by _id (scroll); asserts no _id comes back twice."""
    await client.indices.refresh(index=index)
    out: dict[str, dict[str, Any]] = {}
    resp = await client.search(index=index, body={"size": 5000, "sort": ["_doc"]}, params={"scroll": "1m"})
    scroll_id = resp.get("_scroll_id")
    try:
        while hits := resp["hits"]["hits"]:
            for hit in hits:
                assert hit["_id"] not in out
                out[hit["_id"]] = hit["_source"]
            resp = await client.scroll(body={"scroll_id": scroll_id, "scroll": "1m"})
            scroll_id = resp.get("_scroll_id")
    finally:
        if scroll_id:
            await client.clear_scroll(body={"scroll_id": scroll_id})
    return out


class OutageProxy:
    """TCP forwarder to OpenSearch whose port can be closed (connection refused) and reopened."""

    def __init__(self, upstream: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.up_host, self.up_port = parts.hostname or "127.0.0.1", parts.port or 9200
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._conns):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.up_host, self.up_port)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.difference_update((writer, up_writer))


@contextlib.asynccontextmanager
async def opened_pool(url: str) -> AsyncIterator[Any]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(url, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()
