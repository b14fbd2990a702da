"""`reactor reindex` (alias swap) against a real OpenSearch, and the sink's retry paths with a stub client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import psycopg
from click.testing import CliRunner
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import TransportError
from os_helpers import all_docs, opened_pool, outbox_count, seed_feedbacks, set_words, settings_for

from reactor.sinks.cli import reindex
from reactor.sinks.opensearch import OpenSearchSink


def _invoke(os_endpoint: str, pg_url: str, index_names: dict[str, str], *args: str) -> Any:
    env = {"OPENSEARCH_ENDPOINT": os_endpoint, "DATABASE_URL": pg_url, "REACTOR_ENV": "local"}
    argv = ["--feedback-index", index_names["feedback_index"], "--word-index", index_names["word_index"], *args]
    return CliRunner().invoke(reindex, [*argv, "--no-progress"], env=env, catch_exceptions=False)


def test_reindex_swaps_aliases_and_sink_follows(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    fb, words = index_names["feedback_index"], index_names["word_index"]

    async def setup() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            sink = OpenSearchSink(settings_for(os_url), pool, **index_names)
            await sink.ensure_indices()  # legacy layout: concrete indices named like the aliases
            await seed_feedbacks(conn, 1, 50)
            await set_words(conn, {"alpha": 3, "beta": 1})
            await conn.commit()
            while (await sink.drain_once()).fetched:
                pass
            await sink.close()
            # Rows that never reached the index (e.g. written before the sink existed), and one poisoned row.
            await conn.execute("DELETE FROM reactor.outbox")
            await seed_feedbacks(conn, 51, 2450)
            await conn.execute("DELETE FROM reactor.outbox")
            await conn.execute(
                'UPDATE reactor.feedback_analysis SET topics = \'[{"label": 1, "score": "bad"}]\''
                " WHERE feedback_id = 77"
            )
            await conn.execute("INSERT INTO reactor.word_counts VALUES ('gamma', 7)")
            await conn.commit()

    asyncio.run(setup())

    dry = _invoke(os_url, os_pg_url, index_names, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{fb}: would index 2500 docs" in dry.output and f"{words}: would index 3 docs" in dry.output

    result = _invoke(os_url, os_pg_url, index_names)
    assert result.exit_code == 0, result.output
    assert f"{fb}: indexed 2499 docs" in result.output and "1 rejected" in result.output
    assert f"{words}: indexed 3 docs" in result.output

    async def check(first_generation: set[str] | None) -> set[str]:
        client = AsyncOpenSearch(hosts=[os_url])
        try:
            aliases = await client.indices.get_alias(name=f"{fb},{words}")
            assert len(aliases) == 2 and all(name not in (fb, words) for name in aliases)
            if first_generation is not None:
                assert not set(aliases) & first_generation
                assert not await client.indices.exists(index=",".join(first_generation), ignore_unavailable=False)
            docs = await all_docs(client, fb)
            assert len(docs) == 2499 and "77" not in docs
            assert {k: v["count"] for k, v in (await all_docs(client, words)).items()} == {
                "alpha": 3,
                "beta": 1,
                "gamma": 7,
            }
            mapping = await client.indices.get_mapping(index=fb)
            assert next(iter(mapping.values()))["mappings"]["dynamic"] == "strict"
            return set(aliases)
        finally:
            await client.close()

    first = asyncio.run(check(None))

    async def sink_after() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            # The rejected doc was queued in the outbox; the sink parks it with its error.
            assert await outbox_count(conn, "doc_id = '77'") == 1
            sink = OpenSearchSink(settings_for(os_url), pool, **index_names)
            await sink.ensure_indices()  # sees the aliases, creates nothing
            await seed_feedbacks(conn, 3000, 1)
            await conn.commit()
            res = await sink.drain_once()
            assert (res.indexed, res.parked) == (1, 1)
            await sink.close()
            client = AsyncOpenSearch(hosts=[os_url])
            try:
                assert len(await all_docs(client, fb)) == 2500  # written through the alias into the new index
            finally:
                await client.close()

    asyncio.run(sink_after())

    again = _invoke(os_url, os_pg_url, index_names)  # second generation replaces the first
    assert again.exit_code == 0, again.output

    async def check_again() -> None:
        client = AsyncOpenSearch(hosts=[os_url])
        try:
            aliases = await client.indices.get_alias(name=f"{fb},{words}")
            assert not set(aliases) & first and len(aliases) == 2
            assert not await client.indices.exists(index=",".join(first))
            assert len(await all_docs(client, fb)) == 2500
        finally:
            await client.close()

    asyncio.run(check_again())


def test_reindex_unreachable_is_a_clear_error(os_pg_url: str) -> None:
    names = {"feedback_index": "x-feedback", "word_index": "x-words"}
    result = CliRunner().invoke(
        reindex,
        ["--feedback-index", names["feedback_index"], "--word-index", names["word_index"], "--no-progress"],
        env={"OPENSEARCH_ENDPOINT": "http://127.0.0.1:9", "DATABASE_URL": os_pg_url, "REACTOR_ENV": "local"},
    )
    assert result.exit_code == 1
    assert "cannot reach OpenSearch at http://127.0.0.1:9" in result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception, SystemExit)


class StubClient:
    """Answers bulk requests with a scripted per-item status, or raises a whole-request error."""

    def __init__(self, status_for: dict[str, int], raise_exc: Exception | None = None) -> None:
        self.status_for = status_for
        self.raise_exc = raise_exc
        self.requests: list[list[dict[str, Any]]] = []

    async def bulk(self, body: bytes, params: Any = None) -> dict[str, Any]:
        if self.raise_exc is not None:
            raise self.raise_exc
        lines = [orjson.loads(line) for line in body.splitlines()]
        metas: list[dict[str, Any]] = []
        i = 0
        while i < len(lines):
            metas.append(lines[i])
            i += 1 if "delete" in lines[i] else 2
        self.requests.append(metas)
        items = []
        for meta in metas:
            action, info = next(iter(meta.items()))
            status = self.status_for.get(info["_id"], 201)
            item: dict[str, Any] = {"status": status}
            if status >= 300:
                item["error"] = {"type": "es_rejected_execution_exception", "reason": "queue full"}
            items.append({action: item})
        return {"errors": any(i[next(iter(i))]["status"] >= 300 for i in items), "items": items}

    async def close(self) -> None:
        pass


def test_item_429_is_retried_with_backoff_and_503_leaves_rows(os_pg_url: str) -> None:
    async def main() -> None:
        async with opened_pool(os_pg_url) as pool, await psycopg.AsyncConnection.connect(os_pg_url) as conn:
            await seed_feedbacks(conn, 1, 1200)
            await conn.commit()
            stub = StubClient({"3": 429, "700": 503})
            sink = OpenSearchSink(settings_for("http://unused:1"), pool, client=stub, bulk_max_docs=500)  # type: ignore[arg-type]
            res = await sink.drain_once(1000)
            assert (res.fetched, res.indexed, res.retried, res.parked) == (1000, 998, 2, 0)
            assert [len(r) for r in stub.requests] == [500, 500]  # chunked by count
            cur = await conn.execute(
                "SELECT doc_id, attempts, not_before > now(), last_error FROM reactor.outbox"
                " WHERE attempts > 0 ORDER BY doc_id"
            )
            rows = await cur.fetchall()
            assert [(r[0], r[1], r[2]) for r in rows] == [("3", 1, True), ("700", 1, True)]
            assert "429" in rows[0][3] and "503" in rows[1][3]
            # The whole cluster answering 503: reported as unavailable, rows not blamed.
            sink.client = StubClient({}, raise_exc=TransportError(503, "unavailable", {}))  # type: ignore[assignment]
            res = await sink.drain_once(1000)
            assert res.unavailable and "503" in res.unavailable and res.done == 0
            assert await outbox_count(conn, "attempts = 0") == 200
            # Chunking by bytes.
            sink.client = stub = StubClient({})  # type: ignore[assignment]
            sink.bulk_max_bytes = 20_000
            res = await sink.drain_once(1000)
            assert res.indexed == 200 and len(stub.requests) > 1
            assert await outbox_count(conn) == 2

    asyncio.run(main())
