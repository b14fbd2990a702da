"""Issue 14, points 7 and 9: `reactor status` keeps the original job_status.py exit contract (1 an incomplete
job exists, 0 none or no connection, 2 a query error) in every situation, and shows effective values."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import execute, invoke
from tests.support.db import store_config_bypassing_validation
from tests.support.processes import reactor_env, run_cli


def test_production_without_aws_credentials_is_no_connection() -> None:
    env = reactor_env(
        "",
        FLASK_ENV="production",
        REACTOR_ENV="",
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_REGION="eu-west-1",
    )
    env.pop("DATABASE_URL")
    out = run_cli("", "status", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no connection: cannot read AWS secret"), out.stderr
    as_json = run_cli("", "status", "--json", env=env)
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    assert doc["connected"] is False and "AWS secret" in doc["error"]


def test_json_when_the_database_is_unreachable() -> None:
    result = invoke("postgresql://nobody:Pw-status-json@127.0.0.1:1/nowhere", "status", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["connected"] is False and "cannot connect to PostgreSQL" in doc["error"]
    assert "Pw-status-json" not in result.output


def test_missing_schema_is_one_line_naming_reactor_sql_exit_2(pg_url: str) -> None:
    execute(pg_url, "DROP SCHEMA reactor CASCADE")
    result = invoke(pg_url, "status")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `reactor sql`" in lines[0], result.stderr
    doc = json.loads(invoke(pg_url, "status", "--json").stdout)
    assert doc["connected"] is True and "run `reactor sql`" in doc["error"]
    # the other commands say the same, in one line, with exit 1
    for args in (("failed",), ("show", "1"), ("retry-failed",)):
        out = invoke(pg_url, *args)
        assert out.exit_code == 1 and "run `reactor sql`" in out.output and "Traceback" not in out.output, args


def test_a_killed_reactors_job_is_not_incomplete_forever(pg_url: str) -> None:
    """A `processing` job whose batch lease expired (its reactor was killed) is counted as abandoned."""
    execute(
        pg_url,
        "INSERT INTO jobs (id, job_name, status) VALUES (900, 'feedback_analysis', 'processing')",
        "INSERT INTO reactor.job_runs (job_id, claim_token, worker_id, rows, lease_until)"
        " VALUES (900, 't', 'dead-reactor', 10, now() - interval '1 minute')",
    )
    result = invoke(pg_url, "status")
    assert result.exit_code == 0, result.output
    assert "incomplete jobs: 0 (1 abandoned by a reactor that stopped: counted as failed)" in result.stdout
    execute(pg_url, "UPDATE reactor.job_runs SET lease_until = now() + interval '1 minute' WHERE job_id = 900")
    live = invoke(pg_url, "status", "--json")
    assert live.exit_code == 1 and json.loads(live.stdout)["incomplete_jobs"] == 1


def test_effective_config_and_its_problems_as_warnings(pg_url: str) -> None:
    store_config_bypassing_validation(pg_url, '{"batch_size": "abc"}')
    result = invoke(pg_url, "status")
    assert result.exit_code == 0
    assert "state: running (batch_size 10, max_attempts 5" in result.stdout, result.stdout
    assert (
        "warning: job_configs 'feedback_analysis': batch_size must be an integer from 1 to 10000, not \"abc\""
        in result.stdout
    ), result.stdout
    assert "abc" not in result.stdout.splitlines()[0] and "None" not in result.stdout.splitlines()[0]
    doc = json.loads(invoke(pg_url, "status", "--json").stdout)
    assert doc["config"]["batch_size"] == 10 and doc["warnings"]


@pytest.mark.seeds_partial_state  # analyses of feedbacks that do not exist, to show stale counts
def test_topics_stale_rows_and_search_errors(pg_url: str) -> None:
    result = invoke(pg_url, "status")
    assert "topics: 0 active" in result.stdout and "warning: no active topics" in result.stdout
    execute(
        pg_url,
        "INSERT INTO topics (label) VALUES ('delivery'), ('price')",
        "INSERT INTO reactor.feedback_analysis (feedback_id, sentiment_model, zero_shot_model, topic_set,"
        " source_queue_id, analyzed_at) VALUES"
        " (1, 's-old', 'z-old', 'oldset', 1, now() - interval '2 days'),"
        " (2, 's-new', 'z-new', 'oldset', 2, now() - interval '1 day')",
        "INSERT INTO reactor.outbox (index_kind, doc_id, action, attempts, last_error, not_before) VALUES"
        " ('feedback', '1', 'index', 2, 'ConnectionError: search is down', now()),"
        " ('feedback', '2', 'index', 0, NULL, '-infinity')",
    )
    result = invoke(pg_url, "status")
    out = result.stdout
    assert "topics: 2 active" in out and "no active topics" not in out
    assert "stale: 2 analysed rows (topic set changed: 2, models changed: 1): reactor reprocess --stale" in out, out
    assert "search: outbox 2 (1 retrying, last error: ConnectionError: search is down)" in out, out
    doc = json.loads(invoke(pg_url, "status", "--json").stdout)
    assert doc["stale"] == {"rows": 2, "topics_changed": 2, "models_changed": 1}
    assert doc["outbox_last_error"] == "ConnectionError: search is down" and doc["active_topics"] == 2
