"""`reactor sql`: install, upgrade or remove the schema and triggers."""

from __future__ import annotations

import click

from reactor import logs
from reactor.cli.common import CONTEXT, Fail, connect, database_url, settings_from_env


@click.command("sql", context_settings=CONTEXT)
@click.option("--uninstall", is_flag=True, help="Remove the reactor's triggers and schema (user tables stay).")
@click.option("--force", is_flag=True, help="Re-create functions and triggers even if unchanged.")
@click.option("--no-backfill", is_flag=True, help="Do not enqueue feedback rows that exist already.")
@click.option(
    "--grant-listener",
    "grant_role",
    metavar="ROLE",
    default=None,
    help="Also grant ROLE the least privileges `reactor listen` needs (see reactor/sql/grants.sql).",
)
def sql_cmd(uninstall: bool, force: bool, no_backfill: bool, grant_role: str | None) -> None:
    """Install or upgrade the schema, triggers and backfill (idempotent: safe to run again)."""
    from reactor import sql

    settings = settings_from_env()
    url = database_url(settings)
    with connect(url) as conn:
        if uninstall:
            sql.uninstall(conn)
            click.echo("Removed the reactor schema and triggers; feedbacks, topics, jobs, job_configs untouched.")
            return
        try:
            report = sql.install(conn, job_key=settings.job_key, force=force, backfill=not no_backfill)
        except sql.SchemaError as exc:
            raise Fail(str(exc)) from None
        version = sql.schema_version(conn)
        if grant_role:
            try:
                sql.grant_listener(conn, grant_role)
            except Exception as exc:
                raise Fail(f"cannot grant to role {grant_role!r}: {logs.redact(str(exc)).strip()}") from None
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
