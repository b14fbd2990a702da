"""Settings, AWS Secrets Manager (moto: the one thing that cannot run here) and log redaction."""

from __future__ import annotations

import io
import json
import logging

import boto3
import pytest
from moto import mock_aws

from reactor import config, logs
from reactor.store import JobConfig


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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"batch_size": 25, "run_next_job": False}, (25, False)),
        ({"batch_size": "40", "run_next_job": "true"}, (40, True)),
        ({"batch_size": 0}, (1, True)),
        ({"batch_size": "lots"}, (10, True)),
        ({}, (10, True)),
        (None, (10, True)),
        ([1, 2], (10, True)),
    ],
)
def test_job_config_parse_is_forgiving_but_says_so(raw, expected):
    cfg = JobConfig.parse(raw)
    assert (cfg.batch_size, cfg.run_next_job) == expected
    if raw not in ({}, {"batch_size": 25, "run_next_job": False}, {"batch_size": "40", "run_next_job": "true"}):
        assert cfg.problems
