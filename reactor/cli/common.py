"""What every command shares: the one-line error, settings, the database URL and connection."""

from __future__ import annotations

import os
from typing import Any

import click

from reactor import config as config_mod
from reactor import logs

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class Fail(click.ClickException):
    """A clean one-line error (no traceback) with a chosen exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = code


def settings_from_env() -> config_mod.Settings:
    try:
        return config_mod.load()
    except config_mod.ConfigError as exc:
        raise Fail(str(exc)) from None


def database_url(settings: config_mod.Settings) -> str:
    from reactor.db import DatabaseError, resolve_url

    try:
        return resolve_url(settings.database_url)
    except DatabaseError as exc:
        raise Fail(str(exc)) from None
    except Exception as exc:  # embedded server failed to start
        raise Fail(f"cannot start the embedded PostgreSQL: {logs.redact(str(exc))}") from None


def connect(url: str, autocommit: bool = True) -> Any:
    from reactor.db import DatabaseError, connect

    try:
        return connect(url, autocommit=autocommit)
    except DatabaseError as exc:
        raise Fail(str(exc)) from None


def load_enricher(settings: config_mod.Settings, models: str | None = None) -> Any:
    """The Enricher for `models` (ONNX folder, or `stand-in`), with a clear error for a missing folder."""
    from reactor.enrich import Enricher

    source = models or settings.models
    if source in ("stand-in", "standin"):
        from reactor.nlp.standin import StandInSentiment, StandInZeroShot

        return Enricher(StandInSentiment(), StandInZeroShot(), max_text_bytes=_max_text_bytes())
    try:
        from reactor.nlp.onnx import ModelLoadError, load_models
    except ImportError as exc:
        raise Fail(f"the ONNX runtime models are not available ({exc}); use --models stand-in") from None
    try:
        sentiment, zero_shot = load_models(source, precision=settings.precision, device=settings.device)
    except ModelLoadError as exc:
        raise Fail(str(exc)) from None
    return Enricher(sentiment, zero_shot, max_text_bytes=_max_text_bytes())


def _max_text_bytes() -> int:
    from reactor.enrich import DEFAULT_MAX_TEXT_BYTES

    return int(os.environ.get("REACTOR_MAX_TEXT_BYTES") or DEFAULT_MAX_TEXT_BYTES)
