"""The CLI as an operator uses it: install, status exit codes, stop/resume, errors without tracebacks."""

from __future__ import annotations

import psycopg

from tests.support.db import insert, scalar
from tests.support.processes import reactor_env, run_cli


def _install_state(url: str) -> tuple:
    """What a second `reactor sql` must not change: queued rows, trigger install time, config rows."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM reactor.queue), (SELECT max(installed_at) FROM reactor.installed), "
            "(SELECT count(*) FROM job_configs)"
        ).fetchone()


def test_sql_twice_is_a_noop_the_second_time(empty_db):
    first = run_cli(empty_db, "sql")
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001_initial.sql" in first.stdout
    before = _install_state(empty_db)
    second = run_cli(empty_db, "sql")
    assert second.returncode == 0
    assert "up to date" in second.stdout
    after = _install_state(empty_db)
    assert before == after


def test_install_attaches_to_existing_tables_and_backfills_once(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE feedbacks (id serial PRIMARY KEY, text text, product_name text, sender text, "
            "media_urls json, created_at timestamp DEFAULT now(), updated_at timestamp DEFAULT now())"
        )
        conn.execute("INSERT INTO feedbacks (text) SELECT 'old row ' || g FROM generate_series(1, 7) g")
    out = run_cli(empty_db, "sql")
    assert out.returncode == 0, out.stderr
    assert "enqueued 7 existing feedback rows" in out.stdout
    assert run_cli(empty_db, "sql").returncode == 0
    assert scalar(empty_db, "SELECT count(*) FROM reactor.queue") == 7
    # the user's own table is kept (json, not jsonb)
    assert (
        scalar(
            empty_db,
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'feedbacks' AND column_name = 'media_urls'",
        )
        == "json"
    )


def test_install_refuses_incompatible_existing_table(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id serial PRIMARY KEY, name text)")
    out = run_cli(empty_db, "sql")
    assert out.returncode == 1
    assert "jobs lacks" in out.stderr and "Traceback" not in out.stderr


def test_uninstall_keeps_user_data(pg_url):
    insert(pg_url, ["keep me"])
    out = run_cli(pg_url, "sql", "--uninstall", "--yes")
    assert out.returncode == 0, out.stderr
    assert scalar(pg_url, "SELECT count(*) FROM feedbacks") == 1
    assert scalar(pg_url, "SELECT to_regnamespace('reactor')") is None
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO feedbacks (text) VALUES ('after uninstall works')")


def test_status_exit_codes(pg_url):
    ok = run_cli(pg_url, "status")
    assert ok.returncode == 0, ok.stderr
    assert "state: running" in ok.stdout
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO jobs (job_name, status) VALUES ('feedback_analysis', 'processing')")
    assert run_cli(pg_url, "status").returncode == 1
    # query error: the reactor schema is missing
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA reactor CASCADE")
    broken = run_cli(pg_url, "status")
    assert broken.returncode == 2
    assert "status query failed" in broken.stderr
    # no connection at all: 0, as the original worker did
    env = reactor_env("postgresql://nobody@127.0.0.1:1/nowhere")
    assert run_cli("", "status", env=env).returncode == 0


def test_stop_resume_write_job_configs(pg_url):
    assert run_cli(pg_url, "stop").returncode == 0
    assert scalar(pg_url, "SELECT config->>'run_next_job' FROM job_configs WHERE key = 'feedback_analysis'") == "false"
    assert "state: paused" in run_cli(pg_url, "status").stdout
    assert run_cli(pg_url, "resume").returncode == 0
    assert scalar(pg_url, "SELECT config->>'run_next_job' FROM job_configs WHERE key = 'feedback_analysis'") == "true"


def test_wrong_database_url_gives_a_clear_error(pg_url):
    env = reactor_env("postgresql://someone:s3cretpw@127.0.0.1:1/nowhere")
    out = run_cli("", "listen", env=env)
    assert out.returncode == 1
    assert "cannot connect to PostgreSQL" in out.stderr
    assert "s3cretpw" not in out.stderr and "Traceback" not in out.stderr
    bad = run_cli("", "sql", env=reactor_env("not a url ==="))
    assert bad.returncode == 2 and "not a valid PostgreSQL URL" in bad.stderr and "Traceback" not in bad.stderr


def test_missing_model_folder_is_a_clear_error(pg_url, tmp_path):
    out = run_cli(pg_url, "listen", "--models", str(tmp_path / "nope"))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "nope" in out.stderr


def test_every_command_has_help(pg_url):
    for cmd in ["sql", "listen", "stop", "resume", "status", "retry-failed", "db"]:
        out = run_cli(pg_url, cmd, "--help")
        assert out.returncode == 0 and "Usage:" in out.stdout, cmd


def test_retry_failed_requeues_parked_rows_and_parked_search_documents(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at)"
            " VALUES (-1, 424242, 'upsert', 5, 'boom', now())"
        )
        conn.execute(
            "INSERT INTO reactor.outbox (index_kind, doc_id, action, attempts, last_error, parked_at) VALUES"
            " ('feedback', '424242', 'index', 3, 'mapper_parsing_exception', now()),"
            " ('word', 'fine', 'index', 0, NULL, NULL)"
        )
    status = run_cli(pg_url, "status")
    assert "outbox 1, 1 parked: reactor failed / reactor retry-failed --only outbox" in status.stdout, status.stdout
    out = run_cli(pg_url, "retry-failed", "--only", "outbox")
    assert out.returncode == 0, out.stderr
    assert "requeued 1 parked search documents" in out.stdout and "failed rows" not in out.stdout
    assert scalar(pg_url, "SELECT count(*) FROM reactor.outbox WHERE parked_at IS NOT NULL OR attempts > 0") == 0
    assert scalar(pg_url, "SELECT count(*) FROM reactor.failed WHERE feedback_id = 424242") == 1  # untouched
    out = run_cli(pg_url, "retry-failed")
    assert "requeued 1 failed rows" in out.stdout and "requeued 0 parked search documents" in out.stdout
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE feedback_id = 424242") == 1
