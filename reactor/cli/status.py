"""`reactor status`: what the reactor is doing, with the original `job_status.py` exit contract.

Exit 1 while an incomplete job exists, 0 when none or when the database cannot be reached (the settings
included: a missing AWS secret is "no connection"), 2 when a query fails. Read-only: it never starts the
embedded server and never writes.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import psycopg

from reactor import config as config_mod
from reactor import operations
from reactor.cli.common import CONTEXT, describe_db_error, echo_json, one_line

INCOMPLETE, NONE, QUERY_ERROR = 1, 0, 2


def _connect() -> tuple[config_mod.Settings, psycopg.Connection]:
    """Settings and a connection, or DatabaseError/ConfigError: both mean "no connection" here."""
    from reactor.db import connect, resolve_url

    settings = config_mod.load()
    return settings, connect(resolve_url(settings.database_url, announce=False, start=False), autocommit=True)


def render(info: dict[str, Any]) -> list[str]:
    """The human view of `operations.status`'s document."""
    cfg = info["config"]
    settings = ", ".join(f"{k} {v}" for k, v in cfg.items() if k != "run_next_job")
    lines = [f"state: {info['state']} ({settings})"]
    lines += [f"warning: {w}" for w in info["warnings"]]
    lines.append(
        f"queue: {info['queue_depth']} waiting ({info['in_flight']} leased, {info['retrying']} retrying), "
        f"{info['failed_rows']} failed, {info['analysed']} analysed"
        + (": reactor failed" if info["failed_rows"] else "")
    )
    stale = info["stale"]
    if stale and stale["rows"]:
        lines.append(
            f"stale: {stale['rows']} analysed rows (topic set changed: {stale['topics_changed']}, "
            f"models changed: {stale['models_changed']}): reactor reprocess --stale"
        )
    lines.append(f"topics: {info['active_topics']} active")
    search = f"search: outbox {info['outbox_depth']}"
    if info["outbox_retrying"]:
        search += f" ({info['outbox_retrying']} retrying, last error: {info['outbox_last_error']})"
    if info["outbox_parked"]:
        search += f", {info['outbox_parked']} parked: reactor failed / reactor retry-failed --only outbox"
    lines.append(search)
    if info["last_batch"]:
        lb = info["last_batch"]
        lines.append(
            f"last batch: job {lb['job_id']} {lb['status']}, {lb['rows']} rows, "
            f"{(lb['duration_ms'] or 0):.1f} ms, last id {lb['last_processed_id']}"
            + (f", error: {lb['error']}" if lb["error"] else "")
        )
    lines.append(f"workers: {len(info['workers'])}")
    lines += [f"  {w['id']} {w['state']} last seen {w['last_seen']}" for w in info["workers"]]
    abandoned = info["abandoned_jobs"]
    lines.append(
        f"incomplete jobs: {info['incomplete_jobs']}"
        + (f" ({abandoned} abandoned by a reactor that stopped: counted as failed)" if abandoned else "")
    )
    return lines


def _finish(as_json: bool, code: int, doc: dict[str, Any], line: str | None = None) -> None:
    if as_json:
        echo_json(doc)
    elif line:
        click.echo(line, err=True)
    sys.exit(code)


@click.command(context_settings=CONTEXT, short_help="Queue, failures, workers; exit 1 while a job runs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (also when the database is down).")
def status(as_json: bool) -> None:
    """Show state, queue, failures, stale rows, search documents, workers and the last batch.

    Exit codes are the original worker's job_status.py: 1 an incomplete job exists, 0 none (or no
    connection), 2 a query failed.

    \b
    Example:
      reactor status; echo $?
      reactor status --json | jq .queue_depth
    """
    from reactor.db import DatabaseError

    try:
        settings, conn = _connect()
    except (config_mod.ConfigError, DatabaseError, psycopg.Error, OSError) as exc:
        error = one_line(str(exc)) or type(exc).__name__
        _finish(as_json, NONE, {"connected": False, "error": error}, f"no connection: {error}")
        return
    try:
        with conn:
            info = operations.status(conn, settings.job_key, settings.job_name)
    except Exception as exc:  # any failure here must read as 2, never as 1 ("a job is incomplete")
        error = (
            describe_db_error(exc) if isinstance(exc, psycopg.Error) else f"{type(exc).__name__}: {one_line(str(exc))}"
        )
        _finish(as_json, QUERY_ERROR, {"connected": True, "error": error}, f"status query failed: {error}")
        return
    code = INCOMPLETE if info["incomplete_jobs"] else NONE
    if as_json:
        echo_json(info)
    else:
        for line in render(info):
            click.echo(line)
    sys.exit(code)
