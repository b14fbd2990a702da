"""PgBouncer (Debian's `pgbouncer` package) in transaction pooling mode in front of the test PostgreSQL server.

Production deployments often reach PostgreSQL through PgBouncer with `pool_mode = transaction`: every
transaction may run on another server connection, so session state (LISTEN, prepared statements, SET) does not
follow the client. Tests that must hold up there use these fixtures; they skip, saying why, only when the
`pgbouncer` binary is not installed (`apt-get install pgbouncer`; `.ci/run` installs it).

Fixtures (imported by tests/conftest.py, so every test can ask for them):
  pgbouncer       session: one PgBouncer on 127.0.0.1:<free port>; `pgbouncer.url(db_url)` is `db_url`'s database
                  reached through it (any database of the test server: the config routes `*`).
  pgbouncer_url   function: `pg_url` (a fresh database with the reactor installed) through PgBouncer.

A reactor subprocess behind PgBouncer (queries through the pooler, LISTEN on a direct session connection):

    def test_reactor_behind_pgbouncer(pg_url, pgbouncer_url, start_reactor):
        reactor = start_reactor(url=pgbouncer_url, REACTOR_LISTEN_URL=pg_url)
        reactor.wait_for_log("reactor.started")
        ...  # insert through either URL; assert on pg_url

Clients must not use server-side prepared statements through it: PgBouncer 1.18 cannot route them in
transaction mode, and psycopg prepares a query after 5 executions unless `prepare_threshold=None`
(tests/integration/test_pgbouncer.py shows the failure).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def _run_as() -> str | None:
    """PgBouncer refuses to run as root: then it switches (`-u`) to the user the embedded server runs as."""
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither `embedded_postgres` nor `nobody` exists for PgBouncer")


class PgBouncer:
    """One PgBouncer process; `url(db_url)` routes to any database of the server behind it."""

    def __init__(self, server_url: str, base: Path, pool_mode: str = "transaction") -> None:
        self.server = conninfo_to_dict(server_url)
        self.base, self.pool_mode = base, pool_mode
        self.log_path = base / "pgbouncer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _config(self) -> str:
        # Route every database name to the same server; log in there as the server URL's user (auth_type any:
        # PgBouncer checks nothing itself, as the embedded server trusts local connections).
        target = " ".join(
            f"{key}={value}"
            for key, value in (
                ("host", self.server.get("host") or "/tmp"),
                ("port", self.server.get("port") or 5432),
                ("user", self.server.get("user") or "postgres"),
                ("password", self.server.get("password")),
            )
            if value
        )
        return (
            f"[databases]\n* = {target}\n\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = any\npool_mode = {self.pool_mode}\n"
            "max_client_conn = 500\ndefault_pool_size = 20\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.log_path}\npidfile = {self.base / 'pgbouncer.pid'}\n"
        )

    def start(self, binary: str, attempts: int = 3) -> None:
        """Start on a free port (another port when a racing process took it first); ready when it accepts."""
        from tests.support.private_postgres import free_port  # here: tests/conftest.py imports this module

        user = _run_as()
        for _ in range(attempts):
            self.port = free_port()
            ini = self.base / "pgbouncer.ini"
            ini.write_text(self._config())
            ini.chmod(0o600)
            if user:
                entry = pwd.getpwnam(user)
                for path in (self.base, ini):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            cmd = [binary, *(["-u", user] if user else []), str(ini)]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self._wait_ready(15):
                return
            self.stop()
        raise RuntimeError(f"pgbouncer did not start; its log:\n{self.log()[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
            time.sleep(0.05)
        return False

    def url(self, db_url: str) -> str:
        """`db_url`'s database through PgBouncer (TCP 127.0.0.1)."""
        dbname = conninfo_to_dict(db_url).get("dbname") or "postgres"
        return make_conninfo(
            "", host="127.0.0.1", port=str(self.port), dbname=dbname, user=self.server.get("user") or "postgres"
        )

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: immediate shutdown, clients are disconnected
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the test server (skips when not installed)."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    base = Path(tempfile.mkdtemp(prefix="reactor-pgb-"))
    bouncer = PgBouncer(pg_server, base)
    try:
        bouncer.start(binary)
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pgbouncer_url(pgbouncer: PgBouncer, pg_url: str) -> str:
    """A fresh database with the reactor installed (`pg_url`), reached through PgBouncer in transaction mode."""
    return pgbouncer.url(pg_url)
