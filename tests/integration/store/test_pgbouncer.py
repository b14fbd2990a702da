"""Smoke tests of the PgBouncer fixture (transaction pooling): what works through it and what does not.

They pin down the two facts the reactor's deployment behind PgBouncer rests on (issue 11, point 4): plain
queries work only without server-side prepared statements, and LISTEN through the pooler does not receive
notifications, so the reactor needs a direct session connection (REACTOR_LISTEN_URL) for its wake-ups.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.plugins.pgbouncer import PgBouncer

QUERY = "SELECT count(*) FROM feedbacks WHERE id > %s"


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=10, **kwargs)  # type: ignore[arg-type]


def test_transaction_pooling_moves_a_client_between_server_connections(pg_url: str, pgbouncer_url: str) -> None:
    """Proves the fixture pools by transaction: while B holds A's server connection, A runs on another one."""
    with connect(pgbouncer_url, prepare_threshold=None) as a, connect(pgbouncer_url, prepare_threshold=None) as b:
        first = a.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        with b.transaction():
            assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == first  # type: ignore[index]  # LIFO reuse
            second = a.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        assert second != first
        a.execute("INSERT INTO feedbacks (text) VALUES ('through pgbouncer')")
    with connect(pg_url) as direct:
        assert direct.execute("SELECT text FROM feedbacks").fetchall() == [("through pgbouncer",)]


def _repeat_then_switch_server(pgbouncer_url: str, prepare_threshold: int | None) -> list[int]:
    """Run QUERY 10 times on A's server connection S1, then again from A while B holds S1 (A lands on S2)."""
    with (
        connect(pgbouncer_url, prepare_threshold=prepare_threshold) as a,
        connect(pgbouncer_url, prepare_threshold=None) as b,
    ):
        counts = [a.execute(QUERY, [i]).fetchone()[0] for i in range(10)]  # type: ignore[index]
        with b.transaction():
            b.execute("SELECT 1")  # B now holds S1
            counts.append(a.execute(QUERY, [0]).fetchone()[0])  # type: ignore[index]
    return counts


def test_prepared_statements_break_when_a_client_changes_server(pgbouncer_url: str) -> None:
    """psycopg's default (prepare after 5 executions) fails once the pooler hands A another server connection:
    the statement was prepared on S1 only. PgBouncer 1.18 cannot track protocol-level prepared statements."""
    with pytest.raises(errors.InvalidSqlStatementName, match="does not exist"):
        _repeat_then_switch_server(pgbouncer_url, prepare_threshold=5)


def test_queries_work_through_pgbouncer_without_prepared_statements(pgbouncer_url: str) -> None:
    assert _repeat_then_switch_server(pgbouncer_url, prepare_threshold=None) == [0] * 11


def test_listen_through_transaction_pooling_misses_notifications(pg_url: str, pgbouncer: PgBouncer) -> None:
    """LISTEN runs on whichever server connection the transaction got, and the client leaves it at COMMIT: a
    NOTIFY from another connection reaches that server connection, not the client. A direct (session)
    connection gets it. This is why the reactor takes REACTOR_LISTEN_URL for its LISTEN connection."""
    via_bouncer = pgbouncer.url(pg_url)
    with (
        connect(via_bouncer, prepare_threshold=None) as pooled,
        connect(pg_url) as direct,
        connect(pg_url) as sender,
    ):
        pooled.execute("LISTEN reactor_smoke")
        direct.execute("LISTEN reactor_smoke")
        sender.execute("NOTIFY reactor_smoke, 'ping'")
        got_direct = [n.payload for n in direct.notifies(timeout=5, stop_after=1)]
        got_pooled = [n.payload for n in pooled.notifies(timeout=1, stop_after=1)]
        pooled.execute("SELECT 1")  # a new transaction: still nothing is delivered to this client
        got_pooled += [n.payload for n in pooled.notifies(timeout=0.5, stop_after=1)]
    assert got_direct == ["ping"]
    assert got_pooled == []
