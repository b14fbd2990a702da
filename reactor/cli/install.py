"""`reactor sql`: install, upgrade or remove the schema and triggers."""

from __future__ import annotations

import sys

import click
import psycopg

from reactor import sql
from reactor.cli.common import CONTEXT, Fail, one_line, open_db

# What each table of schema `reactor` holds, for the uninstall summary (unknown tables are listed bare).
TABLE_MEANING = {
    "feedback_analysis": "sentiment and topics of every analysed row: re-analysing costs model time",
    "word_counts": "accumulated word counts",
    "queue": "feedback changes waiting for analysis",
    "inbox": "feedback changes just captured, not yet moved into the queue",
    "failed": "rows parked after max_attempts, with their errors",
    "outbox": "search documents not yet indexed",
    "job_runs": "per-batch details of the jobs rows",
    "workers": "live reactor heartbeats",
    "schema_version": "applied migrations",
    "installed": "installed trigger versions",
}


@click.command("sql", context_settings=CONTEXT, short_help="Install or upgrade the schema and triggers.")
@click.option(
    "--uninstall", is_flag=True, help="Remove the reactor's triggers and schema with its analyses (user tables stay)."
)
@click.option("--yes", "-y", is_flag=True, help="With --uninstall: do not ask (needed when not on a terminal).")
@click.option("--force", is_flag=True, help="Re-create functions and triggers even if unchanged.")
@click.option("--no-backfill", is_flag=True, help="Do not enqueue feedback rows that exist already.")
@click.option(
    "--grant-listener",
    "grant_role",
    metavar="ROLE",
    default=None,
    help="Also grant ROLE the least privileges `reactor listen` needs (see reactor/sql/grants.sql).",
)
def sql_cmd(uninstall: bool, yes: bool, force: bool, no_backfill: bool, grant_role: str | None) -> None:
    """Install or upgrade the schema, triggers and backfill (idempotent: safe to run again).

    \b
    Examples:
      reactor sql                                # install, or upgrade after a new release
      reactor sql --grant-listener reactor_worker
      reactor sql --uninstall                    # says what it drops, asks first
    """
    settings, conn = open_db()
    with conn:
        if uninstall:
            _uninstall(conn, yes)
            return
        try:
            report = sql.install(conn, job_key=settings.job_key, force=force, backfill=not no_backfill)
        except sql.SchemaError as exc:
            raise Fail(str(exc)) from None
        version = sql.schema_version(conn)
        if grant_role:
            try:
                sql.grant_listener(conn, grant_role)
            except psycopg.Error as exc:
                raise Fail(f"cannot grant to role {grant_role!r}: {one_line(str(exc))}") from None
            click.echo(f"granted role {grant_role!r} what `reactor listen` needs")
    if not report.changed:
        click.echo(f"Schema is up to date (version {version}); nothing to do.")
        return
    for name in report.applied_migrations:
        click.echo(f"applied migration {name}")
    if report.triggers_updated:
        click.echo("installed functions and triggers")
    if report.config_created:
        click.echo(f"created job_configs row {settings.job_key!r} (batch_size 10, run_next_job true)")
    if report.backfilled:
        click.echo(f"enqueued {report.backfilled} existing feedback rows")
    click.echo(f"schema version {version}")


def _uninstall(conn: psycopg.Connection, yes: bool) -> None:
    """Say exactly what goes (rows per table), then ask on a terminal or insist on --yes elsewhere."""
    counts = sql.uninstall_counts(conn)
    if not counts:
        sql.uninstall(conn)  # leftover triggers, if any
        click.echo("The reactor schema is not installed: nothing to drop.")
        return
    width = max(len(t) for t in counts)
    click.echo("This drops schema `reactor` and the reactor's triggers on feedbacks, job_configs and topics:")
    for table, rows in counts.items():
        meaning = TABLE_MEANING.get(table)
        click.echo(f"  reactor.{table:<{width}} {rows:>12,} rows" + (f"  ({meaning})" if meaning else ""))
    click.echo("Your tables feedbacks, topics, jobs, job_configs and their rows stay.")
    if not yes:
        if not sys.stdin.isatty():
            raise Fail("not dropping anything: pass --yes to uninstall when not on a terminal")
        click.confirm("Drop all of this?", default=False, abort=True)
    sql.uninstall(conn)
    total = sum(counts.values())
    click.echo(
        f"Removed the reactor schema and triggers ({total:,} rows in {len(counts)} tables); user tables untouched."
    )
