"""`reactor` command line: thin click shells over the modules of the data path, one module per command group."""

from __future__ import annotations

import click

from reactor import config, logs
from reactor.cli import control, daemon, embedded, install, maintenance, rows, status
from reactor.cli.common import CONTEXT, Fail, Group


@click.group(cls=Group, context_settings=CONTEXT, invoke_without_command=True)
@click.option(
    "--log-level",
    type=click.Choice(config.LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Level of the JSON logs written to stderr.  [default: REACTOR_LOG_LEVEL, else info]",
)
@click.version_option(package_name="feedback-reactor")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """Feedback Reactor: analyses every committed feedback row (sentiment, topics, word counts).

    Configuration comes from the environment or a .env file: DATABASE_URL (unset: an embedded PostgreSQL
    in ~/.local/share/feedback-reactor), OPENSEARCH_ENDPOINT/USER/PASS, REACTOR_ENV (not `local`: merge the
    AWS Secrets Manager secret REACTOR_SECRET_NAME), REACTOR_MODELS (ONNX folder or `stand-in`).
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)
    try:
        level = config.parse_log_level(log_level) if log_level else config.log_level()
    except config.ConfigError as exc:
        raise Fail(str(exc), code=2) from None
    logs.setup(level)


for command in (
    install.sql_cmd,
    daemon.listen,
    control.stop,
    control.resume,
    status.status,
    maintenance.retry_failed,
    maintenance.reprocess,
    maintenance.prune,
    rows.show,
    rows.failed,
    embedded.db,
):
    main.add_command(command)


def _register_optional() -> None:
    """Commands whose modules come with optional parts (models export, search sink)."""
    try:
        from reactor.nlp.export_cli import export_models

        main.add_command(export_models, "export-models")
    except ImportError:
        pass
    try:
        from reactor.sinks.cli import reindex

        main.add_command(reindex, "reindex")
    except ImportError:
        pass


_register_optional()
