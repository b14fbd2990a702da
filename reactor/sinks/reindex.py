"""`reactor reindex`: rebuild both search indices from PostgreSQL, with no gap for searchers.

Each index name (`feedback-analysis`, `wordcount-analysis`) is an alias to a concrete `<name>-<UTC timestamp>`
index. The command fills fresh concrete indices from one PostgreSQL snapshot, moves the aliases in one atomic
call (a concrete index of the old layout with the alias's name is removed in the same call) and deletes the
old concrete indices. It holds the drain lock throughout (see `indices.rebuild`), so every sink pauses (its
outbox just grows) and afterwards sends the changes made meanwhile through the alias into the new indices.
Documents the new mapping refuses are queued in the outbox, where the sink parks them with their error; parked
documents of the rebuilt indices are sent once more.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from reactor.sinks.client import describe_error, make_client
from reactor.sinks.endpoint import display
from reactor.sinks.indices import rebuild
from reactor.sql import q


class ReindexError(click.ClickException):
    """A failure explained in one line (no traceback)."""


async def rebuild_indices(
    database_url: str,
    settings: Any,
    *,
    feedback_index: str,
    word_index: str,
    dry_run: bool = False,
    keep_old: bool = False,
    progress: bool = True,
    bulk_docs: int = 1000,
) -> dict[str, dict[str, Any]]:
    """Rebuild both indices; returns {alias: {"index", "docs", "failed", "errors", "old"}}."""
    import psycopg
    from tqdm import tqdm

    from reactor.db import explain

    client = make_client(settings, timeout=120.0)
    try:
        try:
            await client.info()
        except Exception as exc:
            where = display(settings.opensearch_endpoint)
            raise ReindexError(f"cannot reach OpenSearch at {where}: {describe_error(exc)}") from None
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                row = await (await conn.execute(q("sink_doc_totals"))).fetchone()
        except psycopg.OperationalError as exc:
            raise ReindexError(explain(exc, database_url)) from None
        assert row is not None
        totals = {"feedback": int(row[0]), "word": int(row[1]) + 1}  # + the accumulated_word_counts document
        aliases = {"feedback": feedback_index, "word": word_index}
        if dry_run:
            return {aliases[k]: {"index": None, "docs": totals[k], "failed": 0, "dry_run": True} for k in aliases}
        bars = {k: tqdm(total=totals[k], desc=aliases[k], unit="doc", disable=not progress) for k in aliases}
        try:
            done = await rebuild(
                database_url,
                client,
                aliases,
                keep_old=keep_old,
                bulk_docs=bulk_docs,
                progress=lambda kind, n: bars[kind].update(n),
            )
        finally:
            for bar in bars.values():
                bar.close()
        assert done is not None  # waiting for the lock never gives up
        return {
            r.alias: {"index": r.index, "docs": r.docs, "failed": len(r.failed), "errors": r.failed[:10], "old": r.old}
            for r in done.values()
        }
    finally:
        await client.close()


@click.command("reindex")
@click.option("--database-url", envvar="DATABASE_URL", help="PostgreSQL URL (default: settings / DATABASE_URL).")
@click.option("--feedback-index", default=None, help="Alias to rebuild [default: OPENSEARCH_FEEDBACK_INDEX].")
@click.option("--word-index", default=None, help="Alias to rebuild [default: OPENSEARCH_WORD_INDEX].")
@click.option("--dry-run", is_flag=True, help="Only count what would be indexed.")
@click.option("--keep-old", is_flag=True, help="Keep the previous concrete indices after the alias swap.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def reindex(
    database_url: str | None,
    feedback_index: str | None,
    word_index: str | None,
    dry_run: bool,
    keep_old: bool,
    no_progress: bool,
) -> None:
    """Rebuild the search indices from PostgreSQL.

    Fills new indices from one snapshot, then swaps the aliases: searchers see no gap, the sink pauses and
    catches up afterwards. Run it when the log shows `opensearch.mapping_outdated`.

    Example: reactor reindex --dry-run
    """
    from reactor import config
    from reactor.db import DatabaseError, resolve_url
    from reactor.sinks.endpoint import parse_endpoint

    try:
        settings = config.load()
        parse_endpoint(settings.opensearch_endpoint)
    except config.ConfigError as exc:  # EndpointError included: a malformed OPENSEARCH_ENDPOINT, no credentials
        raise ReindexError(str(exc)) from None
    try:
        url = resolve_url(database_url or settings.database_url)
    except DatabaseError as exc:
        raise ReindexError(str(exc)) from None
    started = time.perf_counter()
    try:
        summary = asyncio.run(
            rebuild_indices(
                url,
                settings,
                feedback_index=feedback_index or settings.opensearch_feedback_index,
                word_index=word_index or settings.opensearch_word_index,
                dry_run=dry_run,
                keep_old=keep_old,
                progress=not no_progress,
            )
        )
    except click.ClickException:
        raise
    except Exception as exc:  # OpenSearch or PostgreSQL failing mid-way: old indices and aliases are untouched
        raise ReindexError(f"reindex failed, nothing swapped: {describe_error(exc)}") from None
    for alias, info in summary.items():
        verb = "would index" if dry_run else "indexed"
        into = f" into {info['index']}" if info["index"] else ""
        rejected = f"; {info['failed']} rejected (queued in the outbox, parked there with their error)"
        click.echo(f"{alias}: {verb} {info['docs']} docs{into}" + (rejected if info["failed"] else ""))
        for doc_id, err in info.get("errors", []):
            click.echo(f"  {doc_id}: {err}", err=True)
    click.echo(f"done in {time.perf_counter() - started:.1f} s")


__all__ = ["ReindexError", "rebuild_indices", "reindex"]
