"""`reactor retry-failed|reprocess`: give work another go."""

from __future__ import annotations

from typing import Any

import click

from reactor.cli.common import CONTEXT, connect, database_url, load_enricher, settings_from_env


@click.command("retry-failed", context_settings=CONTEXT)
@click.option(
    "--only",
    type=click.Choice(["queue", "outbox"]),
    default=None,
    help="Only feedback rows parked by the reactor (queue) or only search documents parked by the sink (outbox).",
)
def retry_failed(only: str | None) -> None:
    """Give parked work another go: failed feedback rows back into the queue, and OpenSearch documents
    parked after a permanent error back into the outbox drain (after you fixed the cause)."""
    from reactor.sql import q

    settings = settings_from_env()
    with connect(database_url(settings)) as conn:
        if only != "outbox":
            moved = conn.execute(q("retry_failed")).rowcount
            click.echo(f"requeued {moved} failed rows")
        if only != "queue":
            docs = conn.execute(q("retry_parked_outbox")).rowcount
            click.echo(f"requeued {docs} parked search documents")
        conn.execute("SELECT pg_notify('reactor_work', '')")


@click.command(context_settings=CONTEXT)
@click.option(
    "--stale",
    "mode",
    flag_value="stale",
    default=True,
    help="Rows analysed with another topic set or other models than the current ones (default).",
)
@click.option("--all", "mode", flag_value="all", help="Every analysed row.")
@click.option(
    "--since",
    "since",
    type=click.DateTime(),
    default=None,
    help="Rows analysed before this date/time (e.g. after a fix deployed then).",
)
@click.option("--models", default=None, help="Model folder whose ids count as current (default REACTOR_MODELS).")
@click.option("--chunk", default=5000, show_default=True, help="Rows requeued per transaction.")
@click.option("--dry-run", is_flag=True, help="Only count the rows.")
def reprocess(mode: str, since: Any, models: str | None, chunk: int, dry_run: bool) -> None:
    """Requeue analysed rows for a fresh analysis at low priority (new feedback is always served first)."""
    from tqdm import tqdm

    from reactor.enrich import topic_set_id
    from reactor.sql import q

    if since is not None:
        mode = "since"
    settings = settings_from_env()
    url = database_url(settings)
    enricher = load_enricher(settings, models) if mode == "stale" else None
    with connect(url) as conn:
        labels = [r[0] for r in conn.execute(q("active_topics")).fetchall()]
        params = {
            "mode": mode,
            "since": since,
            "topic_set": topic_set_id(labels),
            "chunk": chunk,
            "after": -1,
            "sentiment_model": enricher.sentiment.model_id if enricher else None,
            "zero_shot_model": enricher.zero_shot.model_id if enricher else None,
        }
        total = conn.execute(q("reprocess_count"), params).fetchone()[0]
        if dry_run or not total:
            click.echo(f"{total} analysed rows match ({mode})")
            return
        queued = 0
        with tqdm(total=total, unit="row", desc="requeue", disable=None) as bar:
            while True:
                last, seen, added = conn.execute(q("reprocess_chunk"), params).fetchone()
                if not seen:
                    break
                conn.execute("SELECT pg_notify('reactor_work', '')")
                queued += added
                params["after"] = last
                bar.update(seen)
    click.echo(f"requeued {queued} of {total} rows ({mode}); rows already waiting were left as they are")
