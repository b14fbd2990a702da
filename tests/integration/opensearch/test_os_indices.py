"""Indices deleted, auto-created or left in the old layout come back complete from PostgreSQL (issue 13.11),
with OpenSearch's `action.auto_create_index` on (its default, and Amazon OpenSearch Service's) and off."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opensearchpy import AsyncOpenSearch

from reactor.observability import Metrics
from reactor.sinks.documents import SCHEMA_VERSION, index_body
from tests.support.db import assert_consistent
from tests.support.opensearch import (
    aliases_of,
    assert_index_matches,
    outbox_count,
    pg,
    running,
    seed_feedbacks,
    sink_for,
)


@pytest.fixture(params=["true", "false"], ids=["auto_create_on", "auto_create_off"])
def auto_create(os_url: str, request: pytest.FixtureRequest) -> Iterator[bool]:
    """Sets the cluster's action.auto_create_index for one test (a dynamic setting), then restores it."""

    async def put(value: str | None) -> None:
        client = AsyncOpenSearch(hosts=[os_url])
        try:
            await client.cluster.put_settings(body={"transient": {"action.auto_create_index": value}})
        finally:
            await client.close()

    asyncio.run(put(request.param))
    yield request.param == "true"
    asyncio.run(put(None))


def _rebuilds(metrics: Metrics, reason: str) -> float:
    return sum(
        metrics.registry.get_sample_value("reactor_search_index_rebuilds_total", {"kind": k, "reason": reason}) or 0
        for k in ("feedback", "word")
    )


async def _delete_both(client: AsyncOpenSearch, index_names: dict[str, str]) -> None:
    """What an operator does: delete the concrete indices (the aliases go with them)."""
    concrete = [
        *await aliases_of(client, index_names["feedback_index"]),
        *await aliases_of(client, index_names["word_index"]),
    ]
    await client.indices.delete(index=",".join(concrete))


async def _until_matches(
    conn: psycopg.AsyncConnection[Any], client: AsyncOpenSearch, names: dict[str, str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert await outbox_count(conn) == 0
            await assert_index_matches(conn, client, names)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_deleted_index_comes_back_complete(
    os_url: str,
    os_pg_url: str,
    index_names: dict[str, str],
    auto_create: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """550 feedback documents and 400 words; both indices deleted in the middle of a drain, then again while
    idle, then (auto-create on) recreated by a stray write under the alias's name: every document comes back,
    each rebuild logged at WARNING and counted."""

    async def main() -> None:
        metrics = Metrics()
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names, metrics=metrics, poll_interval=0.1, check_interval=1.0)
            client = sink.client
            sends = 0
            original = sink._send

            async def send(chunk: Any, result: Any) -> None:
                nonlocal sends
                sends += 1
                if sends == 4:  # the chosen point: a drain in progress, documents already indexed before it
                    await _delete_both(client, index_names)
                await original(chunk, result)

            sink._send = send  # type: ignore[method-assign]
            assert await sink.ensure_indices() and _rebuilds(metrics, "created") == 2  # empty: a plain creation
            caplog.set_level(logging.WARNING, logger="reactor.sinks.opensearch")
            async with running(sink):
                for first in range(1, 551, 50):
                    await seed_feedbacks(conn, first, 50)
                    sink.wake()
                    await asyncio.sleep(0.15)
                await _until_matches(conn, client, index_names, 30)
                assert sends > 4 and _rebuilds(metrics, "missing") == 2
                cur = await conn.execute("SELECT count(*) FROM reactor.word_counts")
                assert (await cur.fetchone())[0] == 400  # type: ignore[index]

                await _delete_both(client, index_names)  # while idle: the periodic check finds it
                await _until_matches(conn, client, index_names, 15)
                assert _rebuilds(metrics, "missing") == 4

                if auto_create:  # a stray write auto-creates a dynamically mapped index under the alias's name
                    await _delete_both(client, index_names)
                    await client.index(index=index_names["feedback_index"], id="stray", body={"anything": 1})
                    assert (await client.indices.get_mapping(index=index_names["feedback_index"])).get(
                        index_names["feedback_index"]
                    )
                    await _until_matches(conn, client, index_names, 15)
                    assert _rebuilds(metrics, "auto_created") == 1
                for alias in index_names.values():
                    concrete = await aliases_of(client, alias)
                    mapping = (await client.indices.get_mapping(index=alias))[concrete[0]]["mappings"]
                    assert mapping["_meta"]["reactor_schema"] == SCHEMA_VERSION and mapping["dynamic"] == "strict"
                warnings = [r for r in caplog.records if r.getMessage() == "opensearch.index_rebuilt"]
                assert len(warnings) >= 4 and all(r.levelno == logging.WARNING for r in warnings)
                assert await outbox_count(conn, "attempts > 0 OR parked_at IS NOT NULL") == 0

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_old_layout_is_migrated_to_aliases(os_url: str, os_pg_url: str, index_names: dict[str, str]) -> None:
    """Concrete indices named like the aliases (what earlier versions created) are rebuilt behind aliases, since
    `require_alias` cannot write to them; the old ones are removed in the same atomic alias call."""

    async def main() -> None:
        metrics = Metrics()
        async with pg(os_pg_url) as (pool, conn):
            client = AsyncOpenSearch(hosts=[os_url])
            for kind, name in (("feedback", index_names["feedback_index"]), ("word", index_names["word_index"])):
                await client.indices.create(index=name, body=index_body(kind))
            await client.index(index=index_names["feedback_index"], id="1", body={"feedback_id": 1, "text": "old"})
            await client.close()
            await seed_feedbacks(conn, 1, 120)
            sink = sink_for(os_url, pool, index_names, metrics=metrics)
            try:
                assert await sink.ensure_indices()
                assert _rebuilds(metrics, "legacy") == 2
                for alias in index_names.values():
                    assert len(await aliases_of(sink.client, alias)) == 1
                await assert_index_matches(conn, sink.client, index_names)  # already complete before any drain
                while (await sink.drain_once()).fetched:
                    pass
                await assert_index_matches(conn, sink.client, index_names)
            finally:
                await sink.close()

    asyncio.run(main())
    assert_consistent(os_pg_url)
