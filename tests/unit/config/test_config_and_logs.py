"""Settings, AWS Secrets Manager (moto: the one thing that cannot run here) and log redaction."""

from __future__ import annotations

import io
import json
import logging

import boto3
import pytest
from moto import mock_aws

from reactor import config, logs
from reactor.control import JobConfig


def test_local_env_reads_environment_only():
    s = config.load({"DATABASE_URL": "postgresql://u@h/db", "OPENSEARCH_ENDPOINT": "http://os:9200"})
    assert s.env == "local" and s.database_url == "postgresql://u@h/db" and s.opensearch_enabled


def test_no_opensearch_endpoint_disables_indexing():
    assert not config.load({}).opensearch_enabled


@mock_aws
def test_non_local_merges_aws_secret_without_overriding_environment():
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    client.create_secret(
        Name="feedback-reactor",
        SecretString=json.dumps({"DATABASE_URL": "postgresql://app:pw1234@db/prod", "OPENSEARCH_PASS": "hunter22"}),
    )
    s = config.load({"FLASK_ENV": "production", "AWS_REGION": "eu-west-1", "OPENSEARCH_ENDPOINT": "https://x"})
    assert s.env == "production"
    assert s.database_url == "postgresql://app:pw1234@db/prod" and s.opensearch_pass == "hunter22"
    env = {"REACTOR_ENV": "prod", "AWS_REGION": "eu-west-1", "DATABASE_URL": "postgresql://mine@h/db"}
    assert config.load(env).database_url == "postgresql://mine@h/db"


@mock_aws
def test_missing_secret_is_a_clear_error():
    with pytest.raises(config.ConfigError, match=r"cannot read AWS secret 'nope'.*REACTOR_ENV=local"):
        config.load({"REACTOR_ENV": "prod", "REACTOR_SECRET_NAME": "nope", "AWS_REGION": "eu-west-1"})


def test_json_logs_mask_secrets():
    stream = io.StringIO()
    logs.setup("INFO", stream)
    logs.register_secret("hunter22")
    log = logging.getLogger("t")
    logs.event(log, "connect", url="postgresql://app:pw1234@db/prod", password="x", note="hunter22 inside")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == "connect" and line["level"] == "info" and "ts" in line
    assert line["url"] == "postgresql://app:***@db/prod"
    assert line["password"] == "***" and line["note"] == "*** inside"


def test_redact_conninfo_password():
    assert logs.redact("host=db password=abc123 user=x") == "host=db password=*** user=x"


def test_job_config_keeps_the_last_valid_value_of_an_invalid_key():
    """What is valid is decided in SQL (tests/integration/test_job_config.py); NULL means invalid."""
    cfg = JobConfig(batch_size=25, max_attempts=7)
    after = cfg.updated((False, None, None, 12, ['batch_size must be an integer from 1 to 10000, not "x"']))
    assert (after.run_next_job, after.batch_size, after.max_attempts, after.jobs_retention_days) == (False, 25, 7, 12)
    assert after.problems
    assert cfg.updated(None).problems and cfg.updated(None).batch_size == JobConfig().batch_size


def test_job_config_changes_name_each_change():
    old, new = JobConfig(), JobConfig(run_next_job=False, batch_size=50)
    assert [e for e, _ in old.changes(new)] == ["control.paused", "control.batch_size"]
    assert old.changes(old) == []


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql+psycopg2://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql://u@h/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("POSTGRESQL+PSYCOPG2://u@h/db", "postgresql://u@h/db"),
        (" postgresql://u@h/db ", "postgresql://u@h/db"),
        ("host=h dbname=db", "host=h dbname=db"),
    ],
)
def test_sqlalchemy_urls_lose_their_driver_suffix(given, expected):
    assert config.normalize_database_url(given) == expected
    assert config.load({"DATABASE_URL": given}).database_url == expected


def test_database_url_password_is_registered_in_every_form():
    config.load({"DATABASE_URL": "postgresql+psycopg2://app:p%40ss-w0rd@db/prod"})
    assert logs.redact("seen p@ss-w0rd and p%40ss-w0rd") == "seen *** and ***"
    config.load({"DATABASE_URL": "host=db password='conn info pw' user=x"})
    assert "conn info pw" not in logs.redact("libpq said: conn info pw")
    assert logs.redact("postgresql://:pw-without-user@h/db") == "postgresql://:***@h/db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REACTOR_LOG_LEVEL": "loud"}, "REACTOR_LOG_LEVEL='loud' is not one of debug, info"),
        ({"REACTOR_MAX_TEXT_BYTES": "2MB"}, "REACTOR_MAX_TEXT_BYTES='2MB' is not a number of bytes"),
        ({"REACTOR_MAX_TEXT_BYTES": "-1"}, "REACTOR_MAX_TEXT_BYTES='-1'"),
        ({"REACTOR_RETRY_BASE_S": "-2"}, "REACTOR_RETRY_BASE_S='-2' is not a number of seconds"),
        ({"REACTOR_RETRY_BASE_S": "inf"}, "REACTOR_RETRY_BASE_S='inf'"),
        ({"REACTOR_PRECISION": "fp64"}, "REACTOR_PRECISION='fp64' is not one of fp32"),
        ({"REACTOR_DEVICE": "gpu"}, "REACTOR_DEVICE='gpu' is not one of auto, cpu, cuda"),
    ],
)
def test_bad_environment_values_are_refused_by_the_loader(env, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(env)
    assert str(err.value).startswith(message)


def test_environment_values_are_parsed_into_settings():
    s = config.load(
        {
            "REACTOR_LOG_LEVEL": "debug",
            "REACTOR_MAX_TEXT_BYTES": "1024",
            "REACTOR_RETRY_BASE_S": "0.25",
            "REACTOR_PRECISION": "INT8",
        }
    )
    assert (s.log_level, s.max_text_bytes, s.retry_base_s, s.precision) == ("DEBUG", 1024, 0.25, "int8")
    defaults = config.load({})
    assert defaults.log_level == "INFO" and defaults.retry_base_s is None and defaults.max_text_bytes > 0


def _last_line(stream: io.StringIO) -> dict:
    lines = stream.getvalue().splitlines()
    assert all(json.loads(line) for line in lines)
    return json.loads(lines[-1])


def test_a_library_traceback_is_folded_into_one_error_field():
    stream = io.StringIO()
    logs.setup("INFO", stream)
    try:
        raise ConnectionError("Cannot connect to host search:9200\n  second line of detail")
    except ConnectionError as exc:
        logging.getLogger("opensearch").warning("HEAD http://search:9200/ [status:N/A]", exc_info=exc)
    line = _last_line(stream)
    assert line["error"] == "ConnectionError: Cannot connect to host search:9200 second line of detail"
    assert "exception" not in line and "\n" not in stream.getvalue().rstrip("\n")


def test_a_reactor_bug_keeps_its_traceback_in_one_json_line():
    stream = io.StringIO()
    logs.setup("INFO", stream)
    try:
        raise ValueError("a bug")
    except ValueError:
        logging.getLogger("reactor.worker").exception("reactor.unexpected_error")
    line = _last_line(stream)
    assert "Traceback" in line["exception"] and "ValueError: a bug" in line["exception"]


def test_python_warnings_become_json_lines():
    """In a fresh interpreter: pytest records warnings itself, which would hide what the setup does."""
    import subprocess
    import sys

    code = "from reactor import logs; logs.setup(); import warnings; warnings.warn('a library is deprecated')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = json.loads(out.stderr)
    assert line["logger"] == "py.warnings" and "a library is deprecated" in line["event"]
