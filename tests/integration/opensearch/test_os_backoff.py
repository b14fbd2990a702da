"""Cluster-wide conditions (429, 503, 403 cluster blocks, unreachable) pause the endpoint, not the rows, and the
backlog goes out as soon as the cluster takes writes again (issue 13.12)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import psycopg
import pytest
from opensearchpy.exceptions import TransportError

from reactor.sinks import opensearch
from reactor.sinks.client import EndpointPause
from reactor.sinks.documents import TOTAL_DOC_ID, fetch_feedback_docs
from reactor.sinks.opensearch import OpenSearchSink
from reactor.sql import q
from tests.support.db import assert_consistent
from tests.support.opensearch import (
    aliases_of,
    assert_index_matches,
    outbox_count,
    pg,
    running,
    seed_feedbacks,
    settings_for,
    sink_for,
)

ERRORS = {
    429: {"type": "es_rejected_execution_exception", "reason": "rejected execution (queue capacity 200)"},
    503: {"type": "unavailable_shards_exception", "reason": "primary shard is not active"},
    403: {"type": "cluster_block_exception", "reason": "index [x] blocked by: [FORBIDDEN/8/index write (api)];"},
    500: {"type": "exception", "reason": "something odd"},
    400: {"type": "mapper_parsing_exception", "reason": "failed to parse field"},
}


def _items(body: bytes, status_for: dict[str, int], default: int = 201) -> dict[str, Any]:
    """A bulk response answering each action of `body` with the scripted status."""
    lines = [orjson.loads(line) for line in body.splitlines()]
    items, i = [], 0
    while i < len(lines):
        action, info = next(iter(lines[i].items()))
        i += 1 if action == "delete" else 2
        status = status_for.get(info["_id"], default)
        item: dict[str, Any] = {"status": status}
        if status >= 300:
            item["error"] = ERRORS[status]
        items.append({action: item})
    return {"errors": any(next(iter(it.values()))["status"] >= 300 for it in items), "items": items}


class StubClient:
    """Answers bulk requests with a scripted per-item status, or raises a whole-request error."""

    def __init__(self, status_for: dict[str, int], raise_exc: Exception | None = None) -> None:
        self.status_for = status_for
        self.raise_exc = raise_exc
        self.bulks = 0

    async def bulk(self, body: bytes, params: Any = None) -> dict[str, Any]:
        self.bulks += 1
        if self.raise_exc is not None:
            raise self.raise_exc
        assert params["require_alias"] == "true"
        return _items(body, self.status_for)

    async def close(self) -> None:
        pass


def test_item_conditions_hold_rows_without_blame(os_pg_url: str) -> None:
    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            await seed_feedbacks(conn, 1, 1200)
            stub = StubClient({"3": 429, "700": 503, "800": 403, "900": 500, "950": 400})
            sink = OpenSearchSink(settings_for("http://unused:1"), pool, client=stub, bulk_max_docs=500)  # type: ignore[arg-type]
            res = await sink.drain_once(1000)
            assert res.cluster_error and "429" in res.cluster_error
            assert stub.bulks == 1  # the cluster said "busy": the next chunks wait for the endpoint's pause
            assert (res.indexed, len(res.held), res.retried, res.parked) == (499, 1, 0, 0)
            stub.status_for = {"700": 503, "800": 403, "900": 500, "950": 400}
            res = await sink.drain_once(1000)  # row 3 again, then 501..999: two held, 500 retried later, 400 parked
            assert (len(res.held), res.retried, res.parked) == (2, 1, 1) and "503" in (res.cluster_error or "")
            cur = await conn.execute(
                "SELECT doc_id, attempts, not_before = '-infinity', last_error FROM reactor.outbox"
                " WHERE doc_id IN ('3', '700', '800') AND index_kind = 'feedback' ORDER BY doc_id::int"
            )
            rows = await cur.fetchall()
            assert [r[:3] for r in rows] == [("700", 0, True), ("800", 0, True)]  # 3 went in; held rows not blamed
            assert rows[0][3].startswith("503 unavailable_shards_exception")
            cur = await conn.execute(
                "SELECT doc_id, attempts, not_before > now(), parked_at IS NOT NULL FROM reactor.outbox"
                " WHERE doc_id IN ('900', '950') AND index_kind = 'feedback' ORDER BY doc_id::int"
            )
            assert await cur.fetchall() == [("900", 1, True, False), ("950", 1, False, True)]
            retrying = await (await conn.execute(q("outbox_retrying"), {"limit": 10})).fetchall()
            assert [(r[1], r[3][:3]) for r in retrying] == [("900", "500"), ("800", "403"), ("700", "503")]
            assert (await (await conn.execute(q("outbox_empty"))).fetchone()) == (False,)
            # The whole cluster answering 503: reported as unavailable, rows not touched.
            sink.client = StubClient({}, raise_exc=TransportError(503, "unavailable", {}))  # type: ignore[assignment]
            before = await outbox_count(conn, "attempts = 0")
            res = await sink.drain_once(1000)
            assert res.unavailable and "503" in res.unavailable and res.done == 0
            assert await outbox_count(conn, "attempts = 0") == before
            # The block lifted: one drain sends every held row, no per-row delay to wait out.
            sink.client = stub = StubClient({})  # type: ignore[assignment]
            while (await sink.drain_once(1000)).fetched:
                pass
            # Left: the 500 (retrying later), the parked 400, and the word-total document (due in 5 s).
            assert await outbox_count(conn) == 3 and await outbox_count(conn, f"doc_id = '{TOTAL_DOC_ID}'") == 1
            with psycopg.connect(os_pg_url, autocommit=True) as sync:
                sync.execute("UPDATE reactor.outbox SET not_before = now() WHERE doc_id = '900'")
            assert (await sink.drain_once(1000)).indexed == 1

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_endpoint_pause_is_shared_and_reset_by_success() -> None:
    pause = EndpointPause(base=0.5, cap=5.0)
    waits = [pause.fail() for _ in range(8)]
    assert all(0.25 <= w <= 5.0 for w in waits) and max(waits[-3:]) > 2.5 and 0 < pause.remaining() <= 5.0
    assert pause.succeed() and pause.remaining() == 0 and pause.failures == 0
    assert not pause.succeed()


class Rejecting:
    """The real client, except that while `busy` every bulk item is answered 429 without reaching the cluster."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.busy = False
        self.bulks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def bulk(self, body: bytes, params: Any = None) -> dict[str, Any]:
        self.bulks += 1
        if self.busy:
            return _items(body, {}, default=429)
        return await self.client.bulk(body=body, params=params)


def test_backlog_flows_within_seconds_after_429_and_403_blocks(
    os_url: str, os_pg_url: str, index_names: dict[str, str]
) -> None:
    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names, poll_interval=0.1)
            real = sink.client
            sink.client = sink.guard.client = faulty = Rejecting(real)  # type: ignore[assignment]
            assert await sink.ensure_indices()
            concrete = ",".join(
                [
                    *await aliases_of(real, index_names["feedback_index"]),
                    *await aliases_of(real, index_names["word_index"]),
                ]
            )
            async with running(sink):
                faulty.busy = True  # every item 429 (an overloaded cluster), deterministic
                await seed_feedbacks(conn, 1, 300)
                sink.wake()
                await asyncio.sleep(4)
                probes = faulty.bulks
                assert 2 <= probes <= 8, probes  # paused and probing, not hammering
                faulty.busy = False
                await real.indices.put_settings(index=concrete, body={"index.blocks.write": True})  # a real 403 block
                await seed_feedbacks(conn, 301, 100)
                sink.wake()
                await asyncio.sleep(4)
                assert faulty.bulks - probes <= 8
                assert await outbox_count(conn, "attempts > 0 OR parked_at IS NOT NULL OR not_before > now()") == 0
                cur = await conn.execute(
                    "SELECT DISTINCT left(last_error, 28) FROM reactor.outbox WHERE last_error IS NOT NULL"
                )
                assert {r[0] for r in await cur.fetchall()} <= {
                    "403 cluster_block_exception:",
                    "429 es_rejected_execution_exc",
                }
                pending = await outbox_count(conn)
                assert pending > 400
                await real.indices.put_settings(index=concrete, body={"index.blocks.write": False})
                lifted = time.monotonic()
                while await outbox_count(conn) and time.monotonic() - lifted < 30:
                    await asyncio.sleep(0.05)
                took = time.monotonic() - lifted
                print(f"[backoff] {pending} outbox rows drained {took:.1f} s after the block was lifted")
                assert await outbox_count(conn) == 0 and took < 8, took  # at most one endpoint pause (≤ 5 s)
                await assert_index_matches(conn, real, index_names)

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_drain_builds_one_bulk_at_a_time_and_stops_at_a_refusal(
    os_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up drain holds one bulk's documents, not the whole batch (the soak's RSS bump after outages),
    and a cluster that refuses the first bulk costs no reads of the rest."""
    reads: list[int] = []

    async def spy(conn: Any, ids: Any) -> Any:
        reads.append(len(ids))
        return await fetch_feedback_docs(conn, ids)

    monkeypatch.setattr(opensearch, "fetch_feedback_docs", spy)

    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            await seed_feedbacks(conn, 1, 1200)
            stub = StubClient({"3": 429})
            sink = OpenSearchSink(settings_for("http://unused:1"), pool, client=stub, bulk_max_docs=500)  # type: ignore[arg-type]
            res = await sink.drain_once(2000)
            assert res.cluster_error and res.fetched == 1600 and stub.bulks == 1  # 1200 docs and 400 words
            assert reads == [500] and len(res.held) == 1 and res.indexed == 499  # the rest was never read
            reads.clear()
            stub.status_for = {}
            res = await sink.drain_once(2000)
            assert res.fetched == 1101 and res.indexed == 1101 and stub.bulks == 4
            assert max(reads) <= 500 and sum(reads) == 1200 - 499
            assert await outbox_count(conn, f"doc_id <> '{TOTAL_DOC_ID}'") == 0

    asyncio.run(main())
    assert_consistent(os_pg_url)


def test_paused_endpoint_is_probed_with_one_bulk(os_pg_url: str) -> None:
    """While the cluster is away each probe reads one bulk's worth of outbox rows, not a whole batch; the first
    success goes back to whole batches at once."""

    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            await seed_feedbacks(conn, 1, 600)
            stub = StubClient({}, raise_exc=TransportError(503, "unavailable", {}))
            sink = OpenSearchSink(
                settings_for("http://unused:1"),
                pool,
                client=stub,  # type: ignore[arg-type]
                batch_size=400,
                bulk_max_docs=50,
                pause_base=0.02,
                pause_cap=0.05,
                poll_interval=0.05,
                check_interval=3600,
            )

            async def indices_fine() -> bool:  # the stub has no index API: this test is about the drain
                sink.guard.pending.clear()
                return True

            sink.guard.check = indices_fine  # type: ignore[method-assign]
            limits: list[int] = []
            drain = sink.drain_once

            async def recording(limit: int | None = None) -> Any:
                limits.append(limit or sink.batch_size)
                return await drain(limit)

            sink.drain_once = recording  # type: ignore[method-assign]
            stop = asyncio.Event()
            task = asyncio.create_task(sink.run(stop))
            while stub.bulks < 5:
                await asyncio.sleep(0.01)
            failing = len(limits)
            stub.raise_exc = None
            while await outbox_count(conn, f"doc_id <> '{TOTAL_DOC_ID}'"):
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, 10)
            assert limits[0] == 400 and set(limits[1:failing]) == {50}, limits
            assert limits[failing] == 50 and 400 in limits[failing + 1 :], limits  # the recovering probe, then batches

    asyncio.run(main())
    assert_consistent(os_pg_url)
