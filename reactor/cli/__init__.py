"""`reactor` command line: thin click shells over the modules of the data path, one module per command group."""

from __future__ import annotations

import os

import click

from reactor import logs
from reactor.cli import control, daemon, embedded, install, maintenance
from reactor.cli.common import CONTEXT


@click.group(context_settings=CONTEXT)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("REACTOR_LOG_LEVEL", "INFO"),
    show_default="INFO",
    help="Log level of the JSON logs written to stderr.",
)
@click.version_option(package_name="feedback-reactor")
def main(log_level: str) -> None:
    """Feedback Reactor: analyses every committed feedback row (sentiment, topics, word counts).

    Configuration comes from the environment or a .env file: DATABASE_URL (unset: an embedded PostgreSQL
    in ~/.local/share/feedback-reactor), OPENSEARCH_ENDPOINT/USER/PASS, REACTOR_ENV (not `local`: merge the
    AWS Secrets Manager secret REACTOR_SECRET_NAME), REACTOR_MODELS (ONNX folder or `stand-in`).
    """
    logs.setup(log_level)


for command in (
    install.sql_cmd,
    daemon.listen,
    control.stop,
    control.resume,
    control.status,
    maintenance.retry_failed,
    maintenance.reprocess,
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
