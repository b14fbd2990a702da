"""`reactor retry-failed|reprocess`: give work another go."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from reactor import operations
from reactor.cli.common import CONTEXT, connect, database_url, load_enricher, open_db, settings_from_env

MAX_WAITING = 10_000  # low-priority rows queued at once by `reprocess`: bounds the queue table, not the pace
WAIT_POLL_S = 0.5
STALL_NOTE_S = 30.0


class PlainDate(click.DateTime):
    """A date or date and time, shown and explained as `YYYY-MM-DD[THH:MM]` rather than strptime codes."""

    name = "date"
    metavar = "YYYY-MM-DD[THH:MM]"

    def __init__(self) -> None:
        super().__init__(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:  # type: ignore[override]
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a date: use {self.metavar}, e.g. 2024-05-01 or 2024-05-01T14:30", param, ctx)


@click.command("retry-failed", context_settings=CONTEXT, short_help="Requeue parked rows and search documents.")
@click.option(
    "--only",
    type=click.Choice(["queue", "outbox"]),
    default=None,
    help="Only feedback rows parked by the reactor (queue) or only search documents parked by the sink (outbox).",
)
def retry_failed(only: str | None) -> None:
    """Give parked work another go: failed feedback rows back into the queue, and OpenSearch documents
    parked after a permanent error back into the outbox drain (after you fixed the cause).

    \b
    Example:
      reactor failed                      # what is parked, and why
      reactor retry-failed --only queue
    """
    _, conn = open_db()
    with conn:
        moved, docs = operations.retry_failed(conn, rows=only != "outbox", documents=only != "queue")
    if only != "outbox":
        click.echo(f"requeued {moved} failed rows")
    if only != "queue":
        click.echo(f"requeued {docs} parked search documents")


@click.command(context_settings=CONTEXT, short_help="Requeue analysed rows for a fresh analysis.")
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
    type=PlainDate(),
    default=None,
    help="Rows analysed before this date/time, in the database's time zone (e.g. when a fix was deployed).",
)
@click.option(
    "--models",
    metavar="DIR|stand-in",
    default=None,
    help="Model folder whose ids count as current (default: REACTOR_MODELS).",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1, max=1_000_000),
    metavar="ROWS",
    default=5000,
    show_default=True,
    help="Rows requeued per transaction.",
)
@click.option(
    "--max-waiting",
    type=click.IntRange(min=0, max=100_000_000),
    metavar="ROWS",
    default=MAX_WAITING,
    show_default=True,
    help="Requeue more only while fewer low-priority rows wait in the queue (it stays small, the reactors set "
    "the pace); 0: requeue everything at once.",
)
@click.option("--dry-run", is_flag=True, help="Only count the rows.")
def reprocess(
    mode: str, since: datetime | None, models: str | None, chunk: int, max_waiting: int, dry_run: bool
) -> None:
    """Requeue analysed rows for a fresh analysis at low priority (new feedback is always served first).

    The rows go in as the reactors take them (at most --max-waiting at a time), so the command runs until the
    last chunk is queued; stopped early (Ctrl-C), what it queued stays queued, and running `--stale` or
    `--since` again carries on where it stopped.

    \b
    Examples:
      reactor reprocess --dry-run            # how many rows are stale
      reactor reprocess --since 2024-05-01
      reactor reprocess --all --max-waiting 0
    """
    from tqdm import tqdm

    from reactor.enrich import topic_set_id

    if since is not None:
        if mode == "all":
            raise click.UsageError("--all and --since exclude each other")
        mode = "since"
    settings = settings_from_env()
    url = database_url(settings)
    enricher = load_enricher(settings, models) if mode == "stale" else None
    with connect(url) as conn:
        labels = operations.active_topics(conn)
        params = {
            "mode": mode,
            "since": since,
            "topic_set": topic_set_id(labels),
            "chunk": chunk,
            "after": -1,
            "sentiment_model": enricher.sentiment.model_id if enricher else None,
            "zero_shot_model": enricher.zero_shot.model_id if enricher else None,
        }
        total = operations.reprocess_count(conn, params)
        if mode == "stale" and not dry_run:  # batches computing now may still use the old topics or models
            in_flight = operations.reprocess_in_flight(conn)
            if in_flight:
                click.echo(f"requeued {in_flight} rows a batch is computing right now (with the old topics or models)")
        if dry_run or not total:
            click.echo(f"{total} analysed rows match ({mode})")
            return
        queued = 0
        if max_waiting:  # half the limit at most: the next chunk goes in while the reactors work on the last
            params["chunk"] = min(chunk, max(1, max_waiting // 2))
        with tqdm(total=total, unit="row", desc="requeue", disable=None) as bar:
            while True:
                if max_waiting:
                    _wait_for_room(conn, max_waiting - params["chunk"], bar.write)
                if mode == "stale":  # topics edited while it runs: rows analysed with the new ones are not stale
                    params["topic_set"] = topic_set_id(operations.active_topics(conn))
                chunk_row = operations.reprocess_chunk(conn, params)
                if chunk_row is None:
                    break
                last, seen, added = chunk_row
                queued += added
                params["after"] = last
                bar.update(seen)
    click.echo(f"requeued {queued} of {total} rows ({mode}); rows already waiting were left as they are")
    if params["topic_set"] != topic_set_id(labels):
        click.echo(
            "the topics changed while it ran: it went on with the new ones, and rows it had already passed may be "
            "stale now (`reactor reprocess --dry-run` counts them)"
        )


def _wait_for_room(conn: operations.Conn, room: int, say: Callable[[str], None]) -> None:
    """Block while more than `room` low-priority rows wait; say once when they stop going down."""
    best, since, said = None, time.monotonic(), False
    while (waiting := operations.reprocess_waiting(conn, room + 1)) > room:
        if best is None or waiting < best:
            best, since = waiting, time.monotonic()
        elif not said and time.monotonic() - since > STALL_NOTE_S:
            say(
                f"{waiting}+ rows wait for a reactor and none went for {STALL_NOTE_S:.0f} s: is `reactor listen` "
                "running, or is the job stopped (`reactor status`)? Ctrl-C leaves what is queued in place."
            )
            said = True
        time.sleep(WAIT_POLL_S)


PRUNE_BATCH = 1000


@click.command(context_settings=CONTEXT, short_help="Delete finished jobs rows older than the retention.")
@click.option(
    "--days",
    type=click.IntRange(min=0, max=100_000),
    metavar="N",
    default=None,
    help="Keep jobs rows of the last N days.  [default: job_configs jobs_retention_days, else 30]",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=100_000),
    metavar="ROWS",
    default=PRUNE_BATCH,
    show_default=True,
    help="Rows deleted per transaction (small: the reactor keeps writing meanwhile).",
)
@click.option("--dry-run", is_flag=True, help="Only count the rows.")
def prune(days: int | None, batch: int, dry_run: bool) -> None:
    """Delete this reactor's finished `jobs` rows (with their reactor.job_runs details) older than the
    retention, in small batches. Running jobs and the newest job are always kept.

    \b
    Example:
      reactor prune --dry-run
      reactor prune --days 7
    """
    from tqdm import tqdm

    settings, conn = open_db()
    with conn:
        if days is None:
            days = operations.job_config(conn, settings.job_key).jobs_retention_days
        params = {"job_name": settings.job_name, "days": days, "batch": batch}
        total = operations.prune_count(conn, params)
        if dry_run or not total:
            click.echo(f"{total} jobs rows of {settings.job_name!r} are older than {days} days")
            return
        deleted = 0
        with tqdm(total=total, unit="row", desc="prune jobs", disable=None) as bar:
            while True:
                gone = operations.prune_batch(conn, params)
                deleted += gone
                bar.update(gone)
                if gone < batch:
                    break
    click.echo(f"deleted {deleted} jobs rows of {settings.job_name!r} older than {days} days")
