"""`reactor stop|resume|status`: the original worker's control scripts."""

from __future__ import annotations

import sys

import click

from reactor import logs
from reactor.cli.common import CONTEXT, Fail, connect, database_url, settings_from_env


def _set_run(run: bool) -> None:
    from reactor.sql import q

    settings = settings_from_env()
    with connect(database_url(settings)) as conn:
        changed = conn.execute(q("set_run_next_job"), {"run": run, "key": settings.job_key}).rowcount
    if not changed:
        raise Fail(f"no job_configs row with key {settings.job_key!r}: run `reactor sql` first")
    click.echo(f"run_next_job = {str(run).lower()} for {settings.job_key!r}")


@click.command(context_settings=CONTEXT)
def stop() -> None:
    """Pause processing (UPDATE job_configs SET run_next_job=false): the batch in flight finishes."""
    _set_run(False)


@click.command(context_settings=CONTEXT)
def resume() -> None:
    """Resume processing (run_next_job=true): the backlog is drained."""
    _set_run(True)


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Show queue, failures, workers, last batch. Exit 1 if a job is incomplete, 0 if none (or no
    connection), 2 on a query error — the original worker's contract."""
    import orjson
    import psycopg

    from reactor.db import DatabaseError, connect, resolve_url
    from reactor.sql import q

    settings = settings_from_env()
    try:
        url = resolve_url(settings.database_url, announce=False)
        conn = connect(url, autocommit=True)
    except (DatabaseError, Exception) as exc:
        click.echo(f"no connection: {logs.redact(str(exc))}", err=True)
        sys.exit(0)
    try:
        with conn:
            row = conn.execute(q("status"), {"key": settings.job_key}).fetchone()
            last = conn.execute(q("last_job"), {"job_name": settings.job_name}).fetchone()
            workers = conn.execute(q("workers")).fetchall()
    except psycopg.Error as exc:
        click.echo(f"status query failed: {logs.redact(str(exc)).strip()}", err=True)
        sys.exit(2)
    assert row is not None
    queue_depth, in_flight, failed, analysed, outbox, outbox_parked, incomplete, cfg = row
    cfg = cfg or {}
    info = {
        "state": "running" if cfg.get("run_next_job", True) not in (False, "false") else "paused",
        "batch_size": cfg.get("batch_size"),
        "queue_depth": queue_depth,
        "in_flight": in_flight,
        "failed_rows": failed,
        "analysed": analysed,
        "outbox_depth": outbox,
        "outbox_parked": outbox_parked,
        "incomplete_jobs": incomplete,
        "last_batch": None
        if not last
        else {
            "job_id": last[0],
            "status": last[1],
            "last_processed_id": last[2],
            "at": last[3].isoformat(),
            "rows": last[4],
            "duration_ms": last[5],
            "error": last[6],
        },
        "workers": [
            {
                "id": w[0],
                "host": w[1],
                "pid": w[2],
                "started_at": w[3].isoformat(),
                "last_seen": w[4].isoformat(),
                "state": w[5],
            }
            for w in workers
        ],
    }
    if as_json:
        click.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(f"state: {info['state']} (batch_size {info['batch_size']})")
        click.echo(
            f"queue: {queue_depth} waiting ({in_flight} leased), {failed} failed, {analysed} analysed, outbox {outbox}"
            + (f" ({outbox_parked} parked: reactor retry-failed --only outbox)" if outbox_parked else "")
        )
        if info["last_batch"]:
            lb = info["last_batch"]
            click.echo(
                f"last batch: job {lb['job_id']} {lb['status']}, {lb['rows']} rows, "
                f"{(lb['duration_ms'] or 0):.1f} ms, last id {lb['last_processed_id']}"
                + (f", error: {lb['error']}" if lb["error"] else "")
            )
        click.echo(f"workers: {len(workers)}")
        for w in info["workers"]:
            click.echo(f"  {w['id']} {w['state']} last seen {w['last_seen']}")
        click.echo(f"incomplete jobs: {incomplete}")
    sys.exit(1 if incomplete else 0)
