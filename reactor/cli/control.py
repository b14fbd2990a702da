"""`reactor stop|resume`: the original worker's stop_job.py and resume_job.py, as one UPDATE each."""

from __future__ import annotations

import click

from reactor import operations
from reactor.cli.common import CONTEXT, Fail, open_db


def _set_run(run: bool) -> None:
    settings, conn = open_db()
    with conn:
        changed = operations.set_run_next_job(conn, settings.job_key, run)
    if not changed:
        raise Fail(f"no job_configs row with key {settings.job_key!r}: run `reactor sql` first")
    click.echo(f"run_next_job = {str(run).lower()} for {settings.job_key!r}")


@click.command(context_settings=CONTEXT, short_help="Pause processing; the batch in flight finishes.")
def stop() -> None:
    """Pause processing (UPDATE job_configs SET run_next_job=false): the batch in flight finishes, no new
    batch is claimed. Replaces the original worker's `python stop_job.py`.

    \b
    Example:
      reactor stop && reactor status
    """
    _set_run(False)


@click.command(context_settings=CONTEXT, short_help="Resume processing; the backlog is drained.")
def resume() -> None:
    """Resume processing (run_next_job=true): the backlog is drained. Replaces `python resume_job.py`.

    \b
    Example:
      reactor resume
    """
    _set_run(True)
