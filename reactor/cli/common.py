"""What every command shares: the one-line error, settings, the database URL and connection, the models."""

from __future__ import annotations

import logging
from typing import Any

import click
import orjson
import psycopg

from reactor import config as config_mod
from reactor import logs

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
log = logging.getLogger("reactor.cli")


class Fail(click.ClickException):
    """A clean one-line error (no traceback, no secret) with a chosen exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(one_line(message))
        self.exit_code = code


one_line = logs.first_line  # the CLI's name for it


def describe_db_error(exc: psycopg.Error) -> str:
    """A database error in one line; a missing reactor schema names the command that installs it."""
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return f"the reactor schema is not installed in this database ({text}): run `reactor sql`"
    if isinstance(exc, psycopg.OperationalError):
        return f"lost the database connection: {text}"
    return f"database error: {text}"


class Group(click.Group):
    """Turns what escapes a command into one line: database errors, and bugs (traceback at --log-level debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except psycopg.Error as exc:
            raise Fail(describe_db_error(exc)) from None
        except Exception as exc:
            log.debug("cli.unexpected_error", exc_info=True)
            raise Fail(
                f"unexpected {type(exc).__name__}: {one_line(str(exc))} (--log-level debug shows the traceback)"
            ) from None


def echo_json(doc: Any) -> None:
    """One indented JSON document on stdout (`--json` of status, show, failed)."""
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode())


def settings_from_env() -> config_mod.Settings:
    """The one Settings object; a value written wrong exits 2 (like a bad option), anything else 1."""
    from reactor.db import use_prepared_statements

    try:
        settings = config_mod.load()
    except config_mod.InvalidSetting as exc:
        raise Fail(str(exc), code=2) from None
    except config_mod.ConfigError as exc:
        raise Fail(str(exc)) from None
    use_prepared_statements(settings.prepared_statements)
    return settings


def database_url(settings: config_mod.Settings) -> str:
    from reactor.db import DatabaseError, InvalidDatabaseURL, resolve_url

    try:
        return resolve_url(settings.database_url)
    except InvalidDatabaseURL as exc:
        raise Fail(str(exc), code=2) from None
    except DatabaseError as exc:
        raise Fail(str(exc)) from None
    except Exception as exc:  # embedded server failed to start
        raise Fail(f"cannot start the embedded PostgreSQL: {exc}") from None


def connect(url: str, autocommit: bool = True) -> psycopg.Connection:
    from reactor.db import DatabaseError, connect

    try:
        return connect(url, autocommit=autocommit)
    except DatabaseError as exc:
        raise Fail(str(exc)) from None


def open_db() -> tuple[config_mod.Settings, psycopg.Connection]:
    """Settings and an autocommit connection: what most commands start with."""
    settings = settings_from_env()
    return settings, connect(database_url(settings))


def load_enricher(settings: config_mod.Settings, models: str | None = None) -> Any:
    """The Enricher for `models` (ONNX folder, or `stand-in`), with a clear error for a missing folder."""
    from reactor.enrich import Enricher
    from reactor.nlp.onnx import ModelLoadError, load_models

    source = models or settings.models
    if source in ("stand-in", "standin"):
        from reactor.nlp.standin import StandInSentiment, StandInZeroShot

        return Enricher(StandInSentiment(), StandInZeroShot(), max_text_bytes=settings.max_text_bytes)
    try:
        sentiment, zero_shot = load_models(
            source, precision=settings.precision, device=settings.device, token_budget=settings.token_budget
        )
    except ModelLoadError as exc:
        raise Fail(str(exc)) from None
    return Enricher(sentiment, zero_shot, max_text_bytes=settings.max_text_bytes)
