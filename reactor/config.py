"""Settings from the environment and `.env`, merged with AWS Secrets Manager outside `local`.

Names are the original worker's (DATABASE_URL, OPENSEARCH_*, FLASK_ENV) plus REACTOR_* knobs. This is the
one place the reactor reads its environment: every value is checked here, so a bad one is refused with one
line naming the variable instead of a traceback wherever it is first used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson

from reactor import logs
from reactor.enrich import DEFAULT_MAX_TEXT_BYTES
from reactor.errors import ConfigError, InvalidSetting
from reactor.sinks.endpoint import register_secrets  # user and password inside OPENSEARCH_ENDPOINT

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    env: str = "local"
    database_url: str | None = None
    listen_url: str | None = None  # the LISTEN connection's URL when DATABASE_URL goes through a transaction pool
    prepared_statements: bool = True  # off behind PgBouncer < 1.21 in transaction mode
    opensearch_endpoint: str | None = None
    opensearch_user: str | None = None
    opensearch_pass: str | None = None
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: str | None = None
    opensearch_aws_region: str | None = None  # set → sign requests with SigV4 (Amazon OpenSearch Service)
    job_key: str = "feedback_analysis"  # job_configs.key the reactor obeys
    job_name: str = "feedback_analysis"  # jobs.job_name it writes
    models: str = "models_onnx"  # ONNX folder, or "stand-in" for the fast fake models
    precision: str = "fp32"
    device: str = "auto"
    token_budget: int | None = None  # padded tokens per model batch; None: the device's default (nlp.onnx)
    log_level: str = "INFO"
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES  # longer texts are parked instead of analysed
    retry_base_s: float | None = None  # backoff base of a failing row; None: the reactor's default
    extra: dict[str, Any] = field(default_factory=dict)
    opensearch_feedback_index: str = "feedback-analysis"  # OPENSEARCH_FEEDBACK_INDEX (an alias the sink manages)
    opensearch_word_index: str = "wordcount-analysis"  # OPENSEARCH_WORD_INDEX
    opensearch_aws_service: str = "es"  # OPENSEARCH_AWS_SERVICE: SigV4 service name ('aoss' for Serverless)

    @property
    def opensearch_enabled(self) -> bool:
        return bool(self.opensearch_endpoint)


_DRIVER_SUFFIX = re.compile(r"^(?:postgres|postgresql)(?:\+[a-z0-9_]+)?://", re.I)


def normalize_database_url(url: str) -> str:
    """Accept the original worker's SQLAlchemy URLs: `postgresql+psycopg2://`, `postgresql+psycopg://` and
    `postgres://` become `postgresql://` (libpq knows no driver suffix); conninfo strings pass unchanged."""
    url = url.strip()
    return _DRIVER_SUFFIX.sub("postgresql://", url, count=1)


def _url(env: Mapping[str, str], name: str) -> str | None:
    """A PostgreSQL URL from the environment, its credentials registered as secrets, SQLAlchemy forms accepted."""
    url = (env.get(name) or "").strip() or None
    if url:
        register_url_credentials(url)
        url = normalize_database_url(url)
    return url


def register_url_credentials(url: str) -> None:
    """Mask the password of a URL wherever it could appear later, in its written and its decoded form, even
    when the URL is malformed (libpq then quotes it whole in its error)."""
    try:
        parts = urlsplit(url)
        raw = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
    except ValueError:
        raw = ""
    for value in (raw, unquote(raw)):
        logs.register_secret(value)
    match = re.search(r"\bpassword\s*=\s*('[^']*'|\S+)", url)  # conninfo form
    if match:
        logs.register_secret(match.group(1).strip("'"))


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _value(env: Mapping[str, str], key: str, default: T, parse: Callable[[str], T], what: str) -> T:
    """env[key] parsed, the default when unset or empty, a ConfigError naming the variable when invalid."""
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise InvalidSetting(f"{key}={raw!r} is not {what}") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(raw)
    return value


def _on_off(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError(raw)


def _one_of(choices: tuple[str, ...] | list[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(raw)
        return raw.lower()

    return parse


def parse_log_level(raw: str) -> str:
    """`info`, `WARNING`... → the logging name; a ValueError for anything else."""
    return _one_of(LOG_LEVELS)(raw).upper()


def environment(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> dict[str, str]:
    """The process environment with `.env` (REACTOR_DOTENV) filled in underneath, or `environ` as given."""
    if dotenv and environ is None:
        from dotenv import load_dotenv

        load_dotenv(os.environ.get("REACTOR_DOTENV", ".env"), override=False)
    return dict(os.environ if environ is None else environ)


def log_level(environ: Mapping[str, str] | None = None) -> str:
    """REACTOR_LOG_LEVEL, read before anything else so that every later line is logged at the right level."""
    levels = ", ".join(LOG_LEVELS)
    return _value(environment(environ), "REACTOR_LOG_LEVEL", "INFO", parse_log_level, f"one of {levels}")


def fetch_secret(name: str, region: str | None) -> dict[str, str]:
    """Read a JSON secret from AWS Secrets Manager (the original worker's production path)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.session.Session().client("secretsmanager", region_name=region)
        raw = client.get_secret_value(SecretId=name)["SecretString"]
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(
            f"cannot read AWS secret {name!r} ({type(exc).__name__}: {exc}); "
            "set REACTOR_ENV=local to use only the environment"
        ) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigError(f"AWS secret {name!r} is not a JSON object") from None
    if not isinstance(data, dict):
        raise ConfigError(f"AWS secret {name!r} is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def load(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Build Settings; outside `local` the AWS secret's keys fill in what the environment lacks."""
    from reactor.nlp.onnx import DEVICES, PRECISIONS

    env = environment(environ, dotenv=dotenv)
    stage = (env.get("REACTOR_ENV") or env.get("FLASK_ENV") or "local").strip().lower()
    if stage != "local":
        secret = fetch_secret(
            env.get("REACTOR_SECRET_NAME", "feedback-reactor"),
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        )
        for key, value in secret.items():
            env.setdefault(key, value)
    logs.register_secret(env.get("OPENSEARCH_PASS"))  # the URLs' passwords: _url and register_secrets below
    database_url, listen_url = (_url(env, name) for name in ("DATABASE_URL", "REACTOR_LISTEN_URL"))
    register_secrets(env.get("OPENSEARCH_ENDPOINT"))
    return Settings(
        env=stage,
        database_url=database_url,
        listen_url=listen_url,
        prepared_statements=_value(env, "REACTOR_PREPARED_STATEMENTS", True, _on_off, "on or off"),
        opensearch_endpoint=env.get("OPENSEARCH_ENDPOINT") or None,
        opensearch_user=env.get("OPENSEARCH_USER") or None,
        opensearch_pass=env.get("OPENSEARCH_PASS") or None,
        opensearch_verify_certs=_flag(env.get("OPENSEARCH_VERIFY_CERTS"), True),
        opensearch_ca_certs=env.get("OPENSEARCH_CA_CERTS") or None,
        opensearch_aws_region=env.get("OPENSEARCH_AWS_REGION") or None,
        job_key=env.get("REACTOR_JOB_KEY", "feedback_analysis"),
        job_name=env.get("REACTOR_JOB_NAME", "feedback_analysis"),
        models=env.get("REACTOR_MODELS", "models_onnx"),
        precision=_value(
            env, "REACTOR_PRECISION", "fp32", _one_of(list(PRECISIONS)), f"one of {', '.join(PRECISIONS)}"
        ),
        device=_value(env, "REACTOR_DEVICE", "auto", _one_of(DEVICES), f"one of {', '.join(DEVICES)}"),
        token_budget=_value(env, "REACTOR_TOKEN_BUDGET", None, _non_negative_int, "a number of tokens ≥ 0"),
        log_level=log_level(env),
        max_text_bytes=_value(
            env, "REACTOR_MAX_TEXT_BYTES", DEFAULT_MAX_TEXT_BYTES, _positive_int, "a number of bytes ≥ 1"
        ),
        retry_base_s=_value(env, "REACTOR_RETRY_BASE_S", None, _non_negative_float, "a number of seconds ≥ 0"),
        opensearch_feedback_index=env.get("OPENSEARCH_FEEDBACK_INDEX") or "feedback-analysis",
        opensearch_word_index=env.get("OPENSEARCH_WORD_INDEX") or "wordcount-analysis",
        opensearch_aws_service=env.get("OPENSEARCH_AWS_SERVICE") or "es",
    )
