"""`reactor db url|stop`: the embedded PostgreSQL."""

from __future__ import annotations

import click

from reactor.cli.common import CONTEXT, database_url, settings_from_env


@click.group(context_settings=CONTEXT)
def db() -> None:
    """The embedded PostgreSQL used when DATABASE_URL is unset."""


@db.command("url", context_settings=CONTEXT)
def db_url() -> None:
    """Start the embedded server if needed and print its connection URL."""
    click.echo(database_url(settings_from_env()))


@db.command("stop", context_settings=CONTEXT)
def db_stop() -> None:
    """Stop the embedded server."""
    from reactor.db import data_dir, stop_embedded

    click.echo("stopped" if stop_embedded() else f"not running ({data_dir() / 'pgdata'})")
