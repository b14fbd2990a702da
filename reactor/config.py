"""Settings from the environment and `.env`, merged with AWS Secrets Manager outside `local`.

Names are the original worker's (DATABASE_URL, OPENSEARCH_*, FLASK_ENV) plus REACTOR_* knobs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from reactor import logs

SECRET_KEYS = ("DATABASE_URL", "OPENSEARCH_ENDPOINT", "OPENSEARCH_USER", "OPENSEARCH_PASS")


class ConfigError(Exception):
    """Configuration that cannot work; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    env: str = "local"
    database_url: str | None = None
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
    extra: dict[str, Any] = field(default_factory=dict)
    opensearch_feedback_index: str = "feedback-analysis"  # OPENSEARCH_FEEDBACK_INDEX (an alias the sink manages)
    opensearch_word_index: str = "wordcount-analysis"  # OPENSEARCH_WORD_INDEX
    opensearch_aws_service: str = "es"  # OPENSEARCH_AWS_SERVICE: SigV4 service name ('aoss' for Serverless)

    @property
    def opensearch_enabled(self) -> bool:
        return bool(self.opensearch_endpoint)


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


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


def load(environ: dict[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Build Settings; outside `local` the AWS secret's keys fill in what the environment lacks."""
    if dotenv and environ is None:
        from dotenv import load_dotenv

        load_dotenv(os.environ.get("REACTOR_DOTENV", ".env"), override=False)
    env = dict(os.environ if environ is None else environ)
    stage = (env.get("REACTOR_ENV") or env.get("FLASK_ENV") or "local").strip().lower()
    if stage != "local":
        secret = fetch_secret(
            env.get("REACTOR_SECRET_NAME", "feedback-reactor"),
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        )
        for key, value in secret.items():
            env.setdefault(key, value)
    for key in SECRET_KEYS:
        if key.endswith("PASS"):
            logs.register_secret(env.get(key))
    settings = Settings(
        env=stage,
        database_url=env.get("DATABASE_URL") or None,
        opensearch_endpoint=env.get("OPENSEARCH_ENDPOINT") or None,
        opensearch_user=env.get("OPENSEARCH_USER") or None,
        opensearch_pass=env.get("OPENSEARCH_PASS") or None,
        opensearch_verify_certs=_flag(env.get("OPENSEARCH_VERIFY_CERTS"), True),
        opensearch_ca_certs=env.get("OPENSEARCH_CA_CERTS") or None,
        opensearch_aws_region=env.get("OPENSEARCH_AWS_REGION") or None,
        job_key=env.get("REACTOR_JOB_KEY", "feedback_analysis"),
        job_name=env.get("REACTOR_JOB_NAME", "feedback_analysis"),
        models=env.get("REACTOR_MODELS", "models_onnx"),
        precision=env.get("REACTOR_PRECISION", "fp32"),
        device=env.get("REACTOR_DEVICE", "auto"),
        opensearch_feedback_index=env.get("OPENSEARCH_FEEDBACK_INDEX") or "feedback-analysis",
        opensearch_word_index=env.get("OPENSEARCH_WORD_INDEX") or "wordcount-analysis",
        opensearch_aws_service=env.get("OPENSEARCH_AWS_SERVICE") or "es",
    )
    from reactor.sinks.endpoint import register_secrets  # user and password inside OPENSEARCH_ENDPOINT

    register_secrets(settings.opensearch_endpoint)
    if settings.database_url:
        _register_url_password(settings.database_url)
    return settings


def _register_url_password(url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    with contextlib.suppress(Exception):  # a malformed URL is reported where it is used
        logs.register_secret(str(conninfo_to_dict(url).get("password") or ""))
