"""Helpers for the OpenSearch sink tests: rows written the way the complete transaction writes them (so the
invariants hold), index reads and the index-equals-PostgreSQL check, and a TCP proxy that can simulate an
outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from opensearchpy import AsyncOpenSearch
from psycopg.types.json import Jsonb

from reactor.config import Settings
from reactor.nlp.words import count_words
from reactor.sinks.documents import TOTAL_DOC_ID
from reactor.sinks.drain_result import DrainResult
from reactor.sinks.opensearch import OpenSearchSink
from reactor.sql import q


def settings_for(url: str) -> Settings:
    return Settings(opensearch_endpoint=url)


# -- writing rows the way the complete transaction does (invariants kept: see assert_consistent) -----------

VOCABULARY = [f"term{i:03d}" for i in range(400)]


def text_for(g: int) -> str:
    """A feedback text of two words; over 400 consecutive ids every word of VOCABULARY appears."""
    return f"{VOCABULARY[g % 400]} {VOCABULARY[(g * 7 + 3) % 400]}"


async def write_analysed(
    conn: psycopg.AsyncConnection[Any],
    texts: dict[int, str | None],
    *,
    label: str = "positive",
    columns: bool = True,
) -> None:
    """Upsert feedbacks with their analysis, exact word-count deltas and outbox rows, in one transaction, as
    `store.complete` does (the queue rows the triggers wrote are consumed too). `columns`: also fill the
    original table's product_name/sender/created_at."""
    ids = sorted(texts)
    async with conn.transaction():
        if columns:
            await conn.execute(
                "INSERT INTO feedbacks (id, text, product_name, sender, created_at)"
                " SELECT g, t, 'product-' || (g %% 7), 'sender-' || (g %% 13), now() - g * interval '1 minute'"
                " FROM unnest(%s::bigint[], %s::text[]) AS v(g, t)"
                " ON CONFLICT (id) DO UPDATE SET text = excluded.text",
                (ids, [texts[i] for i in ids]),
            )
        else:
            await conn.execute(
                "INSERT INTO feedbacks (id, text) SELECT * FROM unnest(%s::bigint[], %s::text[])"
                " ON CONFLICT (id) DO UPDATE SET text = excluded.text",
                (ids, [texts[i] for i in ids]),
            )
        await conn.execute("DELETE FROM reactor.queue WHERE feedback_id = ANY(%s)", (ids,))
        await conn.execute("DELETE FROM reactor.inbox WHERE feedback_id = ANY(%s)", (ids,))
        cur = await conn.execute(
            "SELECT feedback_id, word_counts FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s) FOR UPDATE",
            (ids,),
        )
        deltas: Counter[str] = Counter()
        for _, old in await cur.fetchall():
            deltas.subtract(old)
        new = {i: count_words(texts[i]) for i in ids}
        for counts in new.values():
            deltas.update(counts)
        await conn.execute(
            "INSERT INTO reactor.feedback_analysis (feedback_id, sentiment_label, sentiment_score, topics,"
            " word_counts, sentiment_model, zero_shot_model, topic_set, source_queue_id)"
            " SELECT g, %s, 0.5 + (g %% 50) / 100.0,"
            " jsonb_build_array(jsonb_build_object('label', 'topic-' || (g %% 5), 'score', 0.9)),"
            " c, 'sent-model', 'zs-model', 'abc', g FROM unnest(%s::bigint[], %s::jsonb[]) AS v(g, c)"
            " ON CONFLICT (feedback_id) DO UPDATE SET sentiment_label = excluded.sentiment_label,"
            " word_counts = excluded.word_counts, topics = excluded.topics, source_queue_id = excluded.source_queue_id",
            (label, ids, [Jsonb(new[i]) for i in ids]),
        )
        await _apply_words(conn, deltas, [str(i) for i in ids], "index")


async def delete_analysed(conn: psycopg.AsyncConnection[Any], ids: list[int]) -> None:
    """Delete feedbacks with their analysis and word counts, queueing the document deletes."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s) RETURNING word_counts", (ids,)
        )
        deltas: Counter[str] = Counter()
        for (old,) in await cur.fetchall():
            deltas.subtract(old)
        await conn.execute("DELETE FROM feedbacks WHERE id = ANY(%s)", (ids,))
        await conn.execute("DELETE FROM reactor.queue WHERE feedback_id = ANY(%s)", (ids,))
        await conn.execute("DELETE FROM reactor.inbox WHERE feedback_id = ANY(%s)", (ids,))
        await _apply_words(conn, deltas, [str(i) for i in ids], "delete")


async def _apply_words(
    conn: psycopg.AsyncConnection[Any], deltas: Counter[str], feedback_ids: list[str], action: str
) -> None:
    changed = sorted(w for w, d in deltas.items() if d)
    gone: set[str] = set()
    if changed:
        await conn.execute(q("apply_word_deltas"), {"words": changed, "deltas": [deltas[w] for w in changed]})
        gone = {r[0] for r in await (await conn.execute(q("drop_zero_words"), {"words": changed})).fetchall()}
    docs = [("feedback", f, action) for f in feedback_ids] + [
        ("word", w, "delete" if w in gone else "index") for w in changed
    ]
    await queue_docs(conn, docs)


async def queue_docs(conn: psycopg.AsyncConnection[Any], docs: list[tuple[str, str, str]]) -> None:
    """Outbox rows (kind, doc id, action), written with the reactor's own named query."""
    if docs:
        kinds, doc_ids, actions = (list(x) for x in zip(*docs, strict=True))
        await conn.execute(q("outbox_upsert"), {"kinds": kinds, "doc_ids": doc_ids, "actions": actions})


async def seed_feedbacks(
    conn: psycopg.AsyncConnection[Any], first: int, count: int, *, label: str = "positive"
) -> None:
    """Feedbacks first..first+count-1 analysed (texts from text_for), with outbox rows, in one transaction."""
    await write_analysed(conn, {g: text_for(g) for g in range(first, first + count)}, label=label)


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


async def aliases_of(client: AsyncOpenSearch, alias: str) -> list[str]:
    """The concrete indices behind `alias` (asserting it is an alias, not an index of that name)."""
    found = await client.indices.get_alias(name=alias)
    assert alias not in found, f"{alias} is a concrete index, not an alias"
    return sorted(found)


async def assert_index_matches(
    conn: psycopg.AsyncConnection[Any], client: AsyncOpenSearch, indices: dict[str, str]
) -> None:
    """The search indices hold exactly PostgreSQL's current state: one document per analysis (same label and
    text), one per word with its total, and accumulated_word_counts equal to reactor.word_counts."""
    cur = await conn.execute(
        "SELECT a.feedback_id, a.sentiment_label, f.text FROM reactor.feedback_analysis a"
        " JOIN feedbacks f ON f.id = a.feedback_id"
    )
    expected = {str(i): (label, text) for i, label, text in await cur.fetchall()}
    docs = await all_docs(client, indices["feedback_index"])
    assert set(docs) == set(expected), (len(docs), len(expected))
    assert {k: (d["sentiment"]["label"], d["text"]) for k, d in docs.items()} == expected
    cur = await conn.execute("SELECT word, count FROM reactor.word_counts")
    words = {w: c for w, c in await cur.fetchall()}
    word_docs = await all_docs(client, indices["word_index"])
    total = word_docs.pop(TOTAL_DOC_ID, None)
    assert {k: v["count"] for k, v in word_docs.items()} == words
    if words or total is not None:
        assert total is not None and total["word_counts"] == words
        assert (total["vocabulary"], total["total"]) == (len(words), sum(words.values()))


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
async def pg(url: str) -> AsyncIterator[tuple[Any, psycopg.AsyncConnection[Any]]]:
    """A pool for the sink and an autocommit connection for the test's own statements."""
    async with opened_pool(url) as pool, await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield pool, conn


@contextlib.asynccontextmanager
async def running(sink: OpenSearchSink) -> AsyncIterator[asyncio.Task[None]]:
    """The sink's run() as a task; stopped (it must end within 10 s) and closed on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        finally:
            await sink.close()


@contextlib.asynccontextmanager
async def opened_pool(url: str) -> AsyncIterator[Any]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(url, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def sink_for(url: str, pool: Any, index_names: dict[str, str], **kwargs: Any) -> OpenSearchSink:
    """A sink on the test's indices; the word-total document is requeued without delay."""
    kwargs.setdefault("word_total_interval", 0)
    return OpenSearchSink(settings_for(url), pool, **index_names, **kwargs)


async def drain_all(sink: OpenSearchSink, limit: int = 1000) -> DrainResult:
    """Drain until nothing is ready; returns the totals (asserting OpenSearch stayed available)."""
    total = DrainResult()
    while True:
        res = await sink.drain_once(limit)
        if res.locked:  # a rebuild (or another drainer) holds the lock for a moment
            await asyncio.sleep(0.05)
            continue
        assert res.unavailable is None and res.cluster_error is None, res
        for name in ("fetched", "indexed", "deleted", "superseded"):
            setattr(total, name, getattr(total, name) + getattr(res, name))
        total.retry += res.retry
        total.park += res.park
        if res.fetched == 0:
            return total
