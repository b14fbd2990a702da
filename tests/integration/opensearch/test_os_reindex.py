"""`reactor reindex` (alias swap), the accumulated_word_counts document, and the mapping-version path, against a
real OpenSearch and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from opensearchpy import AsyncOpenSearch

from reactor.sinks.documents import TOTAL_DOC_ID, index_body
from reactor.sinks.reindex import reindex
from tests.support.db import assert_consistent
from tests.support.opensearch import (
    aliases_of,
    all_docs,
    assert_index_matches,
    drain_all,
    outbox_count,
    pg,
    seed_feedbacks,
    sink_for,
    write_analysed,
)


def _invoke(os_endpoint: str, pg_url: str, index_names: dict[str, str], *args: str) -> Any:
    env = {"OPENSEARCH_ENDPOINT": os_endpoint, "DATABASE_URL": pg_url, "REACTOR_ENV": "local"}
    argv = ["--feedback-index", index_names["feedback_index"], "--word-index", index_names["word_index"], *args]
    return CliRunner().invoke(reindex, [*argv, "--no-progress"], env=env, catch_exceptions=False)


async def _words(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT word, count FROM reactor.word_counts")
    return {w: c for w, c in await cur.fetchall()}


def test_reindex_swaps_aliases_and_sink_follows(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    fb, words = index_names["feedback_index"], index_names["word_index"]

    async def setup() -> None:
        client = AsyncOpenSearch(hosts=[os_url])
        async with await psycopg.AsyncConnection.connect(os_pg_url, autocommit=True) as conn:
            # The old layout: concrete indices named like the aliases.
            await client.indices.create(index=fb, body=index_body("feedback"))
            await client.indices.create(index=words, body=index_body("word"))
            await client.close()
            # Rows that never reached the index (e.g. written before the sink existed), and one poisoned row.
            await seed_feedbacks(conn, 1, 2500)
            await conn.execute("DELETE FROM reactor.outbox")
            await conn.execute(
                'UPDATE reactor.feedback_analysis SET topics = \'[{"label": 1, "score": "bad"}]\''
                " WHERE feedback_id = 77"
            )

    asyncio.run(setup())
    dry = _invoke(os_url, os_pg_url, index_names, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{fb}: would index 2500 docs" in dry.output and f"{words}: would index 401 docs" in dry.output

    result = _invoke(os_url, os_pg_url, index_names)
    assert result.exit_code == 0, result.output
    assert f"{fb}: indexed 2499 docs" in result.output and "1 rejected" in result.output
    assert f"{words}: indexed 401 docs" in result.output

    async def check(first_generation: set[str] | None) -> set[str]:
        client = AsyncOpenSearch(hosts=[os_url])
        try:
            behind = set(await aliases_of(client, fb)) | set(await aliases_of(client, words))
            assert len(behind) == 2
            if first_generation is not None:
                assert not behind & first_generation
                assert not await client.indices.exists(index=",".join(first_generation), ignore_unavailable=False)
            docs = await all_docs(client, fb)
            assert len(docs) == 2499 and "77" not in docs
            async with await psycopg.AsyncConnection.connect(os_pg_url) as conn:
                pg_words = await _words(conn)
            word_docs = await all_docs(client, words)
            assert word_docs.pop(TOTAL_DOC_ID)["word_counts"] == pg_words
            assert {k: v["count"] for k, v in word_docs.items()} == pg_words
            mapping = await client.indices.get_mapping(index=fb)
            assert next(iter(mapping.values()))["mappings"]["dynamic"] == "strict"
            return behind
        finally:
            await client.close()

    first = asyncio.run(check(None))

    async def sink_after() -> None:
        async with pg(os_pg_url) as (pool, conn):
            # The rejected doc was queued in the outbox; the sink parks it with its error.
            assert await outbox_count(conn, "doc_id = '77'") == 1
            sink = sink_for(os_url, pool, index_names)
            assert await sink.ensure_indices()  # sees the aliases, creates nothing
            await seed_feedbacks(conn, 3000, 1)
            res = await drain_all(sink)
            assert res.parked == 1 and res.indexed >= 1
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
            behind = set(await aliases_of(client, fb)) | set(await aliases_of(client, words))
            assert not behind & first and len(behind) == 2
            assert not await client.indices.exists(index=",".join(first))
            assert len(await all_docs(client, fb)) == 2500
        finally:
            await client.close()

    asyncio.run(check_again())
    with psycopg.connect(os_pg_url, autocommit=True) as conn:  # the invariants hold with row 77 repaired
        conn.execute("UPDATE reactor.feedback_analysis SET topics = '[]' WHERE feedback_id = 77")
    assert_consistent(os_pg_url)


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("http://127.0.0.1:9", "cannot reach OpenSearch at http://127.0.0.1:9:"),
        ("http://search-admin:Tr0ub4dor%26x@127.0.0.1:9", "cannot reach OpenSearch at http://***@127.0.0.1:9:"),
        ("http://[::1", "is not a valid URL"),
        ("http://search-admin:Tr0ub4dor@host:notaport", "the port must be a number from 1 to 65535"),
    ],
)
def test_reindex_bad_endpoint_is_one_clean_line(os_pg_url: str, endpoint: str, shown: str) -> None:
    result = CliRunner().invoke(
        reindex,
        ["--feedback-index", "x-feedback", "--word-index", "x-words", "--no-progress"],
        env={"OPENSEARCH_ENDPOINT": endpoint, "DATABASE_URL": os_pg_url, "REACTOR_ENV": "local"},
    )
    assert result.exit_code == 1, result.output
    assert shown in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for secret in ("search-admin", "Tr0ub4dor", "Tr0ub4dor&x", "Tr0ub4dor%26x"):
        assert secret not in result.output
    assert isinstance(result.exception, SystemExit)


def test_word_total_document(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    """accumulated_word_counts follows reactor.word_counts, requeued at most once per interval."""

    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names, word_total_interval=60)
            try:
                assert await sink.ensure_indices()
                client = sink.client
                total = await client.get(index=index_names["word_index"], id=TOTAL_DOC_ID)
                assert total["_source"]["word_counts"] == {} and total["_source"]["vocabulary"] == 0
                await seed_feedbacks(conn, 1, 30)
                await drain_all(sink)
                cur = await conn.execute(
                    "SELECT not_before > now() + interval '50 seconds' FROM reactor.outbox WHERE doc_id = %s",
                    (TOTAL_DOC_ID,),
                )
                assert await cur.fetchall() == [(True,)]  # queued, not before the interval
                cur = await conn.execute("SELECT id, not_before FROM reactor.outbox WHERE doc_id = %s", (TOTAL_DOC_ID,))
                queued = await cur.fetchone()
                await write_analysed(conn, {5: "another fresh wording"})
                await drain_all(sink)
                cur = await conn.execute("SELECT id, not_before FROM reactor.outbox WHERE doc_id = %s", (TOTAL_DOC_ID,))
                assert await cur.fetchone() == queued  # a pending document keeps its place and time
                await conn.execute("UPDATE reactor.outbox SET not_before = now() WHERE doc_id = %s", (TOTAL_DOC_ID,))
                res = await drain_all(sink)
                assert res.indexed == 1 and await outbox_count(conn) == 0
                await assert_index_matches(conn, client, index_names)
                source = (await client.get(index=index_names["word_index"], id=TOTAL_DOC_ID))["_source"]
                assert source["word_counts"]["fresh"] == 1 and source["total"] == sum((await _words(conn)).values())
            finally:
                await sink.close()

    asyncio.run(main())
    assert_consistent(os_pg_url)


def _mapping_v1(kind: str, conflict: bool = False) -> dict[str, Any]:
    """The schema-1 mapping (before `attributes` and the word-total fields), or one that conflicts with 2."""
    body = copy.deepcopy(index_body(kind))
    props = body["mappings"]["properties"]
    body["mappings"]["_meta"] = {"reactor_schema": 1}
    if kind == "feedback":
        del props["attributes"]
        if conflict:
            props["attributes"] = {"type": "keyword"}
    else:
        for name in ("word_counts", "vocabulary", "total", "updated_at"):
            del props[name]
    return body


@pytest.mark.parametrize("conflict", [False, True], ids=["upgraded-in-place", "needs-reindex"])
def test_mapping_version_bump(
    os_url: str, os_pg_url: str, index_names: dict[str, str], conflict: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """An older reactor mapping is extended in place when it only lacks fields; otherwise the log asks for
    `reactor reindex`, whose rebuild lets every parked document in."""

    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            client = AsyncOpenSearch(hosts=[os_url])
            for kind, alias in (("feedback", index_names["feedback_index"]), ("word", index_names["word_index"])):
                body = _mapping_v1(kind, conflict)
                body["aliases"] = {alias: {"is_write_index": True}}
                await client.indices.create(index=f"{alias}-v1", body=body)
            await client.close()
            sink = sink_for(os_url, pool, index_names)
            try:
                with caplog.at_level(logging.INFO, logger="reactor.sinks.opensearch"):
                    assert await sink.ensure_indices()
                events = [r.getMessage() for r in caplog.records]
                await seed_feedbacks(conn, 1, 40)
                res = await drain_all(sink)
                if not conflict:
                    assert events.count("opensearch.mapping_upgraded") == 2
                    assert res.parked == 0
                    await assert_index_matches(conn, sink.client, index_names)
                    return
                assert "opensearch.mapping_outdated" in events
                hint = next(r for r in caplog.records if r.getMessage() == "opensearch.mapping_outdated")
                assert "reactor reindex" in hint.fields["hint"]  # type: ignore[attr-defined]
                assert res.parked == 40  # every feedback document refused by the old mapping
            finally:
                await sink.close()

    asyncio.run(main())
    if conflict:
        result = _invoke(os_url, os_pg_url, index_names)
        assert result.exit_code == 0, result.output

        async def after() -> None:
            async with pg(os_pg_url) as (pool, conn):
                assert await outbox_count(conn, "parked_at IS NOT NULL") == 0  # re-armed by the rebuild
                sink = sink_for(os_url, pool, index_names)
                try:
                    assert (await drain_all(sink)).parked == 0
                    await assert_index_matches(conn, sink.client, index_names)
                finally:
                    await sink.close()

        asyncio.run(after())
    assert_consistent(os_pg_url)
