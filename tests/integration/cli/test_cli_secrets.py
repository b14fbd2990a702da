"""Issue 14, points 1 and 2: no command prints a DATABASE_URL password, and the original worker's
SQLAlchemy-style URLs (`postgresql+psycopg2://`, `postgresql+psycopg://`, `postgres://`) work everywhere."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.support.cli import assert_clean_error, invoke
from tests.support.db import insert, scalar
from tests.support.processes import reactor_env, run_cli

COMMANDS = [
    ("sql",),
    ("sql", "--uninstall", "--yes"),
    ("listen", "--models", "stand-in"),
    ("stop",),
    ("resume",),
    ("status",),
    ("status", "--json"),
    ("retry-failed",),
    ("reprocess", "--all"),
    ("reprocess", "--models", "stand-in"),
    ("failed",),
    ("show", "1"),
    ("prune",),
    ("db", "url"),
]
# (DATABASE_URL, the password in it): unreachable, in each form an operator may have in the old `.env`
URLS = [
    ("postgresql+psycopg2://postgres:Pw-sqlalchemy-1@127.0.0.1:1/db", "Pw-sqlalchemy-1"),
    ("postgresql+psycopg://postgres:Pw-psycopg3-22@127.0.0.1:1/db", "Pw-psycopg3-22"),
    ("postgres://postgres:Pw-heroku-333@127.0.0.1:1/db", "Pw-heroku-333"),
    ("mysql://root:Pw-wrong-scheme-4@127.0.0.1:1/db", "Pw-wrong-scheme-4"),  # refused: quoted whole by libpq
    ("postgresql://postgres:Pw%40encoded-5@127.0.0.1:1/db", "Pw@encoded-5"),
    ("host=127.0.0.1 port=1 user=postgres password=Pw-conninfo-6 dbname=db", "Pw-conninfo-6"),
]


@pytest.mark.parametrize(("url", "password"), URLS, ids=[u.split(":")[0] for u, _ in URLS])
def test_no_command_prints_the_password(url: str, password: str) -> None:
    for args in COMMANDS:
        result = invoke(url, *args)
        out = result.output
        assert password not in out and password.replace("@", "%40") not in out, (args, out)
        assert "Traceback" not in out, (args, out)
        if args[0] == "status":  # the old job_status.py contract: no connection is 0
            assert result.exit_code == 0, (args, out)
            assert "no connection" in out or '"connected": false' in out, (args, out)
        elif args[0] == "db":  # prints the URL (masked), or says why it is not one
            assert "***" in out, (args, out)
        elif "not a valid PostgreSQL URL" in out:  # written wrong: exit 2, like a bad option
            assert_clean_error(result, code=2)
        else:
            assert_clean_error(result)
            assert "cannot connect to PostgreSQL" in out, (args, out)


def test_password_is_masked_in_a_subprocess_too() -> None:
    """What the issue reported, as a user runs it: the console entry point, stderr and stdout."""
    env = reactor_env("postgresql+psycopg2://postgres:Pw-subprocess-7@127.0.0.1:1/db")
    for args in (("stop",), ("listen", "--models", "stand-in")):
        out = run_cli("", *args, env=env)
        assert out.returncode == 1
        assert "Pw-subprocess-7" not in out.stdout + out.stderr and "Traceback" not in out.stderr
        assert "postgresql://postgres:***@127.0.0.1:1/db" in out.stderr, out.stderr


def _as_url(conninfo: str, scheme: str) -> str:
    """The test database as a URL in `scheme` (the embedded server listens on a Unix socket)."""
    p = conninfo_to_dict(conninfo)
    host = str(p.get("host", "")).replace("/", "%2F")
    return f"{scheme}://{p.get('user', 'postgres')}@/{p['dbname']}?host={host}&port={p.get('port', 5432)}"


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "postgresql+psycopg", "postgres"])
def test_sqlalchemy_urls_work_for_every_command(pg_url: str, scheme: str) -> None:
    url = _as_url(pg_url, scheme)
    assert invoke(url, "stop").exit_code == 0
    assert scalar(pg_url, "SELECT config->>'run_next_job' FROM job_configs") == "false"
    assert invoke(url, "resume").exit_code == 0
    status = invoke(url, "status")
    assert status.exit_code == 0 and "state: running" in status.output, status.output
    assert invoke(url, "sql").exit_code == 0
    assert invoke(url, "retry-failed").exit_code == 0
    assert invoke(url, "failed").exit_code == 0
    assert invoke(url, "prune", "--dry-run").exit_code == 0


def test_listen_accepts_a_sqlalchemy_url(pg_url: str) -> None:
    (fid,) = insert(pg_url, ["the old worker's .env works unchanged"])
    env = reactor_env(_as_url(pg_url, "postgresql+psycopg2"))
    out = run_cli("", "listen", "--exit-when-idle", env=env)
    assert out.returncode == 0, out.stderr
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1 FROM reactor.feedback_analysis WHERE feedback_id = %s", [fid]).fetchone()
