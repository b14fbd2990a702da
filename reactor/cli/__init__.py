"""`reactor` command line: thin click shells over the modules of the data path, one module per command group."""

from __future__ import annotations

import click

from reactor import config, logs
from reactor.cli import control, daemon, embedded, install, maintenance, rows, status
from reactor.cli.common import CONTEXT, Fail, Group
from reactor.nlp.export_cli import export_models
from reactor.sinks.reindex import reindex


@click.group(cls=Group, context_settings=CONTEXT, invoke_without_command=True)
@click.option(
    "--log-level",
    type=click.Choice(config.LOG_LEVELS, case_sensitive=False),
    metavar="LEVEL",
    default=None,
    help=f"Level of the JSON logs on stderr: {', '.join(config.LOG_LEVELS)}.  [default: REACTOR_LOG_LEVEL, else info]",
)
@click.version_option(package_name="feedback-reactor")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """Feedback Reactor: analyses every committed feedback row (sentiment, topics, word counts).

    Configuration comes from the environment or a .env file: DATABASE_URL (unset: an embedded PostgreSQL
    in ~/.local/share/feedback-reactor), OPENSEARCH_ENDPOINT/USER/PASS, REACTOR_ENV (not `local`: merge the
    AWS Secrets Manager secret REACTOR_SECRET_NAME), REACTOR_MODELS (ONNX folder or `stand-in`).

    \b
    Example:
      reactor sql && reactor listen --http 127.0.0.1:9187
      reactor COMMAND --help
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


# Commands that live with their subsystem; their one-line summary and example are given here when their
# module does not set them, so that `reactor --help` never cuts a line and every command shows an example.
for command, summary, example in (
    (export_models, "Build the ONNX model folders (Hub ids or checkpoints).", "reactor export-models --tiny"),
    (reindex, "Rebuild both OpenSearch indices from Postgres.", "reactor reindex --dry-run"),
):
    command.short_help = command.short_help or summary
    if "Example" not in (command.help or "") + (command.epilog or ""):
        command.epilog = f"Example: {example}"
    main.add_command(command)
