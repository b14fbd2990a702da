"""`reactor reindex`: rebuild both search indices from Postgres, with no gap for searchers.

How: each index name (`feedback-analysis`, `wordcount-analysis`) becomes an ALIAS to a concrete
`<name>-<UTC timestamp>` index. The command builds fresh concrete indices from one consistent Postgres
snapshot, then moves the aliases in one atomic `_aliases` call (a legacy concrete index with the alias's
name is removed in the same call) and deletes the old concrete indices. It holds the drain advisory lock
throughout, so the sink pauses (its outbox just grows) and drains the changes made meanwhile into the new
indices through the alias afterwards. Documents the new mapping rejects are queued in the outbox, where the
sink parks them with their error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import click
import orjson

from reactor import backoff
from reactor.sinks.opensearch import (
    DRAIN_LOCK_KEY,
    FEEDBACK_INDEX,
    FEEDBACK_SQL,
    WORD_INDEX,
    describe_error,
    feedback_doc,
    index_body,
    is_unavailable,
    make_client,
)
from reactor.sql import q

FETCH = 2000


class ReindexError(click.ClickException):
    """A failure explained in one line (no traceback)."""


async def _docs(conn: Any, kind: str) -> AsyncIterator[list[tuple[str, bytes]]]:
    """(id, source) batches from a server-side cursor inside the caller's snapshot."""
    sql = (
        FEEDBACK_SQL + " ORDER BY fa.feedback_id"
        if kind == "feedback"
        else ("SELECT word, count FROM reactor.word_counts WHERE count > 0 ORDER BY word")
    )
    from psycopg.rows import dict_row

    async with conn.cursor(name=f"reindex_{kind}", row_factory=dict_row) as cur:
        await cur.execute(sql)
        while rows := await cur.fetchmany(FETCH):
            if kind == "feedback":
                yield [(str(r["feedback_id"]), orjson.dumps(feedback_doc(r))) for r in rows]
            else:
                yield [(r["word"], orjson.dumps({"word": r["word"], "count": r["count"]})) for r in rows]


async def _bulk(client: Any, index: str, batch: list[tuple[str, bytes]], max_docs: int) -> list[tuple[str, str]]:
    """Index one batch in requests of max_docs; returns (doc id, error) for rejected items."""
    failed: list[tuple[str, str]] = []
    for start in range(0, len(batch), max_docs):
        part = batch[start : start + max_docs]
        body = b"".join(orjson.dumps({"index": {"_index": index, "_id": i}}) + b"\n" + src + b"\n" for i, src in part)
        for attempt in range(8):
            try:
                resp = await client.bulk(body=body, params={"filter_path": "errors,items.*.status,items.*.error"})
                break
            except Exception as exc:
                if not is_unavailable(exc) or attempt == 7:
                    raise
                await asyncio.sleep(backoff.delay(attempt + 1, base=0.5, cap=10.0))
        if resp.get("errors"):
            retry: list[tuple[str, bytes]] = []
            for (doc_id, src), item in zip(part, resp["items"], strict=True):
                info = item["index"]
                if info.get("status", 500) < 300:
                    continue
                if info.get("status") in (429, 503):
                    retry.append((doc_id, src))
                else:
                    err = info.get("error") or {}
                    failed.append((doc_id, f"{info.get('status')} {err.get('type')}: {err.get('reason')}"[:1000]))
            if retry:
                await asyncio.sleep(1.0)
                failed.extend(await _bulk(client, index, retry, max_docs))
    return failed


async def rebuild_indices(
    database_url: str,
    settings: Any,
    *,
    feedback_index: str = FEEDBACK_INDEX,
    word_index: str = WORD_INDEX,
    dry_run: bool = False,
    keep_old: bool = False,
    progress: bool = True,
    bulk_docs: int = 1000,
) -> dict[str, Any]:
    """Rebuild both indices; returns a summary {alias: {"index", "docs", "failed"}}."""
    import psycopg
    from tqdm import tqdm

    client = make_client(settings, timeout=120.0)
    try:
        try:
            await client.info()
        except Exception as exc:
            raise ReindexError(
                f"cannot reach OpenSearch at {settings.opensearch_endpoint}: {describe_error(exc)}"
            ) from None
        try:
            conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        except psycopg.Error as exc:
            raise ReindexError(f"cannot connect to Postgres: {str(exc).strip()}") from None
        summary: dict[str, Any] = {}
        async with conn:
            aliases = {"feedback": feedback_index, "word": word_index}
            suffix = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
            cur = await conn.execute("SELECT count(*) FROM reactor.feedback_analysis")
            totals = {"feedback": (await cur.fetchone())[0]}  # type: ignore[index]
            cur = await conn.execute("SELECT count(*) FROM reactor.word_counts WHERE count > 0")
            totals["word"] = (await cur.fetchone())[0]  # type: ignore[index]
            if dry_run:
                for kind, alias in aliases.items():
                    summary[alias] = {"index": f"{alias}-{suffix}", "docs": totals[kind], "failed": 0, "dry_run": True}
                return summary
            await conn.execute("SELECT pg_advisory_lock(%s)", (DRAIN_LOCK_KEY,))  # pause every sink's drains
            try:
                await conn.set_autocommit(False)
                await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                async with conn.transaction():  # one snapshot for both indices
                    for kind, alias in aliases.items():
                        new = f"{alias}-{suffix}"
                        body = index_body(kind)
                        body["settings"] = {"index": {**body["settings"]["index"], "refresh_interval": "-1"}}
                        await client.indices.create(index=new, body=body)
                        failed: list[tuple[str, str]] = []
                        try:
                            bar = tqdm(total=totals[kind], desc=alias, unit="doc", disable=not progress)
                            with bar:
                                async for batch in _docs(conn, kind):
                                    failed += await _bulk(client, new, batch, bulk_docs)
                                    bar.update(len(batch))
                            await client.indices.put_settings(index=new, body={"index": {"refresh_interval": "1s"}})
                            await client.indices.refresh(index=new)
                        except BaseException:
                            await client.indices.delete(index=new, ignore_unavailable=True)
                            raise
                        summary[alias] = {"index": new, "docs": totals[kind] - len(failed), "failed": len(failed)}
                        summary[alias]["errors"] = failed[:10]
                        summary[alias]["old"] = await _swap(client, alias, new, keep_old)
                        if failed:
                            await conn.execute(
                                q("outbox_upsert"),
                                {
                                    "kinds": [kind] * len(failed),
                                    "doc_ids": [d for d, _ in failed],
                                    "actions": ["index"] * len(failed),
                                },
                            )
            finally:
                await conn.set_autocommit(True)
                await conn.execute("SELECT pg_advisory_unlock(%s)", (DRAIN_LOCK_KEY,))
        return summary
    finally:
        await client.close()


async def _swap(client: Any, alias: str, new: str, keep_old: bool) -> list[str]:
    """Point `alias` at `new` atomically; drop what it pointed to before (or a concrete index of that name)."""
    actions: list[dict[str, Any]] = []
    old: list[str] = []
    if await client.indices.exists_alias(name=alias):
        old = sorted((await client.indices.get_alias(name=alias)).keys())
        actions += [{"remove": {"index": o, "alias": alias}} for o in old]
    elif await client.indices.exists(index=alias):
        actions.append({"remove_index": {"index": alias}})  # legacy concrete index → alias, in the same call
    actions.append({"add": {"index": new, "alias": alias, "is_write_index": True}})
    await client.indices.update_aliases(body={"actions": actions})
    if old and not keep_old:
        await client.indices.delete(index=",".join(old), ignore_unavailable=True)
    return old


@click.command("reindex")
@click.option("--database-url", envvar="DATABASE_URL", help="Postgres DSN (default: settings / DATABASE_URL).")
@click.option("--feedback-index", envvar="OPENSEARCH_FEEDBACK_INDEX", default=FEEDBACK_INDEX, show_default=True)
@click.option("--word-index", envvar="OPENSEARCH_WORD_INDEX", default=WORD_INDEX, show_default=True)
@click.option("--dry-run", is_flag=True, help="Only count what would be indexed.")
@click.option("--keep-old", is_flag=True, help="Keep the previous concrete indices after the alias swap.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def reindex(
    database_url: str | None, feedback_index: str, word_index: str, dry_run: bool, keep_old: bool, no_progress: bool
) -> None:
    """Rebuild the OpenSearch indices from Postgres into new indices, then swap the aliases."""
    from reactor import config

    try:
        settings = config.load()
    except config.ConfigError as exc:
        raise ReindexError(str(exc)) from None
    database_url = database_url or settings.database_url
    if not database_url:
        raise ReindexError("no database: set DATABASE_URL or pass --database-url")
    if not settings.opensearch_endpoint:
        raise ReindexError("no OpenSearch: set OPENSEARCH_ENDPOINT")
    started = time.perf_counter()
    try:
        summary = asyncio.run(
            rebuild_indices(
                database_url,
                settings,
                feedback_index=feedback_index,
                word_index=word_index,
                dry_run=dry_run,
                keep_old=keep_old,
                progress=not no_progress,
            )
        )
    except click.ClickException:
        raise
    except Exception as exc:  # OpenSearch or Postgres failing mid-way: old indices and aliases are untouched
        raise ReindexError(f"reindex failed, nothing swapped: {describe_error(exc)}") from None
    for alias, info in summary.items():
        verb = "would index" if dry_run else "indexed"
        rejected = f"; {info['failed']} rejected (queued in the outbox, parked there with their error)"
        click.echo(f"{alias}: {verb} {info['docs']} docs into {info['index']}" + (rejected if info["failed"] else ""))
        for doc_id, err in info.get("errors", []):
            click.echo(f"  {doc_id}: {err}", err=True)
    click.echo(f"done in {time.perf_counter() - started:.1f} s")


__all__ = ["rebuild_indices", "reindex"]
