"""Documents from any feedbacks table and any stored value: hostile values never stop indexing (issue 13.10),
minimal tables and tables in another schema drain (13.8). Real OpenSearch and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from reactor import sql
from reactor.sinks import documents
from reactor.sinks.documents import date_value, load_json, safe_value
from reactor.sinks.reindex import reindex
from tests.support.db import assert_consistent
from tests.support.opensearch import (
    all_docs,
    assert_index_matches,
    drain_all,
    outbox_count,
    pg,
    seed_feedbacks,
    sink_for,
    write_analysed,
)

HOSTILE = {  # feedback id → SET clause PostgreSQL accepts and Python's datetime/int/float cannot all hold
    1: "created_at = 'infinity'",
    2: "created_at = '-infinity', updated_at = 'infinity'",
    3: "created_at = '10000-01-01 00:00:00+00'",
    4: "created_at = '0044-03-15 BC'",
    5: "score = '1e5000'::numeric",
    6: 'score = \'NaN\'::numeric, payload = \'{"big": 1e400, "deep": [{"x": -1e-400}]}\'',
    7: "payload = to_jsonb(repeat('é', 20000))",  # longer than one indexable term
    8: "created_at = '9999-12-31 23:59:59+00', updated_at = '0001-01-01 00:00:00+00'",  # the edges: kept
}


def test_values_helpers() -> None:
    assert date_value("infinity") is None and date_value("10000-01-01T00:00:00+00:00") is None
    assert date_value("0044-03-15T00:00:00+00:00 BC") is None and date_value(17) is None
    assert date_value("2020-01-01T12:00:00.5+05:30") == "2020-01-01T06:30:00.500000+00:00"
    assert date_value("2024-02-29") == "2024-02-29T00:00:00"
    assert date_value("0001-01-01T00:30:00+01:00") is None  # in UTC it would be year 0
    assert load_json('{"n": ' + "9" * 5000 + "}") == {"n": "9" * 5000}
    assert load_json('{"f": 1e400, "i": 18446744073709551615}') == {"f": "1e400", "i": 18446744073709551615}
    assert safe_value({"a": [float("nan"), 2**70, "x" * 9000]}) == {"a": [None, str(2**70), "x" * 8192]}


def test_hostile_values_never_stop_indexing(
    os_url: str, os_pg_url: str, index_names: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with pg(os_pg_url) as (pool, conn):
            await conn.execute("ALTER TABLE feedbacks ADD COLUMN score numeric, ADD COLUMN payload jsonb")
            await seed_feedbacks(conn, 1, len(HOSTILE))  # the first outbox rows are the hostile ones
            for fid, assignment in HOSTILE.items():
                await conn.execute(f"UPDATE feedbacks SET {assignment} WHERE id = {fid}")
            await conn.execute("DELETE FROM reactor.inbox")  # the metadata updates' reindex rows: not needed here
            await seed_feedbacks(conn, 101, 500)
            sink = sink_for(os_url, pool, index_names)
            try:
                assert await sink.ensure_indices()
                res = await drain_all(sink, limit=100)
                assert (res.parked, res.retried) == (0, 0)
                assert await outbox_count(conn) == 0
                await assert_index_matches(conn, sink.client, index_names)
                docs = await all_docs(sink.client, index_names["feedback_index"])
                assert [docs[str(i)]["created_at"] for i in (1, 2, 3, 4)] == [None] * 4
                assert docs["2"]["updated_at"] is None
                assert docs["5"]["attributes"]["score"] == "1" + "0" * 5000
                assert docs["6"]["attributes"]["score"] == "NaN"  # how PostgreSQL writes a numeric NaN in JSON
                assert docs["6"]["attributes"]["payload"]["big"] == "1" + "0" * 400
                assert len(docs["7"]["attributes"]["payload"].encode()) <= 8192
                assert docs["8"]["created_at"].startswith("9999-12-31T23:59:59")
                assert docs["8"]["updated_at"].startswith("0001-01-01T00:00:00")
                assert docs["101"]["created_at"] is not None
                # Any other failure to build one document parks that row alone; the rest flow.
                real = documents.feedback_doc

                def flaky(analysis: dict[str, Any], feedback: dict[str, Any]) -> dict[str, Any]:
                    if analysis["feedback_id"] == 103:
                        raise ValueError("simulated")
                    return real(analysis, feedback)

                monkeypatch.setattr(documents, "feedback_doc", flaky)
                await seed_feedbacks(conn, 101, 10, label="negative")
                res = await drain_all(sink)
                assert res.parked == 1 and res.indexed >= 9
                cur = await conn.execute("SELECT doc_id, last_error FROM reactor.outbox WHERE parked_at IS NOT NULL")
                assert await cur.fetchall() == [("103", "cannot build the document: ValueError: simulated")]
            finally:
                await sink.close()

    asyncio.run(main())
    # `reactor reindex` builds the same documents: the hostile rows go in, the unbuildable one is queued/parked.
    env = {"OPENSEARCH_ENDPOINT": os_url, "DATABASE_URL": os_pg_url, "REACTOR_ENV": "local"}
    args = ["--feedback-index", index_names["feedback_index"], "--word-index", index_names["word_index"]]
    result = CliRunner().invoke(reindex, [*args, "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{index_names['feedback_index']}: indexed 507 docs" in result.output and "1 rejected" in result.output
    assert_consistent(os_pg_url)


def _drain_and_check(url: str, os_url: str, index_names: dict[str, str]) -> dict[str, dict[str, Any]]:
    async def main() -> dict[str, dict[str, Any]]:
        async with pg(url) as (pool, conn):
            sink = sink_for(os_url, pool, index_names)
            try:
                assert await sink.ensure_indices()
                res = await drain_all(sink)
                assert (res.parked, res.retried) == (0, 0) and await outbox_count(conn) == 0
                await assert_index_matches(conn, sink.client, index_names)
                return await all_docs(sink.client, index_names["feedback_index"])
            finally:
                await sink.close()

    return asyncio.run(main())


def _install(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]
        sql.install(conn, job_key="feedback_analysis")


def test_minimal_table(os_url: str, empty_db: str, index_names: dict[str, str]) -> None:
    _install(empty_db, "CREATE TABLE feedbacks (id bigint PRIMARY KEY, text text)")

    async def seed() -> None:
        async with await psycopg.AsyncConnection.connect(empty_db, autocommit=True) as conn:
            await write_analysed(conn, {i: f"minimal table row {i} works" for i in range(1, 31)}, columns=False)

    asyncio.run(seed())
    docs = _drain_and_check(empty_db, os_url, index_names)
    assert len(docs) == 30 and docs["7"]["text"] == "minimal table row 7 works"
    assert not {"product_name", "sender", "created_at", "updated_at", "attributes"} & set(docs["7"])
    assert_consistent(empty_db)


def test_table_in_another_schema_with_extra_columns(os_url: str, empty_db: str, index_names: dict[str, str]) -> None:
    url = make_conninfo(empty_db, options="-csearch_path=app")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
    _install(
        url,
        "CREATE TABLE app.feedbacks (id integer PRIMARY KEY, text varchar(500), product_name text,"
        " rating smallint, tags text[], meta jsonb, created_at timestamp DEFAULT '2024-05-01 10:00')",
    )

    async def seed() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await write_analysed(conn, {i: f"schema app row {i} arrives" for i in range(1, 21)}, columns=False)
            await conn.execute(
                "UPDATE feedbacks SET product_name = 'p' || id, rating = id % 5, tags = ARRAY['a', 'b'],"
                " meta = jsonb_build_object('channel', 'email', 'n', id)"
            )

    asyncio.run(seed())
    docs = _drain_and_check(url, os_url, index_names)
    doc = docs["4"]
    assert doc["product_name"] == "p4" and doc["created_at"] == "2024-05-01T10:00:00"
    assert doc["attributes"] == {"rating": 4, "tags": ["a", "b"], "meta": {"channel": "email", "n": 4}}
    assert "sender" not in doc
    assert_consistent(url)
